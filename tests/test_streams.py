"""stdout and stderr that are closed or full (utils/startup.py): one line instead of a traceback, and a
training run that goes on, its lines in log.txt."""
import os
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT
from test_report import synthetic  # noqa: F401 (a fixture: 14 runs and their report)

TINY = ['--num-max', '20', '--num-max-u', '30', '--depth', '10', '--widen-factor', '1', '--batch-size', '4',
        '--mu', '2', '--num-workers', '0', '--total-steps', '4', '--eval-step', '2']
FULL = pytest.mark.skipif(not os.path.exists('/dev/full'), reason='needs /dev/full (a device that is always full)')


def shell(command: str):
    """`command` run by bash in the repository (for redirections such as >&- and >/dev/full)."""
    return subprocess.run(['bash', '-c', command], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, 'PYTHON': sys.executable})


def python(*argv) -> str:
    return shlex.join([sys.executable, *map(str, argv)])


@FULL
def test_a_dry_run_into_a_full_stdout_is_one_line(small_cifar10_root):
    result = shell(f'{python("train.py", "--data-dir", small_cifar10_root, *TINY, "--dry-run")} > /dev/full')
    assert (result.returncode, result.stderr) == (
        2, 'error: cannot write to stdout (No space left on device); send it to a file with room, or to /dev/null\n')


@FULL
@pytest.mark.slow
def test_a_run_whose_stdout_is_full_or_closed_goes_on_and_logs_everything(small_cifar10_root, tmp_path):
    for name, redirect in (('full', '> /dev/full'), ('closed', '>&-')):
        out = tmp_path / name
        result = shell(f'{python("train.py", "--data-dir", small_cifar10_root, *TINY, "--out", out)} {redirect}')
        assert result.returncode == 0, result.stderr
        if name == 'full':
            assert result.stderr.count('warning: cannot write to stdout (No space left on device)') == 1
        assert 'finished: best top1 ' in (out / 'log.txt').read_text().splitlines()[-1]
        assert len((out / 'metrics.jsonl').read_text().splitlines()) == 2


def test_bad_input_with_stderr_full_or_closed_exits_2_without_a_word(tmp_path):
    for redirect in ('2> /dev/full', '2>&-'):
        if 'full' in redirect and not os.path.exists('/dev/full'):
            continue
        result = shell(f'{python("train.py", "--lr", "-1", "--out", tmp_path / "out")} {redirect}')
        assert (result.returncode, result.stdout, result.stderr) == (2, '', '')
        assert not (tmp_path / 'out').exists()


@FULL
def test_a_report_into_a_full_stdout_is_one_line_after_its_files(synthetic):  # noqa: F811
    """tools.report writes its files, then cannot say so: one line, exit 2 (it used to trace back)."""
    out = synthetic[0].parent
    result = shell(f'{python("-m", "tools.report", out / "runs", "--out", out / "again")} > /dev/full')
    assert (result.returncode, result.stderr) == (
        2, 'error: cannot write to stdout (No space left on device); send it to a file with room, or to /dev/null\n')
    assert (out / 'again' / 'results.csv').read_text() == (out / 'out' / 'results.csv').read_text()


def test_a_closed_stdout_is_not_taken_by_a_file_the_command_opens(tmp_path):
    """With stdout closed, the first file a command opens would get its descriptor, and whatever the
    command or its children then print would go into that file; it is /dev/null instead."""
    target = tmp_path / 'data.txt'
    code = (f'import utils.startup, os; f = open({str(target)!r}, "w"); print("printed"); '
            f'os.system("echo child"); f.write("written"); f.close()')
    result = shell(f'{python("-c", code)} >&-')
    assert result.returncode == 0 and target.read_text() == 'written'
