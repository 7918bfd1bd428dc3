"""Rows x seeds x methods in one command, on this machine's GPUs (or CPU) or on a Slurm cluster, then
the report:

    python -m tools.sweep --methods SimPro ACR_d FixMatch --dataset cifar10 --rows 0-9 --seeds 0 1 2
    python -m tools.sweep ... --executor slurm --partition gpu --time 2880 --wait
    python -m tools.sweep ... --dry-run                  # every run's command and folder, nothing runs

Each run is its method's launcher on the row (`bash sh/<method>.sh <dataset> <row> --seed <s>`,
the one place a recipe is written), with train.py arguments after `--` appended (they override the
recipe, as on a launcher), in its usual folder (result/<dataset>/<setting>/<method>_seed<s>, or under
--out-root), resumed with --resume auto. Every run's whole train.py command passes train.py's own
checks, and --report and --out-root must be writable folders, before the first run starts. Running
the same command again skips the finished runs and those another process is writing (its run.lock),
and continues the others from their checkpoints.

- local (the default): a pool of --per-gpu runs on each visible GPU, each run pinned with
  CUDA_VISIBLE_DEVICES; --per-gpu runs at a time on a machine without CUDA. A run's output goes to
  <folder>.out beside its folder.
- slurm: one job per run through submitit (pip install submitit), its logs in <folder>.slurm/. A job
  warned of its end (Slurm's USR2, 90 s before --time, or a preemption) stops its run with SIGTERM:
  the run saves its checkpoint at the step's end and the job is requeued, continuing with --resume
  auto. --nodes/--gpus-per-node > 1 run the launcher under torchrun (NNODES, NPROC, NODE_RANK).

The exit status is the number of failed runs (at most 100); 2 for bad input.
"""
import utils.startup  # noqa: F401 (first: a Ctrl-C while the rest imports is one line)
import argparse
import contextlib
import io
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple, Optional

import torch
from tqdm import tqdm

from core.arguments import check_before_data
from core.command_line import get_args_parser as train_parser, given_flags
from core.recipes import ROOT, launcher, launcher_rows, off_recipe, recipe
from core.run_folder import default_out_dir
from core.run_lock import RunLock
from methods import METHODS
from utils.cli import HelpFormatter, OneLineParser, unwritable
from utils.errors import UserError

STOPPED = 128 + signal.SIGTERM   # train.py's exit status when SIGTERM stopped it (its checkpoint saved)


class Run(NamedTuple):
    method: str
    dataset: str
    row: int
    seed: int
    command: tuple   # the launcher call, run from the repository's root
    folder: Path     # its run folder

    @property
    def name(self) -> str:
        return f'{self.method} {self.dataset} row {self.row} seed {self.seed}'

    @property
    def log(self) -> Path:
        return self.folder.with_name(self.folder.name + '.out')


# ------------------------------------------------------------------ the runs

def parse_rows(tokens) -> list:
    """'0-9', '3', ... -> sorted row indices; UserError for anything else."""
    rows = set()
    for token in tokens:
        first, _, last = token.partition('-')
        if not first.isdigit() or (last and not last.isdigit()) or (last and int(last) < int(first)):
            raise UserError(f'--rows {token} is not a row or a range of rows; use e.g. 0 2 5-9')
        rows.update(range(int(first), int(last or first) + 1))
    return sorted(rows)


def expand(methods, dataset: str, rows, seeds, extra=(), out_root: Optional[Path] = None) -> list:
    """Every (method, row, seed) as a Run: its launcher's command and its folder (train.py's default
    folder for those arguments, under `out_root` instead of result/ when given)."""
    parser, runs = train_parser(), []
    for method in methods:
        if method not in METHODS:
            raise UserError(f'--methods {method} is not a method; choose from {", ".join(METHODS)}')
        script = launcher(method)
        table = launcher_rows(str(script), dataset)
        if not table:
            raise UserError(f'{script.relative_to(ROOT)} has no rows for --dataset {dataset}; '
                            f'run bash {script.relative_to(ROOT)} --help for its datasets')
        for row in rows:
            if row >= len(table):
                raise UserError(f'--rows {row} is not a row of {dataset}: {script.relative_to(ROOT)} has rows 0 to '
                                f'{len(table) - 1}')
            for seed in seeds:
                argv = [*table[row], '--seed', str(seed), *extra]
                said = io.StringIO()
                try:
                    with contextlib.redirect_stderr(said):
                        args = parser.parse_args(argv)
                except SystemExit:
                    why = said.getvalue().strip().splitlines()[-1:] or ['']
                    raise UserError(f'the arguments after -- are not train.py arguments: {shlex.join(extra)} '
                                    f'({why[0].split("error: ")[-1]})')
                expected = recipe(vars(args), parser)
                folder = default_out_dir(args, on_recipe=expected is not None and not off_recipe(vars(args), expected))
                if out_root is not None:
                    folder = out_root / folder.relative_to('result')
                command = ('bash', str(script.relative_to(ROOT)), dataset, str(row), '--seed', str(seed), *extra,
                           '--out', str(folder), '--resume', 'auto', '--no-progress')
                runs.append(Run(method, dataset, row, seed, command, folder))
                full = [*argv, *command[len(command) - 5:]]  # (train.py's arguments of the run, every one)
                try:  # (train.py's own checks of them, before the first run starts, not as each starts)
                    check_before_data(parser.parse_args(full), given_flags(full))
                except UserError as e:
                    raise UserError(f'{runs[-1].name}: {e}') from None
    folders = [run.folder.resolve() for run in runs]
    if len(set(folders)) != len(folders):
        raise UserError('two runs of the sweep would share a folder; give each method, row and seed once')
    return runs


def last_record(run: Run) -> Optional[dict]:
    """The run's last metrics line; None without one."""
    try:
        return json.loads((run.folder / 'metrics.jsonl').read_text().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


def state(run: Run) -> tuple:
    """('finished' | 'in use' | 'to run', why): a run is finished when its metrics reach its last step."""
    holder = RunLock(run.folder).live_holder()
    if holder is not None:
        return 'in use', f'in use by process {holder.get("pid")} on {holder.get("host")} ({run.folder / "run.lock"})'
    last = last_record(run)
    try:
        saved = json.loads((run.folder / 'args.json').read_text())
        if last['step'] >= math.ceil(saved['total_steps'] / saved['eval_step']) * saved['eval_step']:
            return 'finished', f'finished (top-1 {last["top1"]:.2f})'
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return 'to run', 'resumes from its checkpoint' if (run.folder / 'checkpoint.pt').exists() else 'starts'


def last_top1(run: Run) -> str:
    last = last_record(run)
    return f'top-1 {last["top1"]:.2f}' if last and 'top1' in last else 'no metrics'


# ------------------------------------------------------------------ local executor

def ignore_slurm_warnings():
    """In a run's process: Slurm's USR1/USR2 (meant for the job) must not end it; SIGTERM stops it."""
    for name in ('SIGUSR1', 'SIGUSR2'):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def run_local(runs, per_gpu: int, gpus: int) -> list:
    """Runs `runs`, per_gpu at a time on each of `gpus` GPUs (per_gpu at a time without one); the
    failed ones."""
    slots = [str(g) for g in range(gpus) for _ in range(per_gpu)] or [None] * per_gpu
    threads = max(1, (os.cpu_count() or 1) // len(slots))
    pending, active, failed, done = list(runs), {}, [], 0
    bar = tqdm(total=len(runs), desc='sweep', unit='run', file=sys.stderr, disable=not sys.stderr.isatty())
    try:
        while pending or active:
            for slot in [s for s in range(len(slots)) if s not in active]:
                if not pending:
                    break
                run = pending.pop(0)
                env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', str(threads))}
                if slots[slot] is not None:
                    env['CUDA_VISIBLE_DEVICES'] = slots[slot]
                run.folder.parent.mkdir(parents=True, exist_ok=True)
                with open(run.log, 'w') as log:
                    process = subprocess.Popen(run.command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                               preexec_fn=ignore_slurm_warnings)
                active[slot] = (run, process, time.time())
            time.sleep(0.2)
            for slot, (run, process, started) in list(active.items()):
                if process.poll() is None:
                    continue
                del active[slot]
                done += 1
                where = f' on GPU {slots[slot]}' if slots[slot] is not None else ''
                if process.returncode == 0:
                    line = f'finished{where} in {time.time() - started:.0f} s, {last_top1(run)}'
                else:
                    failed.append(run)
                    line = f'failed{where} (exit status {process.returncode}): see {run.log}'
                bar.update()
                (bar.write if not bar.disable else print)(f'[{done}/{len(runs)}] {run.name}: {line}')
    except KeyboardInterrupt:
        for run, process, _ in active.values():
            process.send_signal(signal.SIGTERM)
        for run, process, _ in active.values():
            process.wait()
        bar.close()
        print(f'stopped by Ctrl-C: {len(active)} running run(s) saved their checkpoints; run the same command '
              f'again to continue', file=sys.stderr)
        raise SystemExit(130)
    bar.close()
    return failed


# ------------------------------------------------------------------ Slurm executor (submitit)

class SlurmRun:
    """A submitit job: one run's launcher call. Warned of its end (USR2), it stops the run with
    SIGTERM, waits for its checkpoint and is requeued with the same command (--resume auto)."""

    def __init__(self, command, gpus_per_node: int = 1):
        self.command, self.gpus_per_node, self.process = list(command), gpus_per_node, None

    def __call__(self):
        import submitit
        env = dict(os.environ)
        job = submitit.JobEnvironment()
        if job.num_nodes > 1 or self.gpus_per_node > 1:   # the launcher runs torchrun
            env.update(NPROC=str(self.gpus_per_node), NNODES=str(job.num_nodes), NODE_RANK=str(job.node),
                       MASTER_ADDR=job.hostnames[0])
        print(f'job process {os.getpid()}: {shlex.join(self.command)}', flush=True)
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=env, preexec_fn=ignore_slurm_warnings)
        while (code := self.process.poll()) is None:   # not wait(): the warning's handler must be able to reap
            time.sleep(1)
        if code != 0:
            raise RuntimeError(f'{shlex.join(self.command)} ended with exit status {code}')
        return code

    def checkpoint(self):
        """submitit's handler of the warning (in this job's process, interrupting __call__): stop the
        run, which saves, and hand submitit the same call to requeue."""
        import submitit
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)   # the run saves at the step's end
            try:
                os.waitpid(self.process.pid, 0)
            except ChildProcessError:   # reaped meanwhile
                pass
        return submitit.helpers.DelayedSubmission(SlurmRun(self.command, self.gpus_per_node))

    def __getstate__(self):
        return {'command': self.command, 'gpus_per_node': self.gpus_per_node, 'process': None}


QUEUED = ('PENDING', 'RUNNING', 'REQUEUED', 'CONFIGURING', 'COMPLETING', 'RESIZING', 'SUSPENDED')


def slurm_folder(run: Run) -> Path:
    return run.folder.with_name(run.folder.name + '.slurm')


def queued(run: Run) -> Optional[str]:
    """'queued as Slurm job N (STATE)' when the sweep's last job for the run is still in Slurm's queue
    (its run lock is taken only when it starts); else None."""
    try:
        job_id = (slurm_folder(run) / 'job_id').read_text().strip()
        import submitit
        state = submitit.SlurmJob(folder=slurm_folder(run), job_id=job_id).state
    except (OSError, ImportError):
        return None
    return f'queued as Slurm job {job_id} ({state})' if state.split()[0] in QUEUED else None


def submit_slurm(runs, args):
    """One job per run (its id in <folder>.slurm/job_id); the submitted jobs (check() found submitit)."""
    import submitit
    jobs = []
    for run in runs:
        executor = submitit.AutoExecutor(folder=slurm_folder(run), cluster=args.cluster)
        parameters = dict(timeout_min=args.time, nodes=args.nodes, tasks_per_node=1, name=run.folder.name)
        if args.cluster != 'debug':
            parameters.update(gpus_per_node=args.gpus_per_node)
        if args.partition and args.cluster == 'slurm':
            parameters['slurm_partition'] = args.partition
        executor.update_parameters(**parameters)
        run.folder.parent.mkdir(parents=True, exist_ok=True)
        jobs.append(executor.submit(SlurmRun(run.command, args.gpus_per_node)))
        (slurm_folder(run) / 'job_id').write_text(f'{jobs[-1].job_id}\n')
    return jobs


# ------------------------------------------------------------------ command line

def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog='python -m tools.sweep', description=__doc__.split('\n')[0], formatter_class=HelpFormatter)
    p.add_argument('--methods', nargs='+', required=True, help='methods (--version), e.g. SimPro ACR_d FixMatch')
    p.add_argument('--dataset', required=True, help='a dataset of the launchers: cifar10, cifar100, stl10, ...')
    p.add_argument('--rows', nargs='+', required=True, help='launcher rows: indices and ranges, e.g. 0 2 5-9')
    p.add_argument('--seeds', nargs='+', type=int, default=[0], help='seeds')
    p.add_argument('--out-root', type=Path, help='run folders under this folder instead of result/')
    p.add_argument('--executor', choices=('local', 'slurm'), default='local', help='where the runs run')
    p.add_argument('--per-gpu', type=int,
                   help='local: runs sharing one GPU (default 1); without CUDA, runs at a time on the CPU (default: '
                        'one per core, at most 8)')
    p.add_argument('--partition', help='slurm: the partition')
    p.add_argument('--time', type=int, default=4320, help='slurm: minutes per job (a longer run is requeued)')
    p.add_argument('--gpus-per-node', type=int, default=1, help='slurm: GPUs (processes) per node')
    p.add_argument('--nodes', type=int, default=1, help='slurm: nodes per run')
    p.add_argument('--cluster', choices=('slurm', 'local', 'debug'), default='slurm',
                   help="slurm: submitit's executor; local and debug try the Slurm path on this machine")
    p.add_argument('--wait', action='store_true', help='slurm: wait for the jobs, then report')
    p.add_argument('--dry-run', action='store_true', help='print every run\'s command and folder; run nothing')
    reporting = p.add_mutually_exclusive_group()  # (--report r --no-report is a contradiction: refused)
    reporting.add_argument('--report', type=Path, nargs='?', const=Path('report'), default=Path('report'),
                           help='the report\'s folder (tools.report), written when the sweep ends')
    reporting.add_argument('--no-report', action='store_true', help='write no report')
    return p


def split_extra(argv):
    """(the sweep's arguments, train.py's after --)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return (argv[:argv.index('--')], argv[argv.index('--') + 1:]) if '--' in argv else (argv, [])


def check(args) -> None:
    for name in ('per_gpu', 'gpus_per_node', 'nodes', 'time'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f'--{name.replace("_", "-")} {getattr(args, name)} is not allowed; use a whole number >= 1')
    for flag, folder in (('--out-root', args.out_root), ('--report', None if args.no_report else args.report)):
        if folder is not None and (why := unwritable(flag, folder)):  # (before the first run, not after the last)
            raise UserError(why)
    slurm_only = [f'--{n.replace("_", "-")}' for n in ('partition', 'wait') if getattr(args, n)]
    if args.executor == 'local' and slurm_only:
        raise UserError(f'{", ".join(slurm_only)} only apply to --executor slurm')
    if args.executor == 'slurm':
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise UserError('--executor slurm needs submitit: pip install submitit')


def report(runs, out: Path) -> None:
    from tools import report as tables
    folders = [str(run.folder) for run in runs if (run.folder / 'args.json').exists()]
    if not folders:
        print('no run has written anything yet: no report')
        return
    if tables.main([*folders, '--out', str(out)]) == 0:
        print((out / 'results.md').read_text())


def main(argv=None) -> int:
    own, extra = split_extra(argv)
    args = get_args_parser().parse_args(own)
    try:
        check(args)
        runs = expand(args.methods, args.dataset, parse_rows(args.rows), args.seeds, extra, args.out_root)
        states = {run: state(run) for run in runs}
        if args.executor == 'slurm' and args.cluster == 'slurm':
            states.update({run: ('queued', why) for run in runs if states[run][0] == 'to run' for why in [queued(run)]
                           if why})
        todo = [run for run in runs if states[run][0] == 'to run']
        gpus = torch.cuda.device_count() if args.executor == 'local' else 0
        if args.per_gpu is None:
            args.per_gpu = 1 if gpus else min(os.cpu_count() or 1, 8)
        if args.dry_run:
            for run in runs:
                print(f'{run.name}: {states[run][1]}\n  folder  {run.folder}\n  command {shlex.join(run.command)}')
            if args.executor == 'local':
                slots = [f'GPU {g}' for g in range(gpus)] or ['the CPU']
                shares = [len(todo[i::len(slots)]) for i in range(len(slots))]
                print(f'{len(todo)} of {len(runs)} runs to run, {args.per_gpu} at a time on each of: '
                      + ', '.join(f'{s} ({n} runs)' for s, n in zip(slots, shares)))
            else:
                print(f'{len(todo)} of {len(runs)} runs to run: {len(todo)} jobs, each {args.nodes} node(s) x '
                      f'{args.gpus_per_node} GPU(s), {args.time} minutes')
            return 0
        for run in runs:
            if states[run][0] != 'to run':
                print(f'skipped {run.name}: {states[run][1]}')
        if not todo:
            print(f'nothing to run: all {len(runs)} runs are finished, in use or queued')
        failed = []
        if todo and args.executor == 'local':
            where = f'{gpus} GPU(s), {args.per_gpu} per GPU' if gpus else f'the CPU, {args.per_gpu} at a time'
            print(f'running {len(todo)} of {len(runs)} runs on {where}')
            failed = run_local(todo, args.per_gpu, gpus)
        elif todo:
            jobs = submit_slurm(todo, args)
            names = ', '.join(f'{job.job_id} ({run.name})' for job, run in zip(jobs, todo))
            print(f'submitted {len(jobs)} jobs: {names}')
            if not args.wait:
                print('run the same command again when they end: it skips the finished runs and writes the report')
                return 0
            for job, run in zip(jobs, todo):
                try:
                    job.result()
                    print(f'{run.name}: finished, {last_top1(run)}')
                except Exception as e:   # the job's error, as submitit reports it
                    failed.append(run)
                    print(f'{run.name}: failed ({str(e).strip().splitlines()[-1] if str(e).strip() else e})')
        if not args.no_report:
            report(runs, args.report)
        if failed:
            logs = {r: r.log if args.executor == 'local' else slurm_folder(r) for r in failed}
            print(f'{len(failed)} of {len(todo)} runs failed: '
                  + '; '.join(f'{r.name} (see {logs[r]})' for r in failed),
                  file=sys.stderr)
        return min(len(failed), 100)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
