"""The paper's training recipes, read from the launchers in sh/, their one source.

`bash sh/<method>.sh <dataset> <row>` runs train.py with the row's split and the method's recipe;
with PRINT_ARGS=1 it prints those arguments instead (sh/tables.sh, run_train). A run follows its
recipe when every setting that changes what is learned equals the launcher's for the run's row:
only such runs are compared with the paper's numbers (tools.report), and a run off its recipe
says so when it starts. A setting the launcher sets per row (DASO's T_dist) is compared on a
table row only; a split that is no row of the table is compared on what the dataset's rows of its
protocol share (the paper's, or USB's for a run with USB's augmentation; of these, the rows of the N1
and M1 that most of them have, when most do: the paper's beside CPG's rows).
"""
import functools
import subprocess
from collections import Counter
from pathlib import Path
from typing import NamedTuple, Optional

from core.settings import RUN_ONLY, learned_settings, resolved, unread_settings
from methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
SPLIT_KEYS = ('dataset', 'imb_ratio_label', 'imb_ratio_unlabel', 'flag_reverse_LT', 'img_size')  # a table's column
ROW_KEYS = SPLIT_KEYS + ('num_max', 'num_max_u')  # what tells a row from the others
NOT_RECIPE = RUN_ONLY | {'seed', 'version', 'aug', 'amp', 'allow_short_classes'}  # (how, not what, it learns)
_ROWS_SCRIPT = ('for i in $(seq 0 9999); do (source "$0" "$1" "$i") 2>/dev/null || break; '
                'printf "\\036\\n"; done')  # every row of the launcher $0 on dataset $1, each ended by \036


def launcher(version: str) -> Path:
    """The method's launcher: its `launcher` (relative to the repository) or sh/<version>.sh."""
    method = METHODS.get(version)
    return ROOT / (method.launcher if method is not None and method.launcher else f'sh/{version}.sh')


@functools.lru_cache(maxsize=None)
def launcher_rows(path: str, dataset: str) -> tuple:
    """train.py's arguments of every row of launcher `path` on `dataset`, as tuples of strings;
    () when the launcher is missing or has no recipe for the dataset."""
    if not Path(path).is_file():
        return ()
    try:
        result = subprocess.run(['bash', '-c', _ROWS_SCRIPT, path, dataset], capture_output=True, text=True,
                                env={'PATH': '/usr/bin:/bin', 'PRINT_ARGS': '1'}, cwd=ROOT, timeout=120)
    except (OSError, subprocess.TimeoutExpired):  # no bash (not a POSIX system)
        return ()
    return tuple(tuple(row.strip('\n').split('\n')) for row in result.stdout.split('\x1e')[:-1])


class Recipe(NamedTuple):
    settings: dict       # the learning settings of the recipe (a row's split excluded)
    where: str           # 'sh/SimPro.sh cifar10 2', or the launcher alone when no row has the split
    row: Optional[int]   # the index of the run's row; None when no row has its split


def recipe(settings: dict, parser) -> Optional[Recipe]:
    """The recipe of a run (train.py's arguments as a dict), read from its method's launcher and
    parsed by train.py's `parser`: its row's (of the rows with its split, the one it follows, else the
    first); None when the launcher has no recipe for the dataset."""
    dataset, path = settings.get('dataset'), launcher(settings.get('version'))
    rows = [resolved(vars(parser.parse_args(list(argv)))) for argv in launcher_rows(str(path), dataset)]
    if not rows:
        return None
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    run = learned_settings(resolved(settings))
    matching = [Recipe(recipe_settings(row), f'{name} {dataset} {index}', index) for index, row in enumerate(rows)
                if all(run.get(k) == v for k, v in learned_settings(row).items() if k in ROW_KEYS)]
    if matching:  # (rows of two protocols may share a split, USB's and the paper's: the one the run follows)
        return next((r for r in matching if off_recipe(settings, r) == []), matching[0])
    rows = [recipe_settings(row) for row in rows]  # no row has the split: what the rows of its protocol share
    rows = [row for row in rows if row.get('randaugment') == run.get('randaugment')] or rows
    sizes, most = Counter((row.get('num_max'), row.get('num_max_u')) for row in rows).most_common(1)[0]
    if most * 2 > len(rows):
        rows = [row for row in rows if (row.get('num_max'), row.get('num_max_u')) == sizes]
    shared = {k: v for k, v in rows[0].items() if all(row.get(k) == v for row in rows)}
    return Recipe(shared, str(name), None)


def recipe_settings(settings: dict) -> dict:
    """The settings of a run that a recipe fixes: the learned ones but the table's column (N1 and M1
    stay) and how it is computed (RUN_ONLY, --aug, --amp, ...)."""
    return {k: v for k, v in learned_settings(resolved(settings)).items() if k not in NOT_RECIPE | set(SPLIT_KEYS)}


def off_recipe(settings: dict, expected: Recipe) -> list:
    """The settings of a run that differ from its recipe, as '--flag value (recipe: value)'; []
    when it follows it. A setting the run never reads (core.settings.unread_settings) is not one."""
    run, unread = recipe_settings(settings), unread_settings(settings)  # (a setting the run never reads: not off)
    shown = lambda value: 'default' if value is None else value  # noqa: E731 (None: the network's own)
    return [f'--{k.replace("_", "-")} {shown(run.get(k))} (recipe: {shown(v)})' for k, v in expected.settings.items()
            if run.get(k) != v and k not in unread]
