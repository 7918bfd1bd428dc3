"""tools/sweep.py: the runs it expands to (each its launcher's command, each its own folder), the
local pool (K at a time, all finished, the report, nothing twice, a killed run resumed exactly), the
Slurm path through submitit's local executor (a job warned by USR2 saves, is requeued and ends like
an uninterrupted run), and bad input in one line."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import HANG_LIMIT
from core.recipes import ROOT, launcher_rows
from tools import sweep

TINY = ['--total-steps', '4', '--eval-step', '2']   # after --: train.py arguments of a few seconds' run


def metrics(folder: Path) -> list:
    records = [json.loads(line) for line in (folder / 'metrics.jsonl').read_text().splitlines()]
    for record in records:
        record.pop('seconds')
    return records


def wait_for(condition, what: str, process=None):
    deadline = time.time() + HANG_LIMIT
    while not condition():
        assert process is None or process.poll() is None, f'ended before {what}'
        assert time.time() < deadline, f'no {what} within {HANG_LIMIT} s'
        time.sleep(0.05)


def test_the_runs_are_the_launchers_rows_each_in_its_own_folder(tmp_path):
    runs = sweep.expand(['SimPro', 'FixMatch'], 'digits', sweep.parse_rows(['0', '2-3']), [0, 1])
    assert len(runs) == 12 and len({run.folder for run in runs}) == 12
    assert [(r.method, r.row, r.seed) for r in runs[:3]] == [('SimPro', 0, 0), ('SimPro', 0, 1), ('SimPro', 2, 0)]
    reversed_seed1 = next(r for r in runs if (r.method, r.row, r.seed) == ('SimPro', 2, 1))
    assert reversed_seed1.folder == Path('result/digits/reversed_gl20/SimPro_seed1')  # train.py's own default
    # the command is the launcher's: with PRINT_ARGS=1 it prints the row's recipe, the seed and the folder
    printed = subprocess.run(reversed_seed1.command, cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, 'PRINT_ARGS': '1'}).stdout.splitlines()
    row = list(launcher_rows(str(ROOT / 'sh/SimPro.sh'), 'digits')[2])
    assert row[-2:] == ['--seed', '0']  # (the launcher's, replaced by the sweep's)
    assert printed == row[:-2] + ['--seed', '1', '--out', str(reversed_seed1.folder), '--resume', 'auto',
                                  '--no-progress']
    # train.py arguments after --: the run is off its recipe, so its folder names a digest of its settings
    off, = sweep.expand(['SimPro'], 'digits', [2], [1], TINY, out_root=tmp_path)
    assert re.fullmatch(r'SimPro-[0-9a-f]{8}_seed1', off.folder.name) and off.folder.parent == tmp_path / \
        'digits/reversed_gl20'
    assert off.command[3:8] == ('2', '--seed', '1', *TINY[:2]) and off.command[-5:-3] == ('--out', str(off.folder))


@pytest.mark.slow
def test_the_local_pool_runs_k_at_a_time_then_reports_and_never_twice(tmp_path, monkeypatch, capsys):
    started, most = [], [0]
    popen = subprocess.Popen

    def counting_popen(*args, **kwargs):   # how many runs are alive when each starts
        started.append(popen(*args, **kwargs))
        most[0] = max(most[0], sum(p.poll() is None for p in started))
        return started[-1]

    monkeypatch.setattr(sweep.subprocess, 'Popen', counting_popen)
    monkeypatch.setattr(sweep.torch.cuda, 'device_count', lambda: 0)
    argv = ['--methods', 'SimPro', 'FixMatch', '--dataset', 'digits', '--rows', '0', '2', '--seeds', '0',
            '--per-gpu', '2', '--out-root', str(tmp_path / 'runs'), '--report', str(tmp_path / 'report'), '--', *TINY]
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert len(started) == 4 and most[0] == 2
    assert 'running 4 of 4 runs on the CPU, 2 at a time' in out and out.count(': finished in ') == 4
    folders = sorted((tmp_path / 'runs').glob('digits/*/*_seed0'))
    assert len(folders) == 4 and all(metrics(f)[-1]['step'] == 4 for f in folders)
    assert all(f.with_name(f.name + '.out').exists() for f in folders)        # each run's output beside it
    table = (tmp_path / 'report' / 'results.md').read_text()
    assert table in out and table.count('(n=1)') >= 4                          # the report, printed
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert len(started) == 4 and 'nothing to run: all 4 runs are finished, in use or queued' in out
    assert out.count('skipped ') == 4 and 'finished (top-1' in out


@pytest.mark.slow
def test_a_killed_run_is_resumed_by_the_next_sweep_and_ends_as_if_uninterrupted(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep.torch.cuda, 'device_count', lambda: 0)
    common = ['--methods', 'SimPro', '--dataset', 'digits', '--rows', '2', '--no-report']
    train_args = ['--', '--total-steps', '8', '--eval-step', '2']
    assert sweep.main([*common, '--out-root', str(tmp_path / 'whole'), *train_args]) == 0
    whole, = (tmp_path / 'whole').glob('digits/*/SimPro*_seed0')
    process = subprocess.Popen([sys.executable, '-m', 'tools.sweep', *common, '--out-root', str(tmp_path / 'split'),
                                *train_args], cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    folder = tmp_path / 'split' / whole.relative_to(tmp_path / 'whole')
    wait_for(lambda: (folder / 'checkpoint.pt').exists() and (folder / 'metrics.jsonl').exists(), 'first checkpoint',
             process)
    os.killpg(process.pid, signal.SIGKILL)                                       # the sweep and its run
    process.wait()
    wait_for(lambda: sweep.RunLock(folder).live_holder() is None, 'the killed run to go')  # its lock holds no one
    assert sweep.state(sweep.Run('SimPro', 'digits', 2, 0, (), folder)) == ('to run', 'resumes from its checkpoint')
    capsys.readouterr()
    assert sweep.main([*common, '--out-root', str(tmp_path / 'split'), *train_args]) == 0
    assert 'running 1 of 1 runs' in capsys.readouterr().out
    assert 'resuming at step' in (folder / 'log.txt').read_text()
    assert metrics(folder) == metrics(whole)


def test_a_folder_in_use_is_skipped_and_named(tmp_path, capsys):
    run, = sweep.expand(['SimPro'], 'digits', [0], [0], TINY, out_root=tmp_path)
    run.folder.mkdir(parents=True)
    (run.folder / 'run.lock').write_text(json.dumps({'pid': os.getppid(), 'host': os.uname().nodename}))
    assert sweep.main(['--methods', 'SimPro', '--dataset', 'digits', '--rows', '0', '--out-root', str(tmp_path),
                       '--no-report', '--', *TINY]) == 0
    out = capsys.readouterr().out
    assert f'skipped SimPro digits row 0 seed 0: in use by process {os.getppid()}' in out
    assert not (run.folder / 'args.json').exists()


@pytest.mark.slow
def test_a_slurm_job_warned_of_its_end_saves_is_requeued_and_ends_as_if_uninterrupted(tmp_path):
    """Through submitit's local executor: USR2 to the job (what Slurm sends before --time or on
    preemption) stops the run with SIGTERM at a step's end; the requeued job resumes it."""
    pytest.importorskip('submitit')
    train_args = ['--total-steps', '40', '--eval-step', '2']
    run, = sweep.expand(['SimPro'], 'digits', [2], [0], train_args, out_root=tmp_path / 'slurm')
    options = SimpleNamespace(cluster='local', time=60, nodes=1, gpus_per_node=1, partition=None)
    job, = sweep.submit_slurm([run], options)
    wait_for(lambda: Path(job.paths.stdout).exists() and 'job process' in Path(job.paths.stdout).read_text(),
             "the job's first line")
    wait_for(lambda: (run.folder / 'checkpoint.pt').exists(), "the run's first checkpoint")
    pid = int(re.search(r'job process (\d+)', Path(job.paths.stdout).read_text()).group(1))
    os.kill(pid, signal.SIGUSR2)
    assert job.result() == 0
    log = (run.folder / 'log.txt').read_text()
    assert log.count('resuming at step') == 1 and 'stopped by SIGTERM' in Path(job.paths.stderr).read_text() + log
    uninterrupted = tmp_path / 'whole'
    result = subprocess.run(['bash', 'sh/SimPro.sh', 'digits', '2', *train_args, '--out', str(uninterrupted),
                             '--no-progress'], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert metrics(run.folder) == metrics(uninterrupted)


@pytest.mark.parametrize('argv, message', [
    (['--methods', 'SimPo'], 'error: --methods SimPo is not a method; choose from'),
    (['--dataset', 'cifar11'], 'error: sh/SimPro.sh has no rows for --dataset cifar11; run bash sh/SimPro.sh --help'),
    (['--rows', '5'], 'error: --rows 5 is not a row of digits: sh/SimPro.sh has rows 0 to 4'),
    (['--rows', '3-1'], 'error: --rows 3-1 is not a row or a range of rows; use e.g. 0 2 5-9'),
    (['--per-gpu', '0'], 'error: --per-gpu 0 is not allowed; use a whole number >= 1'),
    (['--partition', 'gpu'], 'error: --partition only apply to --executor slurm'),
    (['--', '--no-such-flag'], 'error: the arguments after -- are not train.py arguments: --no-such-flag'),
    # train.py's own checks of each run's full arguments, before the first run starts
    (['--', '--lr', '-1'], 'error: SimPro digits row 0 seed 0: --lr -1 is not allowed; use a finite number > 0'),
    (['--dataset', 'stl10', '--', '--num-max-u', '5'],
     'error: SimPro stl10 row 0 seed 0: --num-max-u is not read: --dataset stl10 does not use it'),
    (['--methods', 'SimPro', 'CReST+', '--', '--total-steps', '2'],
     'error: CReST+ digits row 0 seed 0: --generations 3 is not allowed with --version CReST+'),
    (['--', '--depth', '11'], 'error: SimPro digits row 0 seed 0: --arch wideresnet --depth 11 --widen-factor 1: '
                              'WideResNet depth must be 6n+4'),
    (['--report', 'README.md'], 'error: --report README.md is a file; choose a folder'),
    (['--out-root', 'README.md'], 'error: --out-root README.md is a file; choose a folder'),
])
def test_bad_input_is_one_line(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(sweep, 'run_local', lambda *a: pytest.fail('a run started'))
    monkeypatch.chdir(ROOT)
    base = {'--methods': ['SimPro'], '--dataset': ['digits'], '--rows': ['0']}
    own = argv[:argv.index('--')] if '--' in argv else argv
    for flag in [a for a in own if a in base]:
        base.pop(flag)
    full = [x for flag, values in base.items() for x in (flag, *values)] + argv
    assert sweep.main(full) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count('\n') == 1


def test_slurm_without_submitit_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'submitit', None)   # import submitit raises ImportError
    assert sweep.main(['--methods', 'SimPro', '--dataset', 'digits', '--rows', '0', '--executor', 'slurm']) == 2
    assert capsys.readouterr().err == 'error: --executor slurm needs submitit: pip install submitit\n'


def test_a_run_still_queued_on_slurm_is_not_submitted_again(tmp_path, monkeypatch, capsys):
    submitit = pytest.importorskip('submitit')
    run, = sweep.expand(['SimPro'], 'digits', [0], [0], TINY, out_root=tmp_path)
    sweep.slurm_folder(run).mkdir(parents=True)
    (sweep.slurm_folder(run) / 'job_id').write_text('4242\n')
    asked = []

    class Job:   # what sacct would say of job 4242
        def __init__(self, folder, job_id):
            asked.append((Path(folder), job_id))
            self.state = 'PENDING'

    monkeypatch.setattr(submitit, 'SlurmJob', Job)
    monkeypatch.setattr(sweep, 'submit_slurm', lambda *a: pytest.fail('submitted again'))
    assert sweep.main(['--methods', 'SimPro', '--dataset', 'digits', '--rows', '0', '--executor', 'slurm',
                       '--out-root', str(tmp_path), '--no-report', '--', *TINY]) == 0
    assert asked == [(sweep.slurm_folder(run), '4242')]
    assert 'skipped SimPro digits row 0 seed 0: queued as Slurm job 4242 (PENDING)' in capsys.readouterr().out


def test_a_report_folder_and_no_report_together_are_refused_in_one_line(tmp_path, capsys):
    """--report r --no-report contradict each other: one line, exit 2, nothing run or written."""
    with pytest.raises(SystemExit) as exit_:
        sweep.main(['--methods', 'SimPro', '--dataset', 'digits', '--rows', '0', '--out-root', str(tmp_path / 'runs'),
                    '--report', str(tmp_path / 'r'), '--no-report'])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count('\n') == 1 and 'not allowed with argument --report' in err
    assert not (tmp_path / 'runs').exists() and not (tmp_path / 'r').exists()


def test_fingerprint_checks_where_it_saves_before_the_runs(tmp_path, monkeypatch, capsys):
    """--save into a folder or under a file is one line before the 20 runs (it used to fail after them,
    with a traceback)."""
    from tools import fingerprint
    monkeypatch.setattr(fingerprint, 'fingerprints', lambda: pytest.fail('the runs started'))
    for target, message in ((tmp_path, f'--save {tmp_path} is a folder; choose a file'),
                            (ROOT / 'README.md' / 'x.json', f'cannot write to --save {ROOT / "README.md" / "x.json"} ('
                                                            f'{ROOT / "README.md"} is not writable)')):
        with pytest.raises(SystemExit) as stop:
            fingerprint.main(['--save', str(target)])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.startswith(f'python -m tools.fingerprint: error: {message}'), err
        assert err.count('\n') == 1
