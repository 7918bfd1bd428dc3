"""FixMatch w/ CReST+ (methods/crest.py; ytaek-oh/daso lib/algorithm/fm_crest.py): the sampling rates, the per-class
selection, the progressive alignment and p_model on hand-made tensors with values computed by hand
(worked out from its formulas); the generation boundary through train.main on both augmentation paths; exact
resume across a boundary; two processes; the launcher."""
import copy
import json
import os
import random
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import train
from conftest import HANG_LIMIT, ROOT
from methods import METHODS
from methods.crest import CReSTPlus, align, select
import test_launchers
import test_speed
from test_launchers import ROWS, assert_row, launch, launched_args
from test_resume import BASE, Interrupted, crash_after_checkpoint, final_state, own_flags
from core.command_line import get_args_parser
from core.stopping import StopSignal
from models import NetworkOutput
from core.training import new_model
from dataset.batches import LoaderBatches

echo_python = test_launchers.echo_python  # the fixture: a python that prints its arguments

CIFAR10_G100 = [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]  # N1 = 500, gamma_l = 100
TINY = ['--depth', 10, '--widen-factor', 1]


def crest(labeled_per_class, pool_size=4, **flags):
    args = SimpleNamespace(threshold=0.95, generations=5, crest_alpha=3.0, da_t_min=0.5, dist_align=True,
                           total_steps=100, seed=0)
    vars(args).update(flags)
    data = SimpleNamespace(labeled_per_class=labeled_per_class, unlabeled_idx=np.arange(pool_size))
    return CReSTPlus(args, data)


def test_sampling_rates_by_hand():
    """rho_k = (n_{C-1-k} / n_0) ** (1/3): the tail keeps all its predictions, the head (5/500) ** (1/3)."""
    rates = crest(CIFAR10_G100).rates
    expected = [0.2154, 0.2520, 0.2962, 0.3583, 0.4236, 0.5040, 0.5981, 0.7101, 0.8425, 1.0]
    assert rates.tolist() == pytest.approx(expected, abs=1e-4)
    assert crest([500] + [100] * 8 + [3]).rates[0].item() == pytest.approx(0.1817, abs=1e-4)  # gamma_l = 150


def test_selection_counts_by_hand():
    """10,000 pool images predicted as class 0 at gamma 100: the 2,154 most confident are kept."""
    confidence = torch.rand(10000, generator=torch.Generator().manual_seed(0))
    chosen = select(confidence, torch.zeros(10000, dtype=torch.long), crest(CIFAR10_G100).rates)
    assert (chosen == 0).sum() == 2154 and (chosen == -1).sum() == 10000 - 2154
    assert confidence[chosen == 0].min() > confidence[chosen == -1].max()
    # counts 10, 4, 1: rates (1/10) ** (1/3) = 0.464, (4/10) ** (1/3) = 0.737, 1
    confidence = torch.tensor([.9, .5, .7, .6, .99, .8, .6, .7, .8, .9, .4, .3])
    label = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    chosen = select(confidence, label, crest([10, 4, 1]).rates)
    # class 0: int(0.464 * 6) = 2 of .9 .5 .7 .6 .99 .8; class 1: int(0.737 * 4) = 2 of .6 .7 .8 .9; class 2: both
    assert chosen.tolist() == [0, -1, -1, -1, 0, -1, -1, -1, 1, 1, 2, 2]


def test_alignment_by_hand():
    p, p_l, p_model = torch.tensor([[.5, .3, .2]]), torch.tensor([.6, .3, .1]), torch.tensor([.7, .2, .1])
    assert align(p, p_l, p_model)[0].tolist() == pytest.approx([0.3974, 0.4172, 0.1854], abs=1e-4)
    pi = torch.tensor([0.4727, 0.3343, 0.1930])  # p_l ** 0.5, normalised
    assert align(p, pi, p_model)[0].tolist() == pytest.approx([0.2756, 0.4093, 0.3151], abs=1e-4)


@pytest.mark.parametrize('generation,temperature,expected', [(0, 1.0, [0.3974, 0.4172, 0.1854]),
                                                             (4, 0.5, [0.2756, 0.4093, 0.3151])])
def test_pseudo_distribution_aligns_with_the_generation_temperature(generation, temperature, expected):
    """p_model includes the current batch: one earlier batch mean [.9, .1, 0] and the batch [.5, .3, .2]
    pool to [.7, .2, .1]; the target is p_l = [.6, .3, .1] ** t_g, t = 1 in the first generation, 0.5 in
    the fifth (of 5)."""
    method = crest([6, 3, 1])
    method.queue[0] = torch.tensor([.9, .1, 0.])
    method.queued.fill_(1)
    method.generation.fill_(generation)
    method.temperature.fill_(temperature)
    aligned = method.pseudo_distribution(torch.tensor([.5, .3, .2]).log()[None])
    assert aligned[0].tolist() == pytest.approx(expected, abs=1e-4)
    assert method.unlabeled_prior().tolist() == pytest.approx([.7, .2, .1])
    plain = crest([6, 3, 1], dist_align=False).pseudo_distribution(torch.tensor([.5, .3, .2]).log()[None])
    assert plain[0].tolist() == pytest.approx([.5, .3, .2])  # --no-dist-align (STL-10): FixMatch's


def test_p_model_pools_the_last_128_batches():
    method = crest([6, 3, 1])
    method.push(torch.tensor([[1., 0, 0], [0, 1, 0]]))
    method.push(torch.tensor([[.5, .5, 0], [0, 0, 1]]))
    p_model = method.push(torch.tensor([[0., 0, 1], [0, 0, 1]]))  # current batch included
    assert p_model.tolist() == pytest.approx([0.25, 0.25, 0.5])  # (1.5, 1.5, 3) / 6 rows
    method = crest([6, 3, 1])
    for _ in range(128):
        method.push(torch.tensor([[1., 0, 0]]))
    p_model = method.push(torch.tensor([[0., 1, 0]]))
    p_model = method.push(torch.tensor([[0., 1, 0]]))  # the two oldest batches have left
    assert p_model.tolist() == pytest.approx([126 / 128, 2 / 128, 0])


def test_temperatures_of_the_generations():
    """t_g = 1, 0.875, 0.75, 0.625, 0.5 over 5 generations, one step each here."""
    method = crest([6, 3, 1], pool_size=3, total_steps=5)
    assert method.generation_starts == (1, 2, 3, 4) and method.temperature.item() == 1.0
    model = Lookup(torch.eye(3))
    data = SimpleNamespace(images=np.arange(3, dtype=np.uint8).repeat(12).reshape(3, 2, 2, 3),
                           unlabeled_idx=np.arange(3), mean=(0, 0, 0), std=(1, 1, 1))
    temperatures = []
    for _ in range(4):
        method.start_generation(model, data, torch.device('cpu'))
        temperatures.append(method.temperature.item())
    assert temperatures == [0.875, 0.75, 0.625, 0.5] and method.generation.item() == 4
    # 13 steps in 5 generations: 2 steps each, the last runs 5 (the remainder)
    assert crest([6, 3, 1], total_steps=13).generation_starts == (2, 4, 6, 8)


class Lookup(torch.nn.Module):
    """A 'network' whose logits for an image are row v of a table, v its (un-normalised) pixel value;
    it records whether it ran in eval mode."""

    def __init__(self, table):
        super().__init__()
        self.table, self.modes = table, []

    def forward(self, x):
        self.modes.append(self.training)
        return NetworkOutput(self.table[(x[:, 0, 0, 0] * 255).round().long()])


def test_start_generation_selects_from_eval_mode_predictions_on_plain_images():
    """Pool of 7 images whose 'network' logits are given; counts 10, 4, 1: class 0 predicted 4 times
    (rate 0.464: int(1.86) = 1 kept, the most confident), class 1 twice (rate 0.737: 1 kept), class 2
    once (kept). The selection replaces the previous one."""
    logits = torch.tensor([[2., 0, 0], [5., 0, 0], [0, 3., 0], [1., 0, 0], [0, 0, 1.], [0, 1., 0], [4., 0, 0]])
    pixels = np.array([10, 11, 12, 13, 14, 15, 16], dtype=np.uint8)
    data = SimpleNamespace(images=pixels.repeat(12).reshape(7, 2, 2, 3), unlabeled_idx=np.arange(7),
                           mean=(0, 0, 0), std=(1, 1, 1))
    table = torch.zeros(256, 3)
    table[10:17] = logits
    model = Lookup(table).train()
    method = crest([10, 4, 1], pool_size=7)
    method.pool_pseudo_label.fill_(2)  # a previous selection, which must not survive
    seed = method.start_generation(model, data, torch.device('cpu'))
    assert method.pool_pseudo_label.tolist() == [-1, 0, 1, -1, 2, -1, -1]
    assert model.modes and not any(model.modes) and model.training  # eval mode for the pool, then back
    assert seed != 0 and method.generation.item() == 1


def tiny_run(data_dir, out, *extra):
    return train.main(own_flags([*BASE, *TINY, '--version', 'CReST+', '--data-dir', data_dir, '--out', out, *extra]))


@pytest.mark.parametrize('aug', ['cpu', 'gpu'])
def test_generation_boundary(small_cifar10_root, tmp_path, monkeypatch, aug):
    """Three generations of 4 steps: at steps 4 and 8 the labeled stream becomes the original set plus
    this boundary's selection only (never the previous one), with pseudo labels as targets; the
    network is new, the optimizer has no momentum, the schedule is at step 0, t moves 1 -> 0.75 -> 0.5."""
    boundaries, batches = [], []
    real_next, real_step = train.next_generation, train.train_step

    def spy_next(args, data, run, device):
        before = copy.deepcopy(run.model.state_dict())
        new = real_next(args, data, run, device)
        boundaries.append({'before': before, 'after': copy.deepcopy(new.model.state_dict()),
                           'momentum': new.optimizer.state_dict()['state'], 'schedule': new.scheduler.last_epoch,
                           'lr': new.scheduler.get_last_lr()[0], 'temperature': new.method.temperature.item(),
                           'pseudo': new.method.pool_pseudo_label.clone(), 'data': data})
        return new

    def spy_step(run, pairs, device, args):
        labeled_batch, unlabeled_batch = next(pairs)
        batches.append((labeled_batch[1].clone(), labeled_batch[2].clone(), len(boundaries)))
        return real_step(run, LoaderBatches([labeled_batch], [unlabeled_batch]), device, args)

    monkeypatch.setattr(train, 'next_generation', spy_next)
    monkeypatch.setattr(train, 'train_step', spy_step)
    assert tiny_run(small_cifar10_root, tmp_path, '--total-steps', 12, '--eval-step', 4, '--generations', 3,
                    '--threshold', 0.3, '--aug', aug, '--lr-schedule', 'cosine') == 0
    assert [b['temperature'] for b in boundaries] == [0.75, 0.5]
    data = boundaries[0]['data']
    original = data.labels[data.labeled_idx]
    for b in boundaries:
        assert all(not torch.equal(b['before'][k], b['after'][k]) for k in b['after'] if k.endswith('conv1.weight'))
        assert b['momentum'] == {} and b['schedule'] == 0 and b['lr'] == pytest.approx(0.1)
        assert (b['pseudo'] >= 0).sum() > 0
    assert not torch.equal(boundaries[0]['pseudo'], boundaries[1]['pseudo'])
    for y, positions, generation in batches:
        if generation == 0:
            expected = original[positions.cpu().numpy()]
        else:  # original labels, then the pseudo labels of the selected pool images in pool order
            pseudo = boundaries[generation - 1]['pseudo'].numpy()
            targets = np.concatenate([original, pseudo[pseudo >= 0]])
            assert positions.max() < len(targets)
            expected = targets[positions.cpu().numpy()]
        assert y.cpu().tolist() == expected.tolist()
    added = [p for y, p, g in batches if g and (p >= len(original)).any()]
    assert added  # the stream did draw pseudo-labeled images
    log = (tmp_path / 'log.txt').read_text()
    assert 'step 4: generation 2 of 3' in log and 'step 8: generation 3 of 3' in log


@pytest.mark.parametrize('interruption', ['crash at the boundary step', 'stop right after the boundary'])
def test_resume_across_a_generation_boundary_is_exact(small_cifar10_root, tmp_path, monkeypatch, interruption):
    """Generations of 4 steps. 'crash': the process dies right after the checkpoint of step 4, before
    the boundary (the resumed run makes it). 'stop': a stop request after step 5, one step into
    generation 2 (the checkpoint holds the selection)."""
    extra = ['--total-steps', 12, '--eval-step', 4, '--generations', 3, '--threshold', 0.3, '--lr-schedule',
             'constant', '--wdecay-all', '--ema-warmup']
    assert tiny_run(small_cifar10_root, tmp_path / 'whole', *extra) == 0
    if interruption.startswith('crash'):
        crash_after_checkpoint(monkeypatch, step=4)
        with pytest.raises(Interrupted):
            tiny_run(small_cifar10_root, tmp_path / 'split', *extra)
    else:
        monkeypatch.setattr(StopSignal, 'requested', lambda self, step, device: step == 5)
        assert tiny_run(small_cifar10_root, tmp_path / 'split', *extra) == 0
        assert torch.load(tmp_path / 'split' / 'checkpoint.pt', weights_only=False)['method']['generation'] == 1
    monkeypatch.undo()
    assert tiny_run(small_cifar10_root, tmp_path / 'split', *extra, '--resume', 'auto') == 0
    whole, whole_ckpt = final_state(tmp_path / 'whole')
    split, split_ckpt = final_state(tmp_path / 'split')
    assert split == whole and [r['step'] for r in split] == [4, 8, 12]
    for key in ('model', 'ema', 'method'):
        for name, tensor in whole_ckpt[key].items():
            assert torch.equal(tensor, split_ckpt[key][name]), (key, name)
    assert whole_ckpt['method']['generation'] == 2 and (whole_ckpt['method']['pool_pseudo_label'] >= 0).any()


@pytest.mark.slow
def test_two_processes_hold_the_same_crest_state(small_cifar10_root, tmp_path):
    """Under torchrun (gloo), the pool is predicted in two shards and gathered, and the alignment ring
    holds the global batch means: every buffer is bit-identical on both processes after every step."""
    env = {**os.environ, 'PROBE_OUT': str(tmp_path), 'OMP_NUM_THREADS': '1'}
    args = own_flags([*BASE, *TINY, '--data-dir', small_cifar10_root, '--out', tmp_path / 'ddp', '--version', 'CReST+',
                      '--generations', 3, '--threshold', 0.3])
    result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                             '--master_port', str(random.randint(20000, 40000)), 'tests/ddp_probe.py',
                             *map(str, args)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=HANG_LIMIT)
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = [json.loads((tmp_path / f'method_rank{r}.json').read_text()) for r in (0, 1)]
    assert len(ranks[0]) == 6 and ranks[0] == ranks[1]
    for name in ('queue', 'pool_pseudo_label', 'generation', 'temperature'):  # and the state moved
        assert len({state[name] for state in ranks[0]}) > 1, name
    log = (tmp_path / 'ddp' / 'log.txt').read_text()
    assert log.count('generation 2 of 3') == 1 and log.count('generation 3 of 3') == 1


def test_crest_device_steps_never_read_device_values_back(small_cifar10_root, monkeypatch):
    """The alignment ring, its pooled mean and the target temperature stay on the device (meta here).
    The labeled set is read to the host once per generation, when the batches are made: the original
    one here (a meta tensor has nothing to read)."""
    monkeypatch.setattr(CReSTPlus, 'training_data', lambda self, data: data)
    test_speed.test_device_steps_never_read_device_values_back(small_cifar10_root, 'CReST+')


def test_parameter_count_is_fixmatchs():
    args = get_args_parser().parse_args([])
    args.arch = 'wideresnet'
    counts = {}
    for version in ('FixMatch', 'CReST+'):
        args.version = version
        counts[version] = sum(p.numel() for p in new_model(args, 10).parameters())
    assert counts['CReST+'] == counts['FixMatch'] == 1_467_610  # WRN-28-2, CIFAR-10


@pytest.mark.parametrize('flags,message', [
    (('--generations', 0), '--generations 0 is not allowed with --version CReST+; use an integer from 1 to'),
    (('--generations', 7, '--total-steps', 6), '--generations 7 is not allowed'),
    (('--crest-alpha', 0), '--crest-alpha 0.0 is not allowed'),
    (('--da-t-min', 1.5), '--da-t-min 1.5 is not allowed')])
def test_bad_crest_flags_are_one_line(small_cifar10_root, tmp_path, capsys, flags, message):
    assert tiny_run(small_cifar10_root, tmp_path / 'bad', *flags) == 2
    err = capsys.readouterr().err
    assert message in err and err.count('\n') == 1 and not (tmp_path / 'bad').exists()
    assert tiny_run(tmp_path / 'no-data', tmp_path / 'bad', *flags) == 2  # checked before the data is read
    assert message in capsys.readouterr().err


def test_every_row_of_the_crest_launcher(echo_python):
    for dataset, rows in ROWS.items():
        for index, (n, m, gl, gu, mode, size) in enumerate(rows):
            args = launched_args(echo_python, 'CReST+.sh', dataset, index)
            assert_row(args, 'CReST+.sh', dataset, n, m, gl, gu, mode, size)
            method = (args.threshold, args.crest_alpha, args.da_t_min, args.dist_align)
            assert method == (0.95, 3, 0.5, dataset != 'stl10')  # DASO's STL-10 config: no alignment
            recipe = (args.lr, args.total_steps, args.batch_size, args.mu, args.generations, args.lr_schedule,
                      args.wdecay_all, args.ema_warmup, args.bn_momentum, args.eval_step, args.ema_decay)
            if dataset == 'digits':
                assert recipe == (0.1, 1200, 8, 6, 3, 'cosine', False, False, 0.1, 40, 0.99)
            else:
                assert recipe == (0.03, 250000, 64, 2, 5, 'constant', True, True, 0.1, 500, 0.999)
    assert launched_args(echo_python, 'CReST+.sh', 'cifar10', 2, '--generations', 2).generations == 2


@pytest.mark.slow
def test_crest_launcher_short_run_writes_metrics_and_checkpoints(cifar10_launcher_root, tmp_path):
    """40 steps of the CIFAR-10 reversed row in 2 generations: a boundary at step 20."""
    out = tmp_path / 'run'
    result = launch('CReST+.sh', 'cifar10', 2, '--data-dir', cifar10_launcher_root, '--total-steps', 40,
                    '--eval-step', 20, '--batch-size', 4, '--mu', 2, '--num-workers', 0, *TINY, '--generations', 2,
                    '--out', out)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in records] == [20, 40] and [r['epoch'] for r in records] == [1, 2]
    for r in records:
        assert abs(sum(r['pi_u']) - 1) < 1e-5 and r['kl_pi_u'] is not None and r['evaluated'] == 200
        assert r['lr'] == 0.03  # constant
    assert (out / 'checkpoint.pt').is_file() and (out / 'best.pt').is_file()
    assert json.loads((out / 'args.json').read_text())['version'] == 'CReST+'
    assert 'step 20: generation 2 of 2' in (out / 'log.txt').read_text()
    assert METHODS['CReST+'] is CReSTPlus
