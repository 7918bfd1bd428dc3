"""What a new user trips over (issue 19): launcher indices and environment, runs that end otherwise
than asked, the final metrics line, early checks, and one-line errors of every command."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import train
from conftest import ROOT
from test_resume import Interrupted, crash_after_checkpoint, final_state, run
from core.command_line import get_args_parser


def launcher(*argv, **environment):
    env = {'PATH': os.environ['PATH'], 'PRINT_ARGS': '1', **environment}
    return subprocess.run(['bash', 'sh/SimPro.sh', *argv], cwd=ROOT, capture_output=True, text=True, env=env)


def split_of(result):
    args = get_args_parser().parse_args(result.stdout.splitlines())
    return args.imb_ratio_label, args.imb_ratio_unlabel, args.flag_reverse_LT


@pytest.mark.parametrize('index,row', [('010', 10), ('08', 8), ('09', 9), ('0', 0), ('00', 0), ('19', 19)])
def test_a_launcher_index_is_decimal(index, row):
    """010 is row 10, never octal 8; 08 and 09 are rows 8 and 9, never a bash error and defaults."""
    assert split_of(launcher('cifar10', index)) == split_of(launcher('cifar10', str(row)))


@pytest.mark.parametrize('index', ['38', '-1', 'x', '1.0', ' 1', '0x1', ''])
def test_what_is_no_row_index_lists_the_rows(index):
    result = launcher('cifar10', index)
    assert result.returncode == 2 and result.stdout == ''
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: index '{index}' is not a row of cifar10; choose one of:"
    assert lines[1:] and lines[-1] == ('  37: CPG protocol: N1=400 M1=4600, gamma_l=200 gamma_u=200 seed-shuffled '
                                       '(its random)')


@pytest.mark.parametrize('argv', [['--help'], ['-h'], []])
def test_a_launcher_without_a_dataset_shows_its_usage_and_rows(argv):
    result = launcher(*argv)
    assert result.returncode == 2 and result.stdout == ''
    lines = result.stderr.splitlines()
    assert lines[0].startswith('usage: bash sh/SimPro.sh <dataset> <index>')
    assert 'cifar10:' in lines and 'digits:' in lines and '  4: gamma_l=20 gamma_u=20 head-tail' in lines


@pytest.mark.parametrize('variable', ['NPROC', 'NNODES'])
@pytest.mark.parametrize('value', ['abc', '2.5', '1e3', '0', '-1', ' 2'])
def test_nproc_and_nnodes_are_whole_numbers(variable, value):
    result = launcher('digits', '0', PRINT_ARGS='', PYTHON='false', **{variable: value})
    assert result.returncode == 2 and result.stdout == ''
    assert result.stderr == (f'error: {variable}={value} is not allowed; use a whole number >= 1 (processes per '
                             f'machine for NPROC, machines for NNODES)\n')


def test_nproc_runs_torchrun_with_that_many_processes():
    result = launcher('digits', '0', PRINT_ARGS='', PYTHON='echo', NPROC='02')
    assert result.returncode == 0
    assert '-m torch.distributed.run --nproc_per_node 2 --nnodes 1 ' in result.stdout.splitlines()[1]


def torn(path, keep: float = 0.5):
    """Cut the last line of `path` in the middle, as a process killed while writing it would."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(''.join(lines[:-1]) + lines[-1][:int(len(lines[-1]) * keep)])


def test_a_torn_last_line_at_the_final_step_is_written_back(small_cifar10_root, tmp_path):
    assert run(small_cifar10_root, tmp_path / 'whole') == 0
    shutil.copytree(tmp_path / 'whole', tmp_path / 'torn')
    torn(tmp_path / 'torn' / 'metrics.jsonl')
    assert run(small_cifar10_root, tmp_path / 'torn', '--resume', 'auto') == 0
    assert (tmp_path / 'torn' / 'metrics.jsonl').read_text() == (tmp_path / 'whole' / 'metrics.jsonl').read_text()


def test_a_torn_line_of_the_checkpoints_step_is_written_back(small_cifar10_root, tmp_path, monkeypatch):
    assert run(small_cifar10_root, tmp_path / 'whole') == 0
    crash_after_checkpoint(monkeypatch, step=4)
    with pytest.raises(Interrupted):
        run(small_cifar10_root, tmp_path / 'split')
    monkeypatch.undo()
    torn(tmp_path / 'split' / 'metrics.jsonl', keep=0.3)
    assert run(small_cifar10_root, tmp_path / 'split', '--resume', 'auto') == 0
    assert [r['step'] for r in final_state(tmp_path / 'split')[0]] == [2, 4, 6]
    assert final_state(tmp_path / 'split')[0] == final_state(tmp_path / 'whole')[0]


def digits_runs(tmp_path, environments: dict) -> dict:
    """Short SimPro digits runs (the demo's launcher row, 20 steps), one per environment, at once;
    their metrics.jsonl without the seconds."""
    def start(name, environment):
        command = ['bash', 'sh/SimPro.sh', 'digits', '2', '--total-steps', '20', '--eval-step', '10',
                   '--no-progress', '--device', 'cpu', '--out', str(tmp_path / name)]
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=environment)
    processes = {name: start(name, environment) for name, environment in environments.items()}
    for name, process in processes.items():
        assert process.wait() == 0, process.stderr.read()[-2000:]
    return {name: [{k: v for k, v in json.loads(line).items() if k != 'seconds'}
                   for line in (tmp_path / name / 'metrics.jsonl').read_text().splitlines()] for name in processes}


@pytest.mark.slow
def test_the_demo_gives_the_same_numbers_whatever_instruction_set_the_cpu_offers(tmp_path):
    """The same run under two CPUs' instruction sets (emulated with the kernels' own switches: AVX2 and
    the x86-64 baseline) is bit for bit the same in the demo's environment; outside it, it is not."""
    import torch
    from tools import demo
    avx2 = {**os.environ, 'ATEN_CPU_CAPABILITY': 'avx2', 'ONEDNN_MAX_CPU_ISA': 'AVX2', 'MKL_CBWR': 'AVX2'}
    baseline = {**os.environ, 'ATEN_CPU_CAPABILITY': 'default', 'ONEDNN_MAX_CPU_ISA': 'SSE41',
                'MKL_CBWR': 'COMPATIBLE', 'OMP_NUM_THREADS': '1'}
    runs = {'avx2': demo.run_environment(avx2), 'baseline': demo.run_environment(baseline)}
    control = torch.backends.cpu.get_cpu_capability() in ('AVX2', 'AVX512')  # (this CPU has AVX2)
    metrics = digits_runs(tmp_path, {**runs, **({'unpinned': baseline} if control else {})})
    assert len(metrics['avx2']) == 2 and metrics['baseline'] == metrics['avx2']
    if control:
        assert metrics['unpinned'] != metrics['avx2']


@pytest.mark.parametrize('argv,message', [
    (['--parallel', '0'], '--parallel 0 is not allowed; use an integer >= 1'),
    (['--seeds', '-1'], '--seeds -1 is not allowed; use integers in 0..2**32-1'),
    (['--seeds', 'x'], "argument --seeds: invalid int value: 'x'"),
    (['--out', 'README.md'], '--out README.md is a file; choose a folder'),
    (['--methods', 'Nope'], "argument --methods: invalid choice: 'Nope'")])
def test_the_demos_options_are_checked_in_one_line(argv, message, capsys, monkeypatch):
    from tools import demo
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as stop:
        demo.main(argv)
    out, err = capsys.readouterr()
    assert stop.value.code == 2 and out == ''
    assert err.startswith(f'bash sh/demo.sh: error: {message}') and err.count('\n') == 1


@pytest.mark.parametrize('command', [['train.py', '--help'], ['-m', 'tools.report', '.'], ['-m', 'tools.demo'],
                                     ['-m', 'tools.bench'], ['-m', 'tools.bench_data'], ['-m', 'tools.fake_data'],
                                     ['-m', 'dataset.prepare_imagenet127']])
def test_ctrl_c_while_starting_is_one_line(tmp_path, command):
    """A Ctrl-C while Python imports torch or NumPy (here: they raise KeyboardInterrupt when imported)."""
    for name in ('torch', 'numpy'):
        (tmp_path / name).mkdir()
        (tmp_path / name / '__init__.py').write_text('raise KeyboardInterrupt\n')
    result = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, 'PYTHONPATH': str(tmp_path)})
    assert (result.returncode, result.stdout, result.stderr) == (130, '', 'stopped by Ctrl-C\n')


def test_a_run_that_trains_other_steps_than_asked_says_so_first(small_cifar10_root, tmp_path):
    assert run(small_cifar10_root, tmp_path / 'a', '--total-steps', 5, '--eval-step', 2) == 0
    notes = [line for line in (tmp_path / 'a' / 'log.txt').read_text().splitlines() if ' note: ' in line]
    assert notes[-1].endswith('note: --total-steps 5 is no whole number of epochs of --eval-step 2: the run trains 6 '
                              "steps (whole epochs, as the original; the schedule's T stays 5)")
    assert run(small_cifar10_root, tmp_path / 'b', '--total-steps', 4, '--eval-step', 2) == 0
    assert 'whole number of epochs' not in (tmp_path / 'b' / 'log.txt').read_text()


@pytest.mark.parametrize('extra,idle', [
    (['--version', 'DASO', '--pretrain-steps', 6], 'DASO: the blending and the alignment loss never start '
                                                   "(--pretrain-steps 6 >= the run's 6 steps)"),
    (['--version', 'DASO', '--pretrain-steps', 2, '--pl-dist-update-period', 6],
     "DASO: the blending weights stay uniform (no window of --pl-dist-update-period 6 steps ends before the run's "
     "last step, 6)"),
    (['--version', 'ACR', '--est-epoch', 2], 'ACR: the estimate of the unlabeled distribution never updates (it '
                                             'starts in epoch --est-epoch + 2 = 4; the run has 3)'),
    (['--version', 'CReST+', '--generations', 3, '--eval-step', 3],
     'CReST+: generations of 2 steps are shorter than an epoch (--eval-step 3): some end before any evaluation')])
def test_a_method_that_never_acts_says_so_first(small_cifar10_root, tmp_path, extra, idle):
    assert run(small_cifar10_root, tmp_path, '--depth', 10, '--widen-factor', 1, *extra) == 0
    start = (tmp_path / 'log.txt').read_text().split(' starting: ')[0]
    assert f'note: {idle}\n' in start


def test_methods_that_act_say_nothing_of_it(small_cifar10_root, tmp_path):
    assert run(small_cifar10_root, tmp_path, '--version', 'ACR', '--est-epoch', 1, '--depth', 10,
               '--widen-factor', 1) == 0
    assert 'never' not in (tmp_path / 'log.txt').read_text()


@pytest.mark.parametrize('argv,message', [
    (['--device', 'cuda:99'], '--device cuda:99 is not usable here'),
    (['--resume', 'no/such/checkpoint.pt'], '--resume no/such/checkpoint.pt: no checkpoint there'),
    (['--out', 'README.md'], '--out README.md is a file; choose a folder'),
    (['--version', 'DASO', '--queue-max-size', 2, '--batch-size', 4], '--queue-max-size 2 is smaller than one')])
def test_what_needs_no_data_is_checked_before_the_data_is_read(capsys, monkeypatch, argv, message):
    """--data-dir holds nothing: these lines must come before the data is looked for."""
    monkeypatch.chdir(ROOT)
    assert train.main(['--data-dir', 'no/such/data', *map(str, argv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {message}') and err.count('\n') == 1


@pytest.mark.parametrize('content,why', [
    ([1, 2, 3], 'it holds a list, not a train.py checkpoint'),
    ({'model': {}}, 'it lacks ema, optimizer, scheduler, method, rng, history, step, meter, args: not a checkpoint '
                    'of this train.py')])
def test_a_file_that_is_no_checkpoint_is_one_line(small_cifar10_root, tmp_path, capsys, content, why):
    import torch
    torch.save(content, tmp_path / 'odd.pt')
    assert run(small_cifar10_root, tmp_path / 'run', '--resume', tmp_path / 'odd.pt') == 2
    err = capsys.readouterr().err
    assert err == f'error: cannot read checkpoint {tmp_path / "odd.pt"} ({why}); pass another --resume\n'


def test_a_checkpoint_of_another_network_or_without_its_data_identity(small_cifar10_root, tmp_path, capsys):
    import torch
    assert run(small_cifar10_root, tmp_path / 'run', '--total-steps', 2) == 0
    state = torch.load(tmp_path / 'run' / 'checkpoint.pt', weights_only=False)
    state['model'] = {'fc.weight': torch.zeros(1)}
    torch.save(state, tmp_path / 'other.pt')
    capsys.readouterr()
    assert run(small_cifar10_root, tmp_path / 'resumed', '--total-steps', 2, '--resume', tmp_path / 'other.pt') == 2
    err = capsys.readouterr().err
    assert err.startswith('error: the checkpoint does not fit the run of these settings (') and err.count('\n') == 1
    state = torch.load(tmp_path / 'run' / 'checkpoint.pt', weights_only=False)
    del state['data']
    torch.save(state, tmp_path / 'run' / 'checkpoint.pt')
    assert run(small_cifar10_root, tmp_path / 'run', '--total-steps', 2, '--resume', 'auto') == 0
    assert 'note: the checkpoint holds no identity of its data' in (tmp_path / 'run' / 'log.txt').read_text()


def synthetic_run(directory, seed=0, method='SimPro', top1s=(50, 60, 70, 80), **changes):
    from test_report import run_args, write_run
    args = {**run_args(method, 'reversed', (), seed, directory), **changes}
    write_run(directory, args, list(top1s))
    return directory


def report_of(tmp_path, *paths):
    from tools import report
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = report.main([*map(str, paths), '--out', str(tmp_path / 'report')])
    return code, out.getvalue(), err.getvalue()


def test_the_report_skips_a_run_it_cannot_read_with_one_warning(tmp_path):
    synthetic_run(tmp_path / 'runs' / 'good')
    strings = synthetic_run(tmp_path / 'runs' / 'strings', seed=1)
    args = json.loads((strings / 'args.json').read_text())
    (strings / 'args.json').write_text(json.dumps({**args, 'total_steps': '43000'}))
    (tmp_path / 'runs' / 'broken').mkdir()
    (tmp_path / 'runs' / 'broken' / 'args.json').write_text('{not json')
    (tmp_path / 'runs' / 'broken' / 'metrics.jsonl').write_text('')
    code, out, err = report_of(tmp_path, tmp_path / 'runs')
    assert code == 0, err
    warnings = err.splitlines()
    assert len(warnings) == 2 and all(w.startswith('warning: skipping the run in ') for w in warnings)
    assert "holds total_steps = '43000', not what train.py writes" in err and 'broken/args.json' in err
    assert '(1 runs in 1 groups, 0 unfinished)' in out


def test_the_report_counts_a_seed_once_and_names_the_copies(tmp_path):
    for folder in ('a', 'b', 'c', 'd'):
        synthetic_run(tmp_path / 'runs' / folder, seed=0)
    code, out, err = report_of(tmp_path, tmp_path / 'runs')
    assert code == 0 and 'seed 0 in 4 folders' in err and f'counted once, from {tmp_path / "runs" / "a"}' in err
    results = (tmp_path / 'report' / 'results.md').read_text()
    assert '| SimPro | 80.0 (n=1) |' in results and 'seeds finished' not in results.split('## ')[1]


def test_the_report_removes_an_earlier_reports_plots_and_says_what_does_not_exist(tmp_path):
    synthetic_run(tmp_path / 'one' / 'run')
    synthetic_run(tmp_path / 'two' / 'run', method='ACR_d', dataset='cifar10')
    assert report_of(tmp_path, tmp_path / 'one', tmp_path / 'two')[0] == 0
    before = {p.name for p in (tmp_path / 'report').glob('*.png')}
    code, out, err = report_of(tmp_path, tmp_path / 'one')
    after = {p.name for p in (tmp_path / 'report').glob('*.png')}
    assert code == 0 and after < before and not any('ACR_d' in name for name in after)
    assert 'plots of an earlier report' in out
    code, out, err = report_of(tmp_path, tmp_path / 'missing')
    assert code == 2 and err == f'error: {tmp_path / "missing"} does not exist\n'


def test_the_report_plots_an_estimate_whose_truth_needs_the_data(tmp_path):
    """ImageNet-127: the true unlabeled prior is in the data only; the estimate is still plotted."""
    directory = synthetic_run(tmp_path / 'runs' / 'in127', dataset='smallimagenet', img_size=32)
    code, out, err = report_of(tmp_path, directory)
    assert code == 0, err
    plots = [p.name for p in (tmp_path / 'report').glob('prior_*.png')]
    assert plots == ['prior_smallimagenet_SimPro_natural_32px_seed0.png']
    assert 'show the estimate alone' in out


def test_messages_say_what_was_typed(capsys, tmp_path):
    assert train.main(['--seed', str(2 ** 32), '--data-dir', str(tmp_path)]) == 2
    assert capsys.readouterr().err == 'error: --seed 4294967296 is not allowed; use an integer in 0..2**32-1\n'
    from dataset import prepare_imagenet127
    (tmp_path / 'file').write_text('')
    assert prepare_imagenet127.main(['--data-dir', str(tmp_path / 'file'), '--img-size', '32']) == 2
    assert capsys.readouterr().err.startswith(f'error: {tmp_path / "file"} is a file, not a folder')
    assert prepare_imagenet127.size_text(512) == '512 B' and prepare_imagenet127.size_text(3.5 * 2 ** 20) == '3.5 MiB'


@pytest.mark.parametrize('module,argv,message', [
    ('bench', ['--steps', '-1'], '--steps -1 is not allowed; use an integer >= 1'),
    ('bench', ['--workers', '-2'], '--workers -2 is not allowed; use an integer >= 0'),
    ('bench', ['--device', 'tpu'], '--device tpu is not a device; use cpu or cuda[:i]'),
    ('bench_data', ['--per-class', '0'], '--per-class 0 is not allowed; use an integer >= 1'),
    ('fake_data', ['README.md', 'cifar10'], 'README.md is a file; choose a folder'),
    ('fake_data', ['README.md/inside', 'cifar10'], 'cannot write to README.md/inside (')])
def test_the_tools_check_their_options_in_one_line(capsys, monkeypatch, module, argv, message):
    import importlib
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(f'tools.{module}').main(argv)
    out, err = capsys.readouterr()
    assert stop.value.code == 2 and out == ''
    assert err.startswith(f'python -m tools.{module}: error: {message}') and err.count('\n') == 1


def test_plot_legends_cover_no_data_and_plot_names_tell_runs_apart(monkeypatch, tmp_path):
    from pathlib import Path
    from tools import report
    figures = []
    monkeypatch.setattr(report, '_save', lambda figure, path: figures.append(figure) or path)
    runs = [synthetic_run(tmp_path / 'runs' / name, seed=seed) for name, seed in (('a', 0), ('b', 1))]
    groups = report.group_runs([report.read_run(run) for run in runs])
    report.plot_curves(groups, 'top1', 'top-1', 'title', tmp_path / 'top1.png')
    report.plot_per_class(groups, 'title', tmp_path / 'per_class.png')
    for figure in figures:
        figure.canvas.draw()
        axes = figure.axes[0]
        legend = axes.get_legend().get_window_extent()
        assert not legend.overlaps(axes.get_window_extent())
    assert report._unique('prior_x', {'prior_x'}, Path('runs/seed3')) == 'prior_x_seed3'


def test_a_fall_back_to_the_previous_checkpoint_says_only_that(tmp_path):
    import torch
    from core.checkpoint import KEYS, latest_good_checkpoint
    (tmp_path / 'checkpoint.pt').write_bytes(b'torn')
    torch.save(dict.fromkeys(KEYS), tmp_path / 'checkpoint.prev.pt')
    warnings = []
    assert latest_good_checkpoint(tmp_path, warn=warnings.append) == dict.fromkeys(KEYS)
    assert warnings == [f'warning: cannot read checkpoint {tmp_path / "checkpoint.pt"} (UnpicklingError); '
                        f'falling back to {tmp_path / "checkpoint.prev.pt"}']


def test_the_demo_shows_progress_as_soon_as_there_is_any(tmp_path, monkeypatch):
    """A run that has logged step 3 of 40 shows as 3/40 with the time left, on the demo's first line
    of progress (it used to show 0/4800 until its 15-second tick); the runs end, the demo returns."""
    import io
    import threading
    import time
    from tools import demo
    release = tmp_path / 'release'

    def fake_run(job, out):  # a run that logs step 3, then waits to be released and finishes
        output = demo.run_dir(out, *job).with_suffix('.out')
        output.parent.mkdir(parents=True, exist_ok=True)
        script = (f'import pathlib, time\np = pathlib.Path({str(output)!r})\np.write_text("+ train.py\\nstep 3/40 '
                  f'loss 1.0 0.10 steps/s\\n")\nwhile not pathlib.Path({str(release)!r}).exists(): time.sleep(0.05)\n')
        log = open(output.with_suffix('.err'), 'w')
        return subprocess.Popen([sys.executable, '-c', script], stdout=log, stderr=log), log

    monkeypatch.setattr(demo, 'launch', fake_run)
    monkeypatch.setattr(demo, 'launcher_steps', lambda method, setting: 40)
    shown = io.StringIO()
    monkeypatch.setattr(sys, 'stdout', shown)
    worker = threading.Thread(target=demo.run_all, args=([(0, 'consistent', 'SimPro')], tmp_path, 1))
    worker.start()
    deadline = time.time() + 600  # (waits for the line, not for a guessed time)
    while 'steps' not in shown.getvalue() and worker.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    release.touch()
    worker.join()
    first = shown.getvalue().splitlines()[0]
    assert first.startswith('3/40 steps, about ') and first.endswith(' left')


def test_a_launchers_extra_argument_replaces_the_tables_own(tmp_path):
    """`bash sh/SimPro.sh digits 0 --seed 3 --lr=0.5 --no-use-ema`: each flag once in the command
    shown and run, where it was given last (the demo's and the sweep's --seed used to follow the
    launcher's --seed 0)."""
    argv = launcher('digits', '0', '--seed', '3', '--lr=0.5', '--no-use-ema', '--use-ema').stdout.splitlines()
    names = [a.split('=')[0].removeprefix('--').removeprefix('no-') for a in argv if a.startswith('--')]
    assert len(names) == len(set(names)) and argv[-4:] == ['--seed', '3', '--lr=0.5', '--use-ema']
    echo = tmp_path / 'echo'
    echo.write_text('#!/bin/sh\necho "$@"\n')
    echo.chmod(0o755)
    shown = subprocess.run(['bash', 'sh/SimPro.sh', 'digits', '0', '--seed', '3'], cwd=ROOT, capture_output=True,
                           text=True, env={'PATH': os.environ['PATH'], 'PYTHON': str(echo)}).stdout.splitlines()
    assert shown[0].startswith(f'+ {echo} train.py ') and shown[1] == shown[0][len(f'+ {echo} '):]  # (shown = run)
    assert shown[0].count('--seed') == 1 and shown[0].endswith('--seed 3')


@pytest.mark.parametrize('environment,message', [
    ({'NODE_RANK': '1'}, 'NODE_RANK=1 is not allowed; use a whole number from 0 to NNODES - 1 = 0'),
    ({'NODE_RANK': '2', 'NNODES': '2'}, 'NODE_RANK=2 is not allowed; use a whole number from 0 to NNODES - 1 = 1'),
    ({'MASTER_PORT': '0'}, 'MASTER_PORT=0 is not allowed; use a port from 1 to 65535'),
    ({'MASTER_PORT': '65536'}, 'MASTER_PORT=65536 is not allowed; use a port from 1 to 65535'),
    ({'MASTER_PORT': 'http'}, 'MASTER_PORT=http is not allowed; use a port from 1 to 65535')])
def test_a_launchers_rank_or_port_that_cannot_work_is_one_line(environment, message):
    result = launcher('digits', '0', PRINT_ARGS='', **environment)
    assert (result.returncode, result.stdout, result.stderr) == (2, '', f'error: {message}\n')


@pytest.mark.parametrize('environment,message', [
    ({'WORLD_SIZE': 'two'}, 'WORLD_SIZE=two is not a whole number; unset it, or start the processes with torchrun'),
    ({'LOCAL_RANK': '-1'}, 'LOCAL_RANK=-1 is not a whole number'),
    ({'WORLD_SIZE': '0'}, 'WORLD_SIZE=0 is not allowed; it must be at least 1 (torchrun sets it)'),
    ({'WORLD_SIZE': '2', 'RANK': '2', 'MASTER_ADDR': 'localhost', 'MASTER_PORT': '29500'},
     'RANK=2 is not allowed; it must be below WORLD_SIZE=2'),
    ({'WORLD_SIZE': '2', 'LOCAL_WORLD_SIZE': '2', 'LOCAL_RANK': '3', 'RANK': '1', 'MASTER_ADDR': 'localhost',
      'MASTER_PORT': '29500'}, 'LOCAL_RANK=3 is not allowed; it must be below LOCAL_WORLD_SIZE=2'),
    ({'MASTER_PORT': '70000'}, 'MASTER_PORT=70000 is not allowed; it must be a port from 1 to 65535'),
    ({'WORLD_SIZE': '2'}, 'WORLD_SIZE=2 without RANK, MASTER_ADDR, MASTER_PORT: this process cannot find the others')])
def test_torchruns_variables_that_cannot_form_a_group_are_one_line(capsys, monkeypatch, tmp_path, environment,
                                                                  message):
    """Before any data is read (there is none here), not as a wait for processes that never come."""
    for name in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert train.main(['--data-dir', str(tmp_path), '--dry-run']) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {message}') and err.count('\n') == 1


def test_a_slow_run_shows_a_step_at_least_every_few_seconds(small_cifar10_root, tmp_path, monkeypatch, capsys):
    """Without a terminal a line is due every eval_step // 5 steps, and also once Progress.SECONDS have
    passed since the last (here 0: every step), so a slow machine is never silent for long."""
    from core.run_log import Progress
    from test_resume import run as tiny_run
    monkeypatch.setattr(Progress, 'SECONDS', 0)
    assert tiny_run(small_cifar10_root, tmp_path / 'run', '--no-progress') == 0
    steps = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith('step ')]
    assert steps == [f'{step}/6' for step in range(1, 7)]
