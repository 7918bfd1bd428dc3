"""A run is never lost, mixed or silently changed: a signal wherever it lands (also at the step of
an evaluation and under two processes), a folder holding another run, other data, a torn metrics
line, a really full disk, two writers at once, signals while nothing can be saved or while stuck."""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch


import train
from conftest import HANG_LIMIT, ROOT
from test_resume import BASE, final_state, own_flags, run
from core.checkpoint import save_checkpoint
from core.run_lock import RunLock
from tools import fake_data
from utils.errors import UserError

TINY = ['--depth', 10, '--widen-factor', 1, '--total-steps', 8, '--eval-step', 4]


def tiny(data_dir, out, *extra):
    return run(data_dir, out, *TINY, *extra)


def command(data_dir, out, *extra, script='train.py'):
    return [sys.executable, script, *own_flags([*BASE, *TINY, '--data-dir', data_dir, '--out', out, *extra])]


@pytest.fixture(scope='module')
def whole_runs(small_cifar10_root, tmp_path_factory):
    """Uninterrupted runs, per method, to compare against."""
    root, done = tmp_path_factory.mktemp('whole'), {}

    def whole(method):
        if method not in done:
            assert tiny(small_cifar10_root, root / method, '--version', method, '--est-epoch', 0) == 0
            done[method] = final_state(root / method)
        return done[method]
    return whole


def signal_during(monkeypatch, name, call):
    """SIGTERM to this process during the `call`-th call of train.<name> (a training step or an evaluation)."""
    real, calls = getattr(train, name), []

    def with_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(train, name, with_signal)


def assert_same_run(state, whole):
    (records, checkpoint), (whole_records, whole_checkpoint) = state, whole
    assert records == whole_records  # every metric of every epoch, the priors pi_u among them
    for key in ('model', 'ema', 'method'):  # the method's state: the priors and the E-step sums
        for name, tensor in whole_checkpoint[key].items():
            assert torch.equal(tensor, checkpoint[key][name]), (key, name)
    assert checkpoint['history'] == whole_checkpoint['history']


@pytest.mark.parametrize('method, where, call, saved_step', [
    ('SimPro', 'train_step', 4, 4),   # during the step of an evaluation: its prior update and evaluation first
    ('ACR_d', 'train_step', 4, 4),
    ('SimPro', 'train_step', 6, 6),   # mid-epoch: saved with the epoch's E-step sums
    ('SimPro', 'train_step', 5, 5),   # right after an epoch's checkpoint
    ('SimPro', 'evaluate_sets', 2, 4),     # during an evaluation: stops at once, the checkpoint of step 4 stays
    ('SimPro', 'train_step', 1, None),  # in the process's first step (the first batch may hang): at once too
])
def test_a_signal_wherever_it_lands_then_resume_equals_an_uninterrupted_run(small_cifar10_root, tmp_path, monkeypatch,
                                                                          capsys, whole_runs, method, where, call,
                                                                          saved_step):
    extra = ['--version', method, '--est-epoch', 0]
    signal_during(monkeypatch, where, call)
    if where == 'evaluate_sets' or call == 1:
        with pytest.raises(SystemExit) as stopped:
            tiny(small_cifar10_root, tmp_path, *extra)
        assert stopped.value.code == 128 + signal.SIGTERM
        assert 'stopped by SIGTERM outside a training step' in capsys.readouterr().err
    else:
        assert tiny(small_cifar10_root, tmp_path, *extra) == 0
        assert f'stopped by SIGTERM at step {saved_step}; checkpoint saved' in (tmp_path / 'log.txt').read_text()
    if saved_step is None:
        assert not (tmp_path / 'checkpoint.pt').exists()
    else:
        saved = torch.load(tmp_path / 'checkpoint.pt', weights_only=False)
        assert saved['step'] == saved_step
        assert len(saved['history']['top1']) == saved_step // 4  # a stop at an epoch's end evaluated it first
    assert not (tmp_path / 'run.lock').exists()
    monkeypatch.undo()
    assert tiny(small_cifar10_root, tmp_path, *extra, '--resume', 'auto') == 0
    assert_same_run(final_state(tmp_path), whole_runs(method))


def torchrun(args, env, timeout=HANG_LIMIT):
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port',
                           str(random.randint(20000, 40000)), *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.mark.slow
def test_two_processes_stopped_at_the_step_of_an_evaluation_resume_exactly(small_cifar10_root, tmp_path):
    """Two processes agree on a stop every 10 steps: with --eval-step 5, a signal seen at step 10
    lands on an evaluation's step."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    steps = ['--total-steps', 20, '--eval-step', 5]
    whole = torchrun(command(small_cifar10_root, tmp_path / 'whole', *steps)[1:], env)
    assert whole.returncode == 0, whole.stderr[-2000:]
    out = tmp_path / 'stopped'
    stopped = torchrun(command(small_cifar10_root, out, *steps, script='tests/signal_probe.py')[1:],
                       {**env, 'PROBE_SIGNAL': '8'})  # seen at step 10, where the processes agree
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert 'stopped by SIGTERM at step 10' in (out / 'log.txt').read_text()
    assert [json.loads(line)['step'] for line in (out / 'metrics.jsonl').read_text().splitlines()] == [5, 10]
    resumed = torchrun(command(small_cifar10_root, out, *steps, '--resume', 'auto')[1:], env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_run(final_state(out), final_state(tmp_path / 'whole'))


def folder_bytes(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def test_a_folder_holding_another_run_or_other_data_is_refused(small_cifar10_root, tmp_path, capsys):
    a, b = tmp_path / 'a', tmp_path / 'b'
    assert tiny(small_cifar10_root, a, '--total-steps', 4) == 0
    assert tiny(small_cifar10_root, b, '--total-steps', 4, '--lr', 0.05) == 0
    before = folder_bytes(b)
    capsys.readouterr()
    assert tiny(small_cifar10_root, b, '--total-steps', 4, '--resume', a / 'checkpoint.pt') == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and f'--out {b} holds another run, trained with --lr 0.05 (now 0.1)' in err
    assert folder_bytes(b) == before  # nothing written, nothing rotated
    for checkpoint in b.glob('*.pt'):
        checkpoint.unlink()
    assert tiny(small_cifar10_root, b, '--total-steps', 4) == 2  # a fresh start over its args.json
    assert 'holds another run, trained with --lr 0.05 (now 0.1)' in capsys.readouterr().err

    assert tiny(small_cifar10_root, tmp_path / 'c', '--total-steps', 4, '--resume', a) == 0  # an empty folder is fine
    assert json.loads((tmp_path / 'c' / 'args.json').read_text())['out'] == str(tmp_path / 'c')

    moved = tmp_path / 'moved-data'
    shutil.copytree(small_cifar10_root, moved)
    assert tiny(moved, a, '--total-steps', 4, '--resume', 'auto') == 0  # the same data elsewhere
    other = fake_data.write_cifar(tmp_path / 'other-data', 10, 60, 5, seed=1)
    before = folder_bytes(a)
    capsys.readouterr()
    assert tiny(other, a, '--total-steps', 4, '--resume', 'auto') == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and f"--data-dir {other} holds other data than the checkpoint's run" in err
    assert str(small_cifar10_root) in err and 'labels of the split' in err and 'test set' in err
    assert folder_bytes(a) == before


def test_a_torn_last_metrics_line_is_dropped_and_redone(small_cifar10_root, tmp_path, monkeypatch, whole_runs):
    save = save_checkpoint

    class Killed(Exception):
        pass

    def save_then_die(state, path, **kwargs):
        save(state, path, **kwargs)
        if state['step'] == 4 and path.name == 'checkpoint.pt':
            raise Killed

    monkeypatch.setattr(train, 'save_checkpoint', save_then_die)
    with pytest.raises(Killed):
        tiny(small_cifar10_root, tmp_path, '--est-epoch', 0)
    monkeypatch.undo()
    last = json.dumps(whole_runs('SimPro')[0][-1])
    with open(tmp_path / 'metrics.jsonl', 'a') as f:
        f.write(last[:len(last) // 2])  # what a kill while writing step 8's line leaves
    assert tiny(small_cifar10_root, tmp_path, '--est-epoch', 0, '--resume', 'auto') == 0
    assert 'dropped the half-written last line' in (tmp_path / 'log.txt').read_text()
    assert_same_run(final_state(tmp_path), whole_runs('SimPro'))


@pytest.fixture
def small_filesystem(tmp_path):
    """A 16 MiB tmpfs (needs the right to mount: root, outside most containers)."""
    folder = tmp_path / 'tmpfs'
    folder.mkdir()
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f'cannot mount a small filesystem here: {mounted.stderr.strip() or mounted.returncode}')
    yield folder
    subprocess.run(['umount', str(folder)], check=True)


def fill(filesystem, leave=0):
    """Fill `filesystem` up to `leave` bytes: a filler file written until the disk is full, then cut."""
    filler = filesystem / 'filler'
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    with pytest.raises(OSError, match='No space left'):
        while True:
            os.write(fd, b'\0' * 65536)
    os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    os.close(fd)
    return filler


def test_a_really_full_disk_is_one_line_and_keeps_the_good_checkpoint(small_cifar10_root, small_filesystem,
                                                                      monkeypatch, capsys):
    out, save = small_filesystem / 'run', save_checkpoint

    def fill_the_disk_then_save(state, path, **kwargs):
        if path.name == 'best.pt':  # of step 4, right after its checkpoint.pt: room for half of it
            fill(small_filesystem, leave=(out / 'checkpoint.pt').stat().st_size // 2)
        save(state, path, **kwargs)

    monkeypatch.setattr(train, 'save_checkpoint', fill_the_disk_then_save)
    assert tiny(small_cifar10_root, out) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'cannot write checkpoint' in err and 'No space left on device' in err
    assert 'intact' in err
    assert not list(out.glob('*.tmp')) and not (out / 'run.lock').exists()
    good = (out / 'checkpoint.pt').read_bytes()
    state = torch.load(out / 'checkpoint.pt', weights_only=False)
    assert state['step'] == 4  # the good one loads
    # torch.save reports a full disk as a RuntimeError or an OSError, depending on where the disk
    # fills up: the same line, wherever that is
    for eighth in range(8):
        (small_filesystem / 'filler').unlink()
        fill(small_filesystem, leave=len(good) * eighth // 8)
        with pytest.raises(UserError, match='No space left on device.*intact'):
            save_checkpoint(state, out / 'checkpoint.pt', keep_previous=True)
        assert (out / 'checkpoint.pt').read_bytes() == good and not list(out.glob('*.tmp'))
    monkeypatch.undo()
    (small_filesystem / 'filler').unlink()
    assert tiny(small_cifar10_root, out, '--resume', 'auto') == 0


def test_a_second_writer_is_refused_and_a_dead_ones_lock_taken_over(small_cifar10_root, tmp_path, capsys):
    out = tmp_path / 'run'
    out.mkdir()
    other = subprocess.Popen(['sleep', '60'])
    lock = json.dumps({'pid': other.pid, 'host': socket.gethostname()})
    (out / 'run.lock').write_text(lock)
    try:
        assert tiny(small_cifar10_root, out, '--total-steps', 4) == 2
    finally:
        other.kill()
        other.wait()
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and f'{out} is in use by process {other.pid} on {socket.gethostname()}' in err
    assert folder_bytes(out) == {out.joinpath('run.lock').relative_to(out): lock.encode()}  # nothing else written
    (out / 'run.lock').write_text(json.dumps({'pid': 1, 'host': 'another-host'}))
    assert tiny(small_cifar10_root, out, '--total-steps', 4) == 2  # cannot tell whether it runs: refused
    assert 'in use by process 1 on another-host' in capsys.readouterr().err
    (out / 'run.lock').write_text(lock)  # that process is dead now
    assert tiny(small_cifar10_root, out, '--total-steps', 4) == 0
    assert f'warning: taking over {out / "run.lock"} from process {other.pid}' in capsys.readouterr().err
    assert not (out / 'run.lock').exists()  # released at the end


def test_a_dead_lock_taken_over_by_another_process_first_is_left_to_it(tmp_path):
    """Two processes find the same dead process's lock; the other one replaces it with its own
    just before this one removes it. This one must then see a live lock and be refused, not delete it."""
    out = tmp_path / 'run'
    out.mkdir()
    dead = subprocess.Popen(['true'])
    dead.wait()
    (out / 'run.lock').write_text(json.dumps({'pid': dead.pid, 'host': socket.gethostname()}))
    other = subprocess.Popen(['sleep', '60'])  # the process that takes the lock over first
    live = json.dumps({'pid': other.pid, 'host': socket.gethostname()})
    lock = RunLock(out)
    real_alive = lock._alive

    def other_takes_over_after_we_looked(pid):
        if pid == dead.pid and (out / 'run.lock').read_text() != live:
            (out / 'run.lock').write_text(live)
            return False
        return real_alive(pid)

    lock._alive = other_takes_over_after_we_looked
    try:
        with pytest.raises(UserError, match=f'in use by process {other.pid}'):
            with lock:
                pass
    finally:
        other.kill()
        other.wait()
    assert (out / 'run.lock').read_text() == live


def start(cmd, fifo, env=None):
    """Start `cmd`, and return it once it reads the FIFO `fifo` (it then hangs: nothing is written)."""
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})})
    deadline = time.time() + 300
    while time.time() < deadline:
        try:  # succeeds once the process has the FIFO open for reading
            return process, os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
    process.kill()
    pytest.fail('the process never read the FIFO')


def ends(process):
    """Wait for a process stuck on a FIFO nobody writes to: only a signal can end it (HANG_LIMIT
    bounds a process that ignored the signal, which would otherwise wait forever)."""
    try:
        process.wait(timeout=HANG_LIMIT)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f'still running {HANG_LIMIT} s after the signal')


def wait_for_line(path, line):
    """Wait until the file `path` holds `line` (written by the process under test)."""
    deadline = time.time() + HANG_LIMIT
    while not (path.exists() and line in path.read_text().splitlines()):
        assert time.time() < deadline, f'{path} never got {line!r}'
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_split_is_read_ends_the_process_in_one_line(small_cifar10_root, tmp_path, sig):
    fifo, out = tmp_path / 'fifo', tmp_path / 'run'
    os.mkfifo(fifo)
    process, writer = start(command(small_cifar10_root, out, script='tests/signal_probe.py'), fifo,
                            {'PROBE_STUCK': 'build_data:1', 'PROBE_FIFO': str(fifo)})  # a data file that never comes
    process.send_signal(sig)
    ends(process)
    os.close(writer)
    err = process.communicate()[1]
    assert process.returncode == 128 + sig and not out.exists()
    assert 'Traceback' not in err and err.strip().splitlines()[-1].startswith(f'stopped by {sig.name} outside')


@pytest.mark.slow
def test_sigterm_during_an_evaluation_ends_the_process_and_keeps_the_checkpoint(small_cifar10_root, tmp_path):
    fifo, out = tmp_path / 'fifo', tmp_path / 'run'
    os.mkfifo(fifo)
    process, writer = start(command(small_cifar10_root, out, script='tests/signal_probe.py'), fifo,
                            {'PROBE_STUCK': 'evaluate_sets:2', 'PROBE_FIFO': str(fifo)})
    process.send_signal(signal.SIGTERM)
    ends(process)
    os.close(writer)
    err = process.communicate()[1]
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1].startswith('stopped by SIGTERM outside a training step')
    assert torch.load(out / 'checkpoint.pt', weights_only=False)['step'] == 4
    assert not (out / 'run.lock').exists()


@pytest.mark.slow
def test_a_second_sigint_ends_a_stuck_process_at_once(small_cifar10_root, tmp_path):
    fifo, out = tmp_path / 'fifo', tmp_path / 'run'
    os.mkfifo(fifo)
    events = tmp_path / 'events'
    process, writer = start(command(small_cifar10_root, out, script='tests/signal_probe.py'), fifo,
                            {'PROBE_STUCK': 'train_step:6', 'PROBE_FIFO': str(fifo),
                             'PROBE_EVENTS': str(events)})  # stuck in step 6
    process.send_signal(signal.SIGINT)  # asks for a stop at the end of the step, which never comes
    wait_for_line(events, 'signal SIGINT')
    assert process.poll() is None
    process.send_signal(signal.SIGINT)
    ends(process)
    os.close(writer)
    assert process.returncode == -signal.SIGINT
    assert torch.load(out / 'checkpoint.pt', weights_only=False)['step'] == 4


def test_a_signal_while_a_checkpoint_is_written_stops_even_when_the_writer_fails_too(tmp_path, monkeypatch):
    """A signal that comes inside torch.save makes its zip writer fail as well ('unexpected pos', a
    RuntimeError raised while the stop is handled): the stop, not that error, reaches the loop (which
    says it in one line, exit 128 + signal); the previous checkpoint stays, no temporary file."""
    import torch
    from core import checkpoint
    from core.stopping import StopNow
    path = tmp_path / 'checkpoint.pt'
    checkpoint.save_checkpoint({'step': 1}, path)

    def interrupted_save(state, f):
        try:
            raise StopNow
        except StopNow:
            raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 502720 vs 502616')

    monkeypatch.setattr(checkpoint.torch, 'save', interrupted_save)
    with pytest.raises(StopNow):
        checkpoint.save_checkpoint({'step': 2}, path, keep_previous=True)
    monkeypatch.undo()
    assert torch.load(path)['step'] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ['checkpoint.pt']
