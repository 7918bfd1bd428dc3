"""The CPU demo on real handwritten digits: SimPro against FixMatch on a mismatched setting
(unlabeled distribution reversed) and on the consistent one, then a small table.

    bash sh/demo.sh                        # seed 0, about 8 minutes on 2 CPU cores
    bash sh/demo.sh --seeds 0 1 2          # per-seed rows and the mean
    bash sh/demo.sh --seeds 0 1 2 --methods FixMatch CReST+ DASO ACR_d ACR SimPro
                                           # the README's table: 36 runs, about 66 minutes

Each run is a digits row of the launchers (sh/<method>.sh digits <row>), two at a time with one
thread each. Runs live in --out (default demo/); a finished run is not trained again (delete it
to start over).

The numbers are the same on every x86-64 CPU with AVX2 (every Intel Core since 2013, AMD since
2015): the CPU kernels would otherwise pick their instruction set per machine (oneDNN's
convolutions, MKL's matrix products, ATen's vector code), and with it the order of their
floating-point sums, so that the same run gives other numbers on an AVX-512 machine. The demo pins
all three to AVX2 (PINNED_CPU), which costs nothing measurable on an AVX-512 machine (README, "Quick start").
"""
import utils.startup  # noqa: F401 (first: a Ctrl-C while the rest imports is one line)
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ROWS = {'consistent': 0, 'uniform': 1, 'reversed': 2, 'middle': 3, 'head-tail': 4}  # digits rows of sh/tables.sh
STEP_LINE = re.compile(r'^step (\d+)/(\d+) ')
# the instruction set of ATen's vector code, of oneDNN (its convolutions) and of MKL's results
PINNED_CPU = {'ATEN_CPU_CAPABILITY': 'avx2', 'ONEDNN_MAX_CPU_ISA': 'AVX2', 'MKL_CBWR': 'AVX2'}


def run_environment(environment=None) -> dict:
    """The environment of a demo run: `environment` (default: this process's) with one CPU thread and
    the CPU kernels pinned to PINNED_CPU, whatever it said."""
    return {**(os.environ if environment is None else environment), 'OMP_NUM_THREADS': '1',
            'OMP_WAIT_POLICY': 'PASSIVE', **PINNED_CPU}


def run_dir(out: Path, seed: int, setting: str, method: str) -> Path:
    return out / f'seed{seed}' / setting / method


def launch(job, out: Path):
    seed, setting, method = job
    directory = run_dir(out, seed, setting, method)
    directory.parent.mkdir(parents=True, exist_ok=True)
    log = open(directory.with_suffix('.out'), 'w')
    command = ['bash', f'sh/{method}.sh', 'digits', str(ROWS[setting]), '--seed', str(seed),
               '--out', str(directory), '--resume', 'auto', '--no-progress']
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=run_environment()), log


def steps_done(output: Path) -> int:
    lines = [m for m in map(STEP_LINE.match, output.read_text().splitlines()) if m] if output.exists() else []
    return int(lines[-1].group(1)) if lines else 0


def launcher_steps(method: str, setting: str) -> int:
    """--total-steps of the method's launcher on the digits row of `setting` (its recipe's)."""
    from core.command_line import get_args_parser as train_parser
    from core.recipes import launcher, launcher_rows
    argv = launcher_rows(str(launcher(method)), 'digits')[ROWS[setting]]
    return train_parser().parse_args(list(argv)).total_steps


def run_all(jobs, out: Path, parallel: int) -> None:
    """Run the jobs `parallel` at a time under one progress bar."""
    total_steps = {job: launcher_steps(job[2], job[1]) for job in jobs}
    from tqdm import tqdm
    pending, running, done = list(jobs), {}, 0
    bar = tqdm(total=sum(total_steps.values()), unit='step', desc='training', file=sys.stdout,
               disable=not sys.stdout.isatty(), dynamic_ncols=True)
    started, before, shown, shown_at = time.time(), 0, 0, 0.0  # (before: the steps of runs finished earlier)
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            running[job] = launch(job, out)
        time.sleep(0.5)
        progress = done
        for job, (process, log) in list(running.items()):
            output = run_dir(out, *job).with_suffix('.out')
            if process.poll() is None:
                progress += steps_done(output)
                continue
            log.close()
            if process.returncode != 0:
                bar.close()
                tail = '\n'.join(output.read_text().splitlines()[-5:])
                sys.exit(f'error: the {job[2]} run on {job[1]} (seed {job[0]}) failed; see {output}:\n{tail}')
            del running[job]
            done += total_steps[job]
            before += 0 if steps_done(output) else total_steps[job]  # (finished before: it trained nothing now)
            progress += total_steps[job]
        bar.update(progress - bar.n)
        if not sys.stdout.isatty() and progress > max(shown, before) and time.time() - shown_at > 15:
            print(f'{progress}/{bar.total} steps, {time_left(progress - before, bar.total - progress, started)}',
                  flush=True)
            shown, shown_at = progress, time.time()
    bar.close()


def time_left(trained: int, steps_left: int, since: float) -> str:
    """'about 3 min left' at the rate of the steps `trained` since `since`."""
    seconds = steps_left * (time.time() - since) / trained
    return f'about {seconds / 60:.0f} min left' if seconds >= 90 else f'about {seconds:.0f} s left'


def final_record(out: Path, seed: int, setting: str, method: str) -> dict:
    lines = (run_dir(out, seed, setting, method) / 'metrics.jsonl').read_text().splitlines()
    return json.loads(lines[-1])


def uniform_guess_kl(directory: Path) -> float:
    """KL between the uniform starting guess and the run's true unlabeled prior."""
    from tools.report import symmetric_kl, true_unlabeled_prior
    truth = true_unlabeled_prior(json.loads((directory / 'args.json').read_text()))
    return symmetric_kl(np.full(len(truth), 1 / len(truth)), truth)


def table(out: Path, seeds, settings, methods) -> str:
    """Final top-1, tail-class accuracy (the third of classes with the fewest labels) and the KL of
    the estimated unlabeled prior to the truth (start: the uniform guess every run begins with)."""
    rows = [f"{'setting':<11} {'method':<9} {'seed':>5} {'top1':>6} {'tail':>6} {'KL start':>9} {'KL end':>7}"]
    for setting in settings:
        start = uniform_guess_kl(run_dir(out, seeds[0], setting, methods[0]))
        for method in methods:
            records = [final_record(out, seed, setting, method) for seed in seeds]
            cells = [(str(seed), r['top1'], r['group_acc']['few'], r['kl_pi_u']) for seed, r in zip(seeds, records)]
            if len(seeds) > 1:
                kls = [c[3] for c in cells]
                cells.append(('mean', np.mean([c[1] for c in cells]), np.mean([c[2] for c in cells]),
                              None if None in kls else float(np.mean(kls))))
            for seed, top1, tail, kl in cells:
                kl_start, kl_end = ('-', '-') if kl is None else (f'{start:.3f}', f'{kl:.3f}')
                rows.append(f'{setting:<11} {method:<9} {seed:>5} {top1:6.1f} {tail:6.1f} {kl_start:>9} {kl_end:>7}')
    return '\n'.join(rows)


def main(argv=None) -> int:
    from methods import METHODS  # (after __main__ put the repository on the path)
    from utils.cli import OneLineParser
    parser = OneLineParser(prog='bash sh/demo.sh', description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0], help='seeds, integers in 0..2**32-1')
    parser.add_argument('--methods', nargs='+', default=['SimPro', 'FixMatch'], choices=list(METHODS),
                        help='any registered method (each runs its launcher, sh/<method>.sh)')
    parser.add_argument('--settings', nargs='+', default=['reversed', 'consistent'], choices=list(ROWS))
    parser.add_argument('--out', type=Path, default=Path('demo'), help='where the runs are kept')
    parser.add_argument('--parallel', type=int, default=2, help='runs at a time (one CPU thread each), >= 1')
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error(f'--parallel {args.parallel} is not allowed; use an integer >= 1')
    bad_seeds = [seed for seed in args.seeds if not 0 <= seed < 2 ** 32]
    if bad_seeds:
        parser.error(f'--seeds {bad_seeds[0]} is not allowed; use integers in 0..2**32-1')
    out = args.out.resolve()
    if out.exists() and not out.is_dir():
        parser.error(f'--out {args.out} is a file; choose a folder')
    jobs = [(seed, setting, method) for seed in args.seeds for setting in args.settings for method in args.methods]
    started = time.time()
    print(f'training {len(jobs)} runs on real handwritten digits, {args.parallel} at a time; runs in {args.out}/')
    run_all(jobs, out, args.parallel)
    print(f'\ndone in {time.time() - started:.0f} s. Digits, 20..1 labels per class (gamma_l=20), unlabeled '
          f'120..6 per class; top-1 and tail (classes 7-9, 1 label each) accuracy in %:\n')
    print(table(out, args.seeds, args.settings, args.methods))
    return 0


if __name__ == '__main__':
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
