"""Exact resume: a run interrupted after a checkpoint and resumed ends exactly like one done in one go."""
import json

import pytest
import torch

from core import checkpoint

import methods
import train

BASE = ['--num-max', 20, '--num-max-u', 30, '--imb-ratio-label', 10, '--imb-ratio-unlabel', 10,
        '--flag-reverse-LT', 1, '--total-steps', 6, '--eval-step', 2, '--batch-size', 4, '--mu', 2,
        '--num-workers', 0, '--lr', 0.1, '--threshold', 0.3, '--ema-u', 0.5, '--device', 'cpu', '--no-progress',
        '--depth', 10, '--widen-factor', 1]  # a WRN-10-1: what these tests prove does not need a WRN-28-2


def own_flags(argv) -> list:
    """`argv` (as strings) without the `--flag value` pairs of flags its --version does not read
    (BASE sets SimPro's --ema-u; tests of every method pass ACR's --est-epoch): train.py refuses them."""
    argv = list(map(str, argv))
    version = argv[len(argv) - 1 - argv[::-1].index('--version') + 1] if '--version' in argv else 'SimPro'
    foreign = {f'--{dest.replace("_", "-")}' for dest in methods.foreign_settings(version)}
    kept, i = [], 0
    while i < len(argv):
        if argv[i] in foreign:
            i += 2
            continue
        kept.append(argv[i])
        i += 1
    return kept


class Interrupted(Exception):
    pass


def crash_after_checkpoint(monkeypatch, step):
    """Until monkeypatch.undo(): the process dies (Interrupted) right after writing the
    checkpoint.pt of `step`."""
    save = checkpoint.save_checkpoint

    def save_then_crash(state, path, **kwargs):
        save(state, path, **kwargs)
        if state['step'] == step and path.name == 'checkpoint.pt':
            raise Interrupted

    monkeypatch.setattr(train, 'save_checkpoint', save_then_crash)


def run(data_dir, out, *extra):
    return train.main(own_flags([*BASE, '--data-dir', data_dir, '--out', out, *extra]))


def final_state(out):
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    for r in records:
        r.pop('seconds')
    return records, torch.load(out / 'checkpoint.pt', weights_only=False)


def interrupted_equals_whole(root, tmp_path, monkeypatch, extra, step: int):
    """Train `extra` in one go (tmp_path/whole), and interrupted after its checkpoint of `step` then resumed
    (tmp_path/split); assert both end with the same metrics, weights, EMA and method state. Returns each
    one's (metrics, last checkpoint): (whole, whole_ckpt, split, split_ckpt)."""
    assert run(root, tmp_path / 'whole', *extra) == 0
    crash_after_checkpoint(monkeypatch, step=step)
    with pytest.raises(Interrupted):
        run(root, tmp_path / 'split', *extra)
    monkeypatch.undo()
    assert run(root, tmp_path / 'split', *extra, '--resume', 'auto') == 0
    (whole, whole_ckpt), (split, split_ckpt) = final_state(tmp_path / 'whole'), final_state(tmp_path / 'split')
    assert split == whole
    for key in ('model', 'ema', 'method'):
        for name, tensor in whole_ckpt[key].items():
            assert torch.equal(tensor, split_ckpt[key][name]), (key, name)
    return whole, whole_ckpt, split, split_ckpt


@pytest.mark.slow
@pytest.mark.parametrize('method', ['SimPro', 'ACR_d', 'ACR', 'DASO', 'CCL', 'CCL --aug gpu', 'CoSSL', 'DARP',
                                    'BOAT', 'CPE', 'MetaExpert'])
def test_resumed_run_equals_uninterrupted_run(small_cifar10_root, tmp_path, monkeypatch, method):
    method, *path = method.split()
    extra = ['--version', method, '--est-epoch', 0, *path] + (['--upbatch', 1] if method == 'CCL' else [])
    if method == 'DASO':  # blending and alignment from step 2 on, a new pseudo-label window every 2 steps
        extra = ['--version', method, '--pretrain-steps', 1, '--pl-dist-update-period', 2, '--lr-schedule', 'constant',
                 '--wdecay-all', '--ema-warmup']
    if method == 'CoSSL':  # co-learning from step 2 (the checkpoint resumed from), after a 2-step warm-up
        extra = ['--version', method, '--cossl-start', 2, '--tfe-warmup-steps', 2]
    if method == 'DARP':  # a refinement of the pool at steps 2, 4 and 6, after a warm-up of 1 step
        extra = ['--version', method, '--darp-warmup-ratio', 0.2, '--darp-period', 2]
    whole, whole_ckpt, split, split_ckpt = interrupted_equals_whole(small_cifar10_root, tmp_path, monkeypatch, extra,
                                                                    step=2)
    assert [r['step'] for r in split] == [2, 4, 6]  # metrics appended, nothing lost or repeated
    assert split_ckpt['history'] == whole_ckpt['history']
    log = (tmp_path / 'split' / 'log.txt').read_text()
    assert 'resuming at step 2' in log and log.count('epoch 1 step 2') == 1
    if method in ('SimPro', 'ACR', 'BOAT'):  # the prior moved, so the test compares something that changes
        assert whole[-1]['pi_u'] != whole[0]['pi_u']
    if method == 'DASO':
        assert whole[-1]['pi_u'] != whole[0]['pi_u'] and all(r['loss_align'] > 0 for r in whole)
    if method == 'ACR':  # and tau1: 2/3 for epoch 1 (nothing estimated in epoch 0), then from the estimate
        assert whole[0]['tau1'] == pytest.approx(2 / 3) and whole[1]['tau1'] != whole[0]['tau1']
    if method == 'BOAT':  # (and its scores, which the official code does not save)
        assert whole[-1]['confm'] != whole[0]['confm'] and whole[-1]['simm'] != whole[0]['simm']


def test_resume_auto_starts_fresh_without_checkpoint(small_cifar10_root, tmp_path, capsys):
    assert run(small_cifar10_root, tmp_path, '--resume', 'auto', '--total-steps', 2) == 0
    assert 'starting' in (tmp_path / 'log.txt').read_text()


def test_existing_run_is_never_overwritten(small_cifar10_root, tmp_path, capsys):
    assert run(small_cifar10_root, tmp_path, '--total-steps', 2) == 0
    before = (tmp_path / 'checkpoint.pt').read_bytes()
    capsys.readouterr()
    assert run(small_cifar10_root, tmp_path, '--total-steps', 2) == 2
    assert 'already holds a run; pass --resume auto' in capsys.readouterr().err
    assert run(small_cifar10_root, tmp_path, '--total-steps', 4, '--resume', 'auto') == 2
    assert '--total-steps 2 (now 4)' in capsys.readouterr().err
    assert (tmp_path / 'checkpoint.pt').read_bytes() == before


def test_resume_errors(small_cifar10_root, tmp_path, capsys):
    assert run(small_cifar10_root, tmp_path / 'a', '--resume', tmp_path / 'nothing') == 2
    assert 'no checkpoint there' in capsys.readouterr().err
    (tmp_path / 'bad.pt').write_bytes(b'not a checkpoint')
    assert run(small_cifar10_root, tmp_path / 'a', '--resume', tmp_path / 'bad.pt') == 2
    assert f'cannot read checkpoint {tmp_path / "bad.pt"}' in capsys.readouterr().err


@pytest.mark.slow
def test_runs_under_torchrun_with_one_process(small_cifar10_root, tmp_path):
    import subprocess
    import sys
    from conftest import HANG_LIMIT, ROOT
    result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '1', 'train.py',
                             *map(str, BASE), '--total-steps', '2', '--data-dir', str(small_cifar10_root),
                             '--out', str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=HANG_LIMIT)
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / 'metrics.jsonl').read_text().splitlines()) == 1


def test_loader_workers_do_not_change_the_run(small_cifar10_root, tmp_path):
    """Each sample's augmentation is seeded from its key, so workers change nothing."""
    assert run(small_cifar10_root, tmp_path / 'w0', '--total-steps', 4) == 0
    assert run(small_cifar10_root, tmp_path / 'w2', '--total-steps', 4, '--num-workers', 2) == 0
    assert final_state(tmp_path / 'w0')[0] == final_state(tmp_path / 'w2')[0]


def test_tensorboard_gets_the_same_scalars(small_cifar10_root, tmp_path):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    assert run(small_cifar10_root, tmp_path, '--total-steps', 4, '--tensorboard') == 0
    records = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    events = EventAccumulator(str(tmp_path / 'tensorboard')).Reload()
    top1 = events.Scalars('test/top1')
    assert [e.step for e in top1] == [2, 4]
    assert [e.value for e in top1] == pytest.approx([r['top1'] for r in records])
    assert [e.value for e in events.Scalars('pi_u/class_3')] == pytest.approx([r['pi_u'][3] for r in records])
    assert events.Scalars('group_acc/few')[-1].value == pytest.approx(records[-1]['group_acc']['few'])
    assert 'pi_u' in events.Tags()['histograms']
    assert 'train/loss' in events.Tags()['scalars'] and 'train/top1' not in events.Tags()['scalars']


def test_tensorboard_missing_is_one_clear_line(small_cifar10_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__('sys').modules, 'torch.utils.tensorboard', None)
    assert run(small_cifar10_root, tmp_path, '--total-steps', 2, '--tensorboard') == 2
    assert capsys.readouterr().err.strip() == ('error: --tensorboard needs the tensorboard package: '
                                               'pip install tensorboard')
