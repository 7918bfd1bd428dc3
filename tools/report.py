"""Summarise training runs as the paper's tables and a few plots.

    python -m tools.report result/                      # every run under result/, into ./report
    python -m tools.report demo/ result/cifar10 --out report_digits

A run is a directory holding args.json and metrics.jsonl (train.py's --out); the given paths are
searched recursively. Runs that differ only by --seed (and by arguments that do not change what is
learned: --out, --device, ...) form one group. A run is finished when its last evaluation is at
step ceil(total_steps / eval_step) * eval_step; averages use finished runs only and every row says
how many runs of its group are unfinished.

Writes into --out (default ./report):

- results.csv: one line per group: dataset, method, variant (the other settings, when they differ
  between groups of the same dataset and method), setting, gamma_l, gamma_u, img_size, the number
  of finished and unfinished runs, the mean of the last 20 evaluations (what the paper's tables
  report: the original's summary), best top-1 and final top-1 (the last evaluation), each as mean
  and sample standard deviation (ddof=1; empty with a single finished run) over the finished runs,
  whether the runs follow the paper's recipe (their method's launcher for their row, read by
  core/recipes.py: network, steps, batch, lr and method settings), and, for those that do, the
  paper's number (tools/paper_results.py) and our mean of the last 20 minus it;
- results.md: the paper's tables, one per dataset and gamma_l, methods as rows and the settings
  ("reversed (gamma_l=150, gamma_u=150)", ...) as columns; STL-10 and ImageNet-127 keep their own
  unlabeled distribution, named "natural"; the ImageNet columns name the image size, and ImageNet-127
  has a column per test set (Table 3: its balanced subset, and every val image, gamma_t~286, from the
  'imbalanced_test' numbers of metrics.jsonl; results.csv's test_set names the set, empty: the main one);
- top1_vs_step_<dataset>_<setting>.png, kl_vs_step_<...>.png and per_class_<...>.png: one figure per
  dataset and setting, one line (or set of bars) per method, the mean over the finished runs with
  the shaded min..max (runs of a group with no finished run are drawn dashed instead);
- prior_<dataset>_<method>_<setting>_seed<seed>.png: per run, the final estimate pi_u against the
  true unlabeled class distribution, derived from the run's arguments (CIFAR-10/100, digits; not
  known without the data for STL-10 and the ImageNet variants; a run whose logged KL disagrees
  with the derived prior, e.g. one with --allow-short-classes, is skipped and named).

The last line of stdout says what was written. A path without runs is a one-line error (exit 2).
"""
import utils.startup  # noqa: F401 (first: a Ctrl-C while the rest imports is one line)
import argparse
import csv
import hashlib
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

from utils.cli import unwritable, writable_config_dir

writable_config_dir('MPLCONFIGDIR', 'matplotlib')  # (else, with an unwritable HOME, matplotlib warns in 2 lines)
import matplotlib  # noqa: E402

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import methods  # noqa: E402
from core.command_line import get_args_parser as train_parser  # noqa: E402
from core.recipes import off_recipe, recipe  # noqa: E402
from core.settings import learned_settings  # noqa: E402
from dataset.data import DATASETS  # noqa: E402
from dataset.splits import UNLABELED_MODES, long_tail_counts, order_unlabeled, setting_name  # noqa: E402
from tools.paper_results import PAPER_TOP1, USB_TOP1  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.cli import OneLineParser  # noqa: E402

DATASET_ORDER = tuple(DATASETS)        # the paper's table order
METHOD_ORDER = tuple(methods.METHODS)  # the paper's row order, then newer methods
SETTING_ORDER = ('consistent', 'uniform', 'reversed', 'middle', 'head-tail', 'shuffled', 'natural')

# The arguments that make a column of the paper's tables, per dataset (the rest: the row's variant).
SETTING_KEYS = {'stl10': ('imb_ratio_label',), 'smallimagenet': ('img_size',),
                'smallimagenet_1k': ('imb_ratio_label', 'img_size')}
SPLIT_KEYS = ('imb_ratio_label', 'imb_ratio_unlabel', 'flag_reverse_LT')  # every other dataset
TEST_SET_LABELS = {'imbalanced_test': 'test: every val image, gamma_t~286'}  # (the main test set is unnamed)

FIGURE_SIZE, DPI = (8.0, 4.8), 100  # (the legend beside the axes)
PLOT_FILES = ('top1_vs_step_*.png', 'kl_vs_step_*.png', 'per_class_*.png', 'prior_*.png')  # what write_plots names
CSV_COLUMNS = ('dataset', 'method', 'variant', 'setting', 'gamma_l', 'gamma_u', 'img_size', 'test_set', 'n_finished',
               'n_unfinished', 'mean20_top1_mean', 'mean20_top1_std', 'best_top1_mean', 'best_top1_std',
               'final_top1_mean', 'final_top1_std', 'paper_recipe', 'paper_top1', 'paper_top1_std', 'diff_vs_paper',
               'usb_recipe', 'usb_top1', 'usb_top1_std', 'best_diff_vs_usb')

# ------------------------------------------------------------------ the paper's numbers (top-1 %)

def paper_key(dataset: str, setting: 'Setting') -> Optional[tuple]:
    """The key of tools.paper_results.PAPER_TOP1 for a setting of the paper's tables; None for a
    setting the paper has no column for."""
    if dataset in ('cifar10', 'cifar100'):
        expected_gu = 1 if setting.name == 'uniform' else setting.gamma_l
        return (dataset, setting.name, setting.gamma_l) if setting.gamma_u == expected_gu else None
    if dataset == 'stl10':
        return dataset, setting.gamma_l
    if dataset == 'smallimagenet' and setting.test:  # (Table 3's gamma_t ~ 286 block)
        return dataset, setting.img_size, setting.test
    if dataset == 'smallimagenet' or (dataset == 'smallimagenet_1k' and setting.gamma_l == 256):
        return dataset, setting.img_size
    return None


def paper_top1(args: dict, method: str, setting: 'Setting') -> Optional[tuple]:
    """(mean, std) the paper reports for this dataset, setting and method, for a run whose split is a
    row of the tables (its method's launcher has a row with its split, N1 and M1), however it was
    trained; None if it reports none. (`summarize` says whether the recipe was the paper's.)"""
    key = paper_key(args.get('dataset'), setting)
    if key is None or key not in PAPER_TOP1.get(method, {}):
        return None
    expected = recipe({**args, 'version': method}, train_parser())
    paper_row = expected is not None and expected.row is not None and not usb_protocol(expected)
    return PAPER_TOP1[method][key] if paper_row else None


def usb_protocol(expected) -> bool:
    """A launcher row of USB's protocol (sh/tables.sh: usb_row), known by its USB augmentation."""
    return expected.settings.get('randaugment') == 'usb'


def usb_key(args: dict) -> Optional[tuple]:
    """The key of tools.paper_results.USB_TOP1 for a run's split: (dataset, N1, gamma_l, M1, gamma_u),
    gamma_u negative for the reversed order and M1 None for STL-10, as USB's table writes them."""
    dataset = args.get('dataset')
    if dataset == 'stl10':
        return dataset, args.get('num_max'), args.get('imb_ratio_label'), None, 1.0
    if dataset not in ('cifar10', 'cifar100') or args.get('flag_reverse_LT') not in (0, 1):
        return None
    gamma_u = args.get('imb_ratio_unlabel') * (-1 if args.get('flag_reverse_LT') == 1 else 1)
    return dataset, args.get('num_max'), args.get('imb_ratio_label'), args.get('num_max_u'), gamma_u


def usb_top1(args: dict, method: str):
    """((mean, std) of USB's table for the run's split and method, or None; whether the run follows
    its launcher's USB protocol row: True, False, or None when USB reports nothing for it)."""
    reported = USB_TOP1.get(method, {}).get(usb_key(args))
    if reported is None:
        return None, None
    expected = recipe({**args, 'version': method}, train_parser())
    follows = (expected is not None and expected.row is not None and usb_protocol(expected)
               and off_recipe(args, expected) == [])
    return reported, follows


def not_reported(row: dict) -> bool:
    """A results.csv row whose setting is a column of the paper's tables in which its method has no
    number (CCL everywhere: it came after the paper)."""
    setting = SimpleNamespace(name=row['setting'], gamma_l=row['gamma_l'], gamma_u=row['gamma_u'],
                              img_size=row['img_size'], test=row['test_set'])
    key = paper_key(row['dataset'], setting)
    return key is not None and key not in PAPER_TOP1.get(row['method'], {})


# ------------------------------------------------------------------ runs and groups

@dataclass
class Run:
    path: Path
    args: dict
    records: list  # metrics.jsonl, one dict per evaluation, by step

    @property
    def final_step(self) -> int:
        eval_step = self.args['eval_step']
        return math.ceil(self.args['total_steps'] / eval_step) * eval_step

    @property
    def last_step(self) -> int:
        return self.records[-1]['step'] if self.records else 0

    @property
    def finished(self) -> bool:
        return bool(self.records) and self.last_step >= self.final_step


@dataclass(frozen=True)
class Setting:
    """A column of the paper's tables: how the unlabeled set is drawn."""
    name: str                       # consistent, uniform, reversed, middle, head-tail, shuffled, natural
    gamma_l: Optional[float] = None
    gamma_u: Optional[float] = None
    img_size: Optional[int] = None  # the ImageNet variants only
    test: Optional[str] = None      # a test set other than the main one (metrics.jsonl's key), e.g. ImageNet-127's

    @property
    def label(self) -> str:
        parts = [f'gamma_l={self.gamma_l:g}'] if self.gamma_l is not None else []
        parts += [f'gamma_u={self.gamma_u:g}'] if self.gamma_u is not None else []
        parts += [f'img_size={self.img_size}'] if self.img_size is not None else []
        parts += [TEST_SET_LABELS.get(self.test, self.test)] if self.test else []
        return f'{self.name} ({", ".join(parts)})' if parts else self.name

    @property
    def slug(self) -> str:
        parts = [self.name] + ([f'gl{self.gamma_l:g}'] if self.gamma_l is not None else [])
        parts += [f'gu{self.gamma_u:g}'] if self.gamma_u is not None else []
        parts += [f'{self.img_size}px'] if self.img_size is not None else []
        parts += [self.test] if self.test else []
        return '_'.join(parts)

    def order(self) -> tuple:
        name = SETTING_ORDER.index(self.name) if self.name in SETTING_ORDER else len(SETTING_ORDER)
        return (name, self.name, -(self.gamma_u or 0), self.test is None, self.img_size or 0)


def setting_of(args: dict) -> Setting:
    """STL-10 and ImageNet-127 keep their own unlabeled distribution ('natural'); ImageNet-1k's
    unlabeled part follows its labeled long tail; the rest follow --imb-ratio-unlabel and
    --flag-reverse-LT ('uniform': gamma_u 1 in mode 0)."""
    dataset, gamma_l = args.get('dataset'), args.get('imb_ratio_label')
    if dataset == 'stl10':
        return Setting('natural', gamma_l)
    if dataset == 'smallimagenet':
        return Setting('natural', img_size=args.get('img_size'))
    if dataset == 'smallimagenet_1k':
        return Setting('consistent', gamma_l, gamma_l, args.get('img_size'))
    mode, gamma_u = args.get('flag_reverse_LT', 0), args.get('imb_ratio_unlabel')
    name = setting_name(gamma_u, mode) if mode in UNLABELED_MODES else f'mode{mode}'
    return Setting(name, gamma_l, gamma_u)


@dataclass
class Group:
    """Runs that differ only by seed (and run-only arguments)."""
    args: dict  # the shared arguments (without the seed and the run-only ones)
    runs: list = field(default_factory=list)
    variant: str = ''  # the settings that tell this group from the other groups of its dataset and method

    @property
    def dataset(self) -> str:
        return self.args.get('dataset')

    @property
    def method(self) -> str:
        return self.args.get('version')

    @property
    def setting(self) -> Setting:
        return setting_of(self.args)

    @property
    def finished(self) -> list:
        return [r for r in self.runs if r.finished]

    @property
    def unfinished(self) -> list:
        return [r for r in self.runs if not r.finished]

    @property
    def row(self) -> str:
        return f'{self.method} ({self.variant})' if self.variant else self.method

    @property
    def columns(self) -> list:
        """Its settings, one per test set its runs logged: the main one, then each other (a key of
        metrics.jsonl holding a test set's numbers, e.g. ImageNet-127's 'imbalanced_test')."""
        others = dict.fromkeys(k for run in self.runs for r in run.records for k, v in r.items()
                               if isinstance(v, dict) and 'mean20_top1' in v)
        return [self.setting] + [replace(self.setting, test=name) for name in others]


def last_numbers(run: Run, test: Optional[str]) -> Optional[dict]:
    """The last evaluation of a test set (None: the main one) in a run: top1, best_top1, mean20_top1."""
    records = [r for r in run.records if test is None or test in r]
    return (records[-1] if test is None else records[-1][test]) if records else None


NUMBERS = ('total_steps', 'eval_step', 'imb_ratio_label', 'imb_ratio_unlabel', 'num_max', 'num_max_u', 'seed')


def read_run(path: Path) -> Run:
    """A run directory's arguments and evaluations; UserError (the run is skipped) when its args.json
    cannot be read or holds no run's arguments."""
    try:
        args = json.loads((path / 'args.json').read_text())
    except (OSError, ValueError) as e:
        raise UserError(f'cannot read {path / "args.json"} ({e})')
    if not isinstance(args, dict):
        raise UserError(f'{path / "args.json"} holds no arguments of a run')
    wrong = [k for k in NUMBERS if k in args and (isinstance(args[k], bool) or not isinstance(args[k], (int, float)))]
    if wrong or not isinstance(args.get('version'), str) or not isinstance(args.get('dataset'), str):
        what = f'{wrong[0]} = {args[wrong[0]]!r}' if wrong else 'no version or dataset'
        raise UserError(f'{path / "args.json"} holds {what}, not what train.py writes')
    records = {}
    for number, line in enumerate((path / 'metrics.jsonl').read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[record['step']] = record  # a redone evaluation replaces the earlier one
        except (ValueError, KeyError, TypeError):  # e.g. a line being written right now
            print(f'warning: skipping line {number} of {path / "metrics.jsonl"}: not an evaluation', file=sys.stderr)
    return Run(path, args, [records[s] for s in sorted(records)])


def find_runs(paths) -> list:
    """Every run directory (args.json + metrics.jsonl) under the paths, each once; a run that cannot
    be read is skipped with a warning naming it."""
    runs, seen = [], set()
    for root in map(Path, paths):
        if not root.exists():
            raise UserError(f'{root} does not exist')
        found = sorted(p.parent for p in root.rglob('args.json') if (p.parent / 'metrics.jsonl').is_file()) \
            if root.is_dir() else []
        if not found:
            raise UserError(f'no runs (args.json + metrics.jsonl) under {root}')
        for directory in found:
            if directory.resolve() not in seen:
                seen.add(directory.resolve())
                try:
                    runs.append(read_run(directory))
                except UserError as e:
                    print(f'warning: skipping the run in {directory}: {e}', file=sys.stderr)
    if not runs:
        raise UserError(f'no readable runs under {", ".join(map(str, paths))}')
    return runs


def _sort_key(group: Group) -> tuple:
    dataset = DATASET_ORDER.index(group.dataset) if group.dataset in DATASET_ORDER else len(DATASET_ORDER)
    method = METHOD_ORDER.index(group.method) if group.method in METHOD_ORDER else len(METHOD_ORDER)
    setting = group.setting
    return (dataset, str(group.dataset), -(setting.gamma_l or 0), method, str(group.method), group.variant,
            setting.order())


def _value(value) -> str:
    return f'{value:g}' if isinstance(value, float) else str(value)


def group_runs(runs) -> list:
    """Groups of runs equal in every argument but the seed and the run-only ones, sorted like
    the paper (dataset, gamma_l, method, setting); each with its variant label."""
    groups = {}
    for run in runs:
        shared = {k: v for k, v in learned_settings(run.args).items() if k != 'seed'}
        key = json.dumps(shared, sort_keys=True)
        groups.setdefault(key, Group(shared)).runs.append(run)
    groups = list(groups.values())
    for group in groups:
        group.runs.sort(key=lambda r: (r.args.get('seed', 0), not r.finished, str(r.path)))
        by_seed = {}
        for r in group.runs:
            by_seed.setdefault(r.args.get('seed'), []).append(r)
        for seed, same in by_seed.items():
            if len(same) > 1:
                print(f'warning: {group.method} on {group.dataset} {group.setting.label}: seed {seed} in '
                      f'{len(same)} folders ({", ".join(str(r.path) for r in same)}); counted once, from '
                      f'{same[0].path}', file=sys.stderr)
        group.runs = [same[0] for same in by_seed.values()]  # (a finished one first)
    for dataset, method in {(g.dataset, g.method) for g in groups}:
        same = [g for g in groups if (g.dataset, g.method) == (dataset, method)]
        fixed = set(SETTING_KEYS.get(dataset, SPLIT_KEYS)) | {'dataset', 'version'}
        keys = sorted({k for g in same for k in g.args} - fixed)
        differing = [k for k in keys if len({json.dumps(g.args.get(k)) for g in same}) > 1]
        for g in same:
            g.variant = ', '.join(f'{k}={_value(g.args.get(k))}' for k in differing)
    return sorted(groups, key=_sort_key)


# ------------------------------------------------------------------ numbers

def mean_std(values) -> tuple:
    """(mean, sample std with ddof=1); the std is None with one value, both None with none."""
    if not values:
        return None, None
    values = [float(v) for v in values]
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarize(group: Group, setting: Optional[Setting] = None) -> dict:
    """One line of results.csv: the group's numbers over its finished runs on the test set of
    `setting` (one of group.columns; default: the main test set)."""
    setting, finished = setting or group.setting, group.finished
    row = {'dataset': group.dataset, 'method': group.method, 'variant': group.variant, 'setting': setting.name,
           'gamma_l': setting.gamma_l, 'gamma_u': setting.gamma_u, 'img_size': group.args.get('img_size'),
           'test_set': setting.test, 'n_finished': len(finished), 'n_unfinished': len(group.unfinished)}
    numbers = [n for n in (last_numbers(r, setting.test) for r in finished) if n is not None]
    for name in ('final_top1', 'best_top1', 'mean20_top1'):
        metric = 'top1' if name == 'final_top1' else name
        row[f'{name}_mean'], row[f'{name}_std'] = mean_std([n[metric] for n in numbers])
    # the paper's number only beside a run of the paper's recipe; its tables report the mean of
    # the last 20 evaluations (the original's summary), so that is what is compared
    paper = paper_top1(group.args, group.method, setting)
    row['paper_recipe'] = off_recipe(group.args, recipe(group.args, train_parser())) == [] if paper else None
    row['paper_top1'], row['paper_top1_std'] = paper if paper and row['paper_recipe'] else (None, None)
    row['diff_vs_paper'] = (row['mean20_top1_mean'] - row['paper_top1']
                            if row['paper_top1'] is not None and row['mean20_top1_mean'] is not None else None)
    # USB's table reports the best evaluation over training: compared with our best, beside a run of
    # USB's protocol row (its main test set only)
    usb, row['usb_recipe'] = usb_top1(group.args, group.method) if setting.test is None else (None, None)
    row['usb_top1'], row['usb_top1_std'] = usb if usb and row['usb_recipe'] else (None, None)
    row['best_diff_vs_usb'] = (row['best_top1_mean'] - row['usb_top1']
                               if row['usb_top1'] is not None and row['best_top1_mean'] is not None else None)
    return row


def true_unlabeled_prior(args: dict) -> Optional[np.ndarray]:
    """The class distribution of the unlabeled images, from the arguments alone (the split's
    counts); None where it depends on the data (STL-10, the ImageNet variants)."""
    dataset = DATASETS.get(args.get('dataset'))
    if dataset is None or not dataset.prior_from_arguments:
        return None
    num_classes = dataset.num_classes
    try:
        counts = long_tail_counts(args['num_max_u'], num_classes, args['imb_ratio_unlabel'])
        counts = np.asarray(order_unlabeled(counts, args['flag_reverse_LT'], args.get('seed', 0)), dtype=np.float64)
    except (UserError, KeyError):
        return None
    return counts / counts.sum()


def symmetric_kl(p, q) -> float:
    """methods.symmetric_kl (the one train.py logs) on lists or arrays."""
    return methods.symmetric_kl(torch.as_tensor(np.asarray(p, dtype=np.float64)),
                                torch.as_tensor(np.asarray(q, dtype=np.float64)))


# ------------------------------------------------------------------ tables

def _csv_value(value):
    if value is None:
        return ''
    return round(value, 4) if isinstance(value, float) else value


def write_csv(rows, path: Path) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row[k]) for k in CSV_COLUMNS})


def _signed(value: float) -> str:
    return f'{round(value, 1) + 0.0:+.1f}'  # + 0.0: no "-0.0"


def cell(row: dict, metric: str, with_paper: bool, with_usb: bool = False) -> str:
    """'83.5 ± 0.95 (n=3) [paper 83.5, +0.0]' (or with_usb: '[USB 85.3, -1.2]'), '[off-recipe]' where
    the paper (USB) has a number but the run's recipe is not the paper's (USB's protocol row), and
    '; incomplete: 2 of 3 seeds finished' when runs are unfinished. One finished run: no ±."""
    mean, std, n, unfinished = row[f'{metric}_mean'], row[f'{metric}_std'], row['n_finished'], row['n_unfinished']
    text = 'no finished run' if mean is None else f'{mean:.1f}{f" ± {std:.2f}" if std is not None else ""} (n={n})'
    if with_usb and row['usb_top1'] is not None:
        diff = f', {_signed(row["best_diff_vs_usb"])}' if row['best_diff_vs_usb'] is not None else ''
        text += f' [USB {row["usb_top1"]:.1f}{diff}]'
    elif with_usb and row['usb_recipe'] is False:
        text += ' [off-recipe]'
    if with_paper and row['paper_top1'] is not None:
        diff = f', {_signed(row["diff_vs_paper"])}' if row['diff_vs_paper'] is not None else ''
        text += f' [paper {row["paper_top1"]:.1f}{diff}]'
    elif with_paper and row['paper_recipe'] is False:
        text += ' [off-recipe]'
    elif with_paper and not_reported(row):
        text += ' [paper: not reported]'
    if unfinished:
        text += f'; incomplete: {n} of {n + unfinished} seeds finished'
    return text


def _table_title(dataset: str, gamma_l) -> str:
    return dataset if gamma_l is None else f'{dataset}, gamma_l = {gamma_l:g}'


def write_markdown(groups, entries, path: Path) -> None:
    """One section per dataset and gamma_l: the mean of the last 20 evaluations against the paper,
    best top-1, final top-1; methods as rows, settings as columns. Then the unfinished runs."""
    lines = ['# Results', '',
             'Top-1 accuracy (%) on the test set: mean ± sample standard deviation (ddof=1) over the finished '
             'seeds, their number in brackets (no ± with a single seed). The paper\'s tables report the mean '
             'of the last 20 evaluations; [paper X, +d]: the paper\'s mean and ours minus it, shown for runs '
             'of the paper\'s recipe only ([off-recipe]: the paper has a number for this split and method, '
             'but the run was trained otherwise). USB\'s table (microsoft/Semi-supervised-learning '
             'results/classic_cv_imb.csv; for CPE its released runs, machengcheng2016/CPE-LTSSL saved_models/) '
             'reports the best evaluation over training: [USB X, +d] beside our best top-1, for runs of a '
             'launcher\'s USB protocol row. "final" is the last evaluation. Unfinished runs '
             'are not averaged; a cell with some says "incomplete: k of n seeds finished".', '']
    tables = {}  # (`entries`: (group, setting, row) for each column of each group)
    for group, setting, row in entries:
        tables.setdefault((group.dataset, setting.gamma_l), []).append((group, setting, row))
    sections = (("mean top-1 of the last 20 evaluations (the SimPro paper's convention), against the paper",
                 'mean20_top1', True, False),
                ("best top-1 over training (USB's convention), against USB's table", 'best_top1', False, True),
                ('final top-1', 'final_top1', False, False))
    for (dataset, gamma_l), members in tables.items():
        columns = sorted({s for _, s, _ in members}, key=Setting.order)
        methods = list(dict.fromkeys(g.row for g, _, _ in members))
        cells = {(g.row, s): r for g, s, r in members}
        lines += [f'## {_table_title(dataset, gamma_l)}', '']
        for title, metric, with_paper, with_usb in sections:
            lines += [f'### {title}', '', '| method | ' + ' | '.join(s.label for s in columns) + ' |',
                      '|---' * (len(columns) + 1) + '|']
            for method in methods:
                values = [cell(cells[method, s], metric, with_paper, with_usb) if (method, s) in cells else ''
                          for s in columns]
                lines.append(f'| {method} | ' + ' | '.join(values) + ' |')
            lines.append('')
    unfinished = [(g, r) for g in groups for r in g.unfinished]
    if unfinished:
        lines += ['## Unfinished runs (not averaged)', '']
        lines += [f'- {g.row}, {g.dataset} {g.setting.label}, seed {r.args.get("seed")}: step {r.last_step} of '
                  f'{r.final_step} (`{r.path}`)' for g, r in unfinished]
        lines.append('')
    path.write_text('\n'.join(lines))


# ------------------------------------------------------------------ plots

def safe_name(text: str, limit: int = 150) -> str:
    """Letters, digits, '.', '_' and '-' only; a long name is cut and given a short hash."""
    name = re.sub(r'[^A-Za-z0-9._-]+', '-', text).strip('-')
    if len(name) > limit:
        name = f'{name[:limit - 9]}_{hashlib.sha1(text.encode()).hexdigest()[:8]}'
    return name


def _plotted_runs(group: Group) -> tuple:
    """The finished runs, or the unfinished ones (drawn dashed) when none has finished."""
    return (group.finished, False) if group.finished else (group.unfinished, True)


def _new_figure():
    return plt.figure(figsize=FIGURE_SIZE, dpi=DPI)


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def _line_label(group: Group, runs, unfinished: bool) -> str:
    return f'{group.row}, {"unfinished, " if unfinished else ""}n={len(runs)}'


def plot_curves(groups, metric: str, ylabel: str, title: str, path: Path) -> Optional[Path]:
    """`metric` against step, one line per group (mean over its runs at the steps all of them
    reached, shaded min..max); None when no group has the metric."""
    figure, drawn = _new_figure(), False
    axes = figure.add_subplot()
    for group in groups:
        runs, unfinished = _plotted_runs(group)
        series = [{r['step']: r[metric] for r in run.records if r.get(metric) is not None} for run in runs]
        steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
        if not steps:
            continue
        values = np.array([[s[step] for step in steps] for s in series])
        line, = axes.plot(steps, values.mean(0), marker='o', markersize=3, linestyle='--' if unfinished else '-',
                          label=_line_label(group, runs, unfinished))
        if len(runs) > 1:
            axes.fill_between(steps, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
        drawn = True
    if not drawn:
        plt.close(figure)
        return None
    axes.set(xlabel='step', ylabel=ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    _legend(axes)
    return _save(figure, path)


def plot_per_class(groups, title: str, path: Path) -> Optional[Path]:
    """Final per-class accuracy (mean over the runs), bars per method (lines beyond 20 classes)."""
    curves = []
    for group in groups:
        runs, unfinished = _plotted_runs(group)
        accs = [run.records[-1].get('per_class_acc') for run in runs if run.records]
        if accs and all(a is not None and len(a) == len(accs[0]) for a in accs):
            curves.append((_line_label(group, accs, unfinished), np.mean(accs, axis=0)))
    if not curves:
        return None
    figure = _new_figure()
    axes = figure.add_subplot()
    num_classes = max(len(acc) for _, acc in curves)
    width = 0.8 / len(curves)
    for i, (label, acc) in enumerate(curves):
        classes = np.arange(len(acc))
        if num_classes <= 20:
            axes.bar(classes + (i - (len(curves) - 1) / 2) * width, acc, width, label=label)
        else:
            axes.plot(classes, acc, marker='.', markersize=3, linewidth=1, label=label)
    if num_classes <= 20:
        axes.set_xticks(np.arange(num_classes))
    axes.set(xlabel='class (0: most labeled images)', ylabel='final top-1 accuracy (%)', ylim=(0, 105))
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3, axis='y')
    _legend(axes)
    return _save(figure, path)


def plot_prior(run: Run, truth: Optional[np.ndarray], path: Path) -> Path:
    """The final pi_u next to the true unlabeled prior, as bars; log scale when the truth spans
    more than a factor of 10; the symmetric KL in the title. Without the truth (it needs the data:
    STL-10, the ImageNet variants), the estimate alone and the KL the run logged."""
    final = run.records[-1]
    estimate = np.asarray(final['pi_u'], dtype=np.float64)
    estimate = estimate / estimate.sum()
    figure = _new_figure()
    axes = figure.add_subplot()
    classes = np.arange(len(estimate))
    if truth is not None:
        axes.bar(classes - 0.2, truth, 0.4, label='true unlabeled prior', color='tab:gray')
    axes.bar(classes + (0.2 if truth is not None else 0), estimate, 0.4 if truth is not None else 0.8,
             label=f'estimate pi_u (step {final["step"]})', color='tab:blue')
    spread = truth if truth is not None else estimate
    if spread.max() / max(spread.min(), 1e-12) > 10:
        axes.set_yscale('log')
    if len(classes) <= 20:
        axes.set_xticks(classes)
    axes.set(xlabel='class (0: most labeled images)', ylabel='probability')
    args = run.args
    kl = symmetric_kl(estimate, truth) if truth is not None else final.get('kl_pi_u')
    kl_text = (f'symmetric KL(pi_u, true prior) = {kl:.4f}' + (' (logged; the true prior needs the data)'
                                                                if truth is None else '')) if kl is not None else \
        'the true prior is not known without the data'
    axes.set_title(f'{args.get("version")} on {args.get("dataset")} {setting_of(args).label}, seed {args.get("seed")}'
                   f'\n{kl_text}', fontsize=10)
    _legend(axes)
    return _save(figure, path)


def _legend(axes) -> None:
    """The legend beside the axes, where it covers no data."""
    axes.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _unique(name: str, used: set, folder: Path) -> str:
    """`name`, or with the run's folder when another plot has that name."""
    stem, k = name, 2
    if name in used:
        name = stem = safe_name(f'{name}_{folder.name}')
    while name in used:
        name, k = f'{stem}_{k}', k + 1
    used.add(name)
    return name


def write_plots(groups, out: Path) -> tuple:
    """Every figure; returns (paths written, notes on what was skipped)."""
    written, notes, used = [], [], set()
    figures = {}
    for group in groups:
        figures.setdefault((group.dataset, group.setting), []).append(group)
    for (dataset, setting), members in figures.items():
        slug = safe_name(f'{dataset}_{setting.slug}')
        where = f'{dataset} {setting.label}'
        written.append(plot_curves(members, 'top1', 'top-1 accuracy (%)',
                                   f'{where}\ntest top-1 (mean over seeds, shaded min..max)',
                                   out / f'top1_vs_step_{slug}.png'))
        written.append(plot_curves(members, 'kl_pi_u', 'symmetric KL(pi_u, true prior)',
                                   f'{where}\nsymmetric KL of the unlabeled-prior estimate to the truth',
                                   out / f'kl_vs_step_{slug}.png'))
        written.append(plot_per_class(members, f'{where}\nfinal per-class top-1 (mean over seeds)',
                                      out / f'per_class_{slug}.png'))
    unknown, no_estimate, mismatched = set(), 0, []
    for group in groups:
        for run in group.runs:
            final = run.records[-1] if run.records else {}
            truth = true_unlabeled_prior(run.args)
            if final.get('pi_u') is None:
                no_estimate += 1
                continue
            if truth is not None and len(truth) != len(final['pi_u']):
                mismatched.append(str(run.path))
                continue
            if truth is None:
                unknown.add(group.dataset)
            logged = final.get('kl_pi_u')
            if truth is not None and logged is not None and abs(symmetric_kl(final['pi_u'], truth) - logged) > 1e-6:
                mismatched.append(str(run.path))  # e.g. --allow-short-classes took fewer images
                continue
            variant = f'_{group.variant}' if group.variant else ''
            name = safe_name(f'prior_{group.dataset}_{group.method}{variant}_{group.setting.slug}'
                             f'_seed{run.args.get("seed")}')
            written.append(plot_prior(run, truth, out / f'{_unique(name, used, run.path)}.png'))
    if unknown:
        notes.append(f'the prior plots of {", ".join(sorted(unknown))} show the estimate alone: the true unlabeled '
                     f'prior is not known without the data')
    if no_estimate:
        notes.append(f'no prior plots for {no_estimate} run(s) without an estimate pi_u (FixMatch, or no evaluation)')
    if mismatched:
        notes.append(f'no prior plots for {", ".join(mismatched)}: the prior derived from the arguments does not '
                     f'match the logged KL')
    return [p for p in written if p is not None], notes


# ------------------------------------------------------------------ command line

def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog='python -m tools.report', description=__doc__.split('\n')[0])
    p.add_argument('paths', nargs='+', help='run directories or folders holding them (searched recursively)')
    p.add_argument('--out', default='report', help='folder to write results.csv, results.md and the plots into '
                                                   '(created if missing; default: ./report)')
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        if why := unwritable('--out', args.out):  # (before the runs are read)
            raise UserError(why)
        runs = find_runs(args.paths)
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f'cannot write to --out {out} ({e.strerror})')
        groups = group_runs(runs)
        entries = [(g, s, summarize(g, s)) for g in groups for s in g.columns]
        write_csv([row for _, _, row in entries], out / 'results.csv')
        write_markdown(groups, entries, out / 'results.md')
        plots, notes = write_plots(groups, out)
        stale = [f for pattern in PLOT_FILES for f in out.glob(pattern) if f not in plots]
        for f in stale:  # (an earlier report's, of runs not in this one)
            f.unlink()
        if stale:
            notes.append(f'removed {len(stale)} plots of an earlier report in {out}/ that this one does not draw')
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    for note in notes:
        print(f'note: {note}')
    unfinished = sum(len(g.unfinished) for g in groups)
    print(f'wrote {out / "results.csv"}, {out / "results.md"} and {len(plots)} plots in {out}/ '
          f'({len(runs)} runs in {len(groups)} groups, {unfinished} unfinished)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
