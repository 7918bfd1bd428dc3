"""Several processes, preemption and failures: torchrun with gloo, SIGKILL and SIGTERM at random
steps, corrupt checkpoints, non-finite losses, unwritable outputs."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import HANG_LIMIT, ROOT
from test_resume import BASE, final_state, own_flags, run

FAKE_TEST_IMAGES = 50  # small_cifar10_root: 5 per class


def train_command(data_root, out, *extra):
    return [sys.executable, 'train.py', *own_flags([*BASE, '--data-dir', data_root, '--out', out, *extra])]


@pytest.mark.slow
@pytest.mark.parametrize('aug', ['cpu', 'gpu'])
def test_two_processes_share_priors_and_evaluate_the_whole_test_set(small_cifar10_root, tmp_path, aug):
    out = tmp_path / 'ddp'
    env = {**os.environ, 'PROBE_OUT': str(tmp_path), 'OMP_NUM_THREADS': '1'}
    args = train_command(small_cifar10_root, out, '--aug', aug)[2:]
    result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                             '--master_port', str(random.randint(20000, 40000)), 'tests/ddp_probe.py', *args],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=HANG_LIMIT)
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = [json.loads((tmp_path / f'priors_rank{r}.json').read_text()) for r in (0, 1)]
    assert len(ranks[0]) == 3 and ranks[0] == ranks[1]  # bit-identical priors after every update
    assert ranks[0][-1]['pi_u'] != ranks[0][0]['pi_u']  # and they moved
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in records] == [2, 4, 6]  # one line per evaluation, not one per process
    assert all(r['evaluated'] == FAKE_TEST_IMAGES for r in records)
    assert (out / 'log.txt').read_text().count('epoch 1 step 2') == 1
    assert 'x 2' in (out / 'log.txt').read_text()


@pytest.mark.slow
@pytest.mark.parametrize('version,extra,moving', [
    ('ACR', ('--est-epoch', 0), ('estimate.u', 'estimate.kl_sum', 'adjust_1')),
    ('DASO', ('--pretrain-steps', 1, '--pl-dist-update-period', 2), ('queue', 'prototypes', 'pl_dist')),
    ('CCL', ('--est-epoch', 0, '--upbatch', 1, '--aug', 'gpu'), ('p_all', 'batch')),  # CCL on the tensor path
    ('BOAT', (), ('qhat', 'qbal', 'confm', 'simm')),
    ('CPE', (), ()),  # (its state is its fixed adjustments: the run under DDP with its branches is what is tested)
    ('MetaExpert', ('--est-epoch', 0), ('epoch', 'fusing'))])
def test_two_processes_hold_the_same_method_state_after_every_step(small_cifar10_root, tmp_path, version, extra,
                                                                    moving):
    """ACR's per-step estimate, DASO's queue and pseudo-label window, CCL's and BOAT's estimates and
    Meta-Expert's count see the global batch, so every buffer is bit-identical on both processes after
    every step."""
    env = {**os.environ, 'PROBE_OUT': str(tmp_path), 'OMP_NUM_THREADS': '1'}
    args = train_command(small_cifar10_root, tmp_path / 'ddp', '--version', version, '--depth', 10,
                         '--widen-factor', 1, *extra)[2:]
    result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                             '--master_port', str(random.randint(20000, 40000)), 'tests/ddp_probe.py', *args],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=HANG_LIMIT)
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = [json.loads((tmp_path / f'method_rank{r}.json').read_text()) for r in (0, 1)]
    assert len(ranks[0]) == 6 and ranks[0] == ranks[1]
    for name in moving:  # and the state moved
        assert len({state[name] for state in ranks[0]}) > 1, name


def kill_when(process, condition, timeout=HANG_LIMIT):
    """SIGKILL the process as soon as `condition()` holds (or it ends)."""
    deadline = time.time() + timeout
    while process.poll() is None and time.time() < deadline:
        if condition():
            process.kill()
            break
        time.sleep(0.002)
    process.wait()


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume_auto_ends_like_an_uninterrupted_run(small_cifar10_root, tmp_path):
    extra = ['--total-steps', 16, '--eval-step', 2]
    assert run(small_cifar10_root, tmp_path / 'whole', *extra) == 0
    out = tmp_path / 'killed'
    command = train_command(small_cifar10_root, out, *extra, '--resume', 'auto')
    rng = random.Random(0)
    kills, mid_write = 0, False
    while kills < 6:
        output = tmp_path / f'attempt{kills}.txt'
        with open(output, 'w') as sink:
            process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
            if kills == 2:  # during a checkpoint write: while its temporary file exists
                kill_when(process, lambda: (out / 'checkpoint.pt.tmp').exists())
                mid_write = process.returncode == -signal.SIGKILL
            else:  # after a random number of training steps (a line per step here)
                steps = rng.randint(1, 5)
                kill_when(process, lambda: output.read_text().count('\nstep ') >= steps)
        assert process.returncode in (0, -signal.SIGKILL), output.read_text()
        if process.returncode == 0:
            break  # it finished before the kill
        kills += 1
    assert kills >= 5 and mid_write
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    whole, whole_ckpt = final_state(tmp_path / 'whole')
    killed, killed_ckpt = final_state(out)
    assert killed == whole  # one line per evaluation: those of epochs redone after a kill were replaced
    for key in ('method', 'model'):
        for name, tensor in whole_ckpt[key].items():
            assert torch.equal(tensor, killed_ckpt[key][name]), name


@pytest.mark.slow
def test_sigterm_saves_mid_epoch_and_resume_is_exact(small_cifar10_root, tmp_path):
    extra = ['--total-steps', 12, '--eval-step', 4]
    assert run(small_cifar10_root, tmp_path / 'whole', *extra) == 0
    out = tmp_path / 'term'
    command = train_command(small_cifar10_root, out, *extra)
    command[1] = 'tests/signal_probe.py'  # train.py's main, sending itself SIGTERM during step 5: never in an
    process = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=HANG_LIMIT,  # evaluation,
                             env={**os.environ, 'PROBE_SIGNAL': '5'})  # whatever the machine's load
    output = process.stdout + process.stderr
    assert process.returncode == 0, output
    assert 'stopped by SIGTERM at step' in output and '--resume auto' in output
    saved = torch.load(out / 'checkpoint.pt', weights_only=False)
    assert saved['step'] % 4 != 0  # saved mid-epoch, with the epoch's E-step sums
    assert saved['method']['prior.S'].sum() > 0
    assert run(small_cifar10_root, out, *extra, '--resume', 'auto') == 0
    assert final_state(out)[0] == final_state(tmp_path / 'whole')[0]


def test_corrupt_checkpoint_falls_back_to_the_previous_one(small_cifar10_root, tmp_path, capsys):
    extra = ['--total-steps', 6, '--eval-step', 2]
    assert run(small_cifar10_root, tmp_path / 'whole', *extra) == 0
    out = tmp_path / 'run'
    assert run(small_cifar10_root, out, *extra, '--total-steps', 6) == 0
    previous_step = torch.load(out / 'checkpoint.prev.pt', weights_only=False)['step']
    assert previous_step == 4
    (out / 'checkpoint.pt').write_bytes((out / 'checkpoint.pt').read_bytes()[:1000])  # truncated
    capsys.readouterr()
    assert run(small_cifar10_root, out, *extra, '--resume', 'auto') == 0
    err = capsys.readouterr().err
    assert 'warning: cannot read checkpoint' in err and 'falling back to' in err and 'checkpoint.prev.pt' in err
    assert final_state(out)[0][-1] == final_state(tmp_path / 'whole')[0][-1]  # epoch 3 redone, identically
    for path in ('checkpoint.pt', 'checkpoint.prev.pt'):
        (out / path).write_bytes(b'garbage')
    assert run(small_cifar10_root, out, *extra, '--resume', 'auto') == 2
    assert 'no earlier checkpoint' in capsys.readouterr().err


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(small_cifar10_root, tmp_path, monkeypatch,
                                                                   capsys):
    import methods
    loss = methods.SimPro.loss
    calls = []

    def poisoned(self, *a):
        total, terms, mask, label = loss(self, *a)
        calls.append(1)
        if len(calls) >= 3:  # from step 3 on, loss_u is NaN
            terms['loss_u'] = terms['loss_u'] * float('nan')
            total = total + terms['loss_u']
        return methods.StepResult(total, terms, mask, label)

    monkeypatch.setattr(methods.SimPro, 'loss', poisoned)
    assert run(small_cifar10_root, tmp_path, '--total-steps', 6, '--eval-step', 2) == 2
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and 'loss, loss_u became non-finite at step 3' in err
    assert str(tmp_path / 'checkpoint.pt') in err
    assert torch.load(tmp_path / 'checkpoint.pt', weights_only=False)['step'] == 2  # not overwritten
    assert len((tmp_path / 'metrics.jsonl').read_text().splitlines()) == 1


def test_unwritable_output_is_one_clear_line(small_cifar10_root, tmp_path, capsys):
    blocker = tmp_path / 'file'
    blocker.write_text('not a directory')
    assert run(small_cifar10_root, blocker / 'run') == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f'error: cannot write to --out {blocker / "run"}') and '\n' not in err


def test_disk_full_never_replaces_a_good_checkpoint(small_cifar10_root, tmp_path, monkeypatch, capsys):
    real_save, saved = torch.save, []

    def disk_full_after_the_first_checkpoints(obj, f, *a, **k):
        if len(saved) >= 2:  # checkpoint.pt and best.pt of step 2 fit, then the disk is full
            f.write(b'partial')
            raise OSError(28, 'No space left on device')
        saved.append(obj['step'])
        real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, 'save', disk_full_after_the_first_checkpoints)
    assert run(small_cifar10_root, tmp_path, '--total-steps', 4, '--eval-step', 2) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'cannot write checkpoint' in err and 'No space left on device' in err
    assert 'intact' in err
    monkeypatch.setattr(torch, 'save', real_save)
    assert torch.load(tmp_path / 'checkpoint.pt', weights_only=False)['step'] == 2  # the good one survived
    assert not (tmp_path / 'checkpoint.pt.tmp').exists()
    assert run(small_cifar10_root, tmp_path, '--total-steps', 4, '--eval-step', 2, '--resume', 'auto') == 0
