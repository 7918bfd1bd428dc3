"""A step the host cannot slow down: few operations per step (counted on the meta device, bounded
here so that they cannot creep back), multi-tensor optimizers and weight EMA with the numbers of
the per-parameter ones, views whose operations and shapes are the same at every step, and a
compiled step (--compile) that equals the eager one."""
import copy
import shutil

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import methods
import train
from core.training import ModelEMA, build_training, learning_rate_on_device
from dataset.data import build_data
from models import build_model
from test_resume import BASE, Interrupted, crash_after_checkpoint, final_state, own_flags, run
from tools import bench
from core.command_line import get_args_parser

# SimPro's CIFAR-10 step (batch 64, mu 8, WRN-28-2) measured when these bounds were set: augmentation
# 211 kernels + 129 views, training step 273 kernels + 148 views + 23 allocations (from 396 + 148 and
# 597 + 148 + 23 before the issue "A GPU step the host cannot slow down").
BOUNDS = {'augmentation': {'kernels': 220, 'total': 365}, 'train_step': {'kernels': 280, 'total': 450},
          'total': 810, 'kernels': 490}


def test_operations_per_step_stay_within_their_bounds():
    counts = bench.device_ops_per_step(bench.random_split(labeled=512, unlabeled=1024, test=10))
    for part in ('augmentation', 'train_step'):
        assert counts[part]['kernels'] <= BOUNDS[part]['kernels'], (part, counts)
        assert sum(counts[part].values()) <= BOUNDS[part]['total'], (part, counts)
    assert counts['total'] <= BOUNDS['total'] and counts['kernels'] <= BOUNDS['kernels'], counts


def test_the_counter_sees_in_place_multi_tensor_operations():
    """An in-place foreach operation returns nothing: it is counted by its inputs on the device."""
    tensors = [torch.zeros(3, device='meta') for _ in range(4)]
    with bench.DeviceOps() as ops:
        torch._foreach_mul_(tensors, 0.5)
        tensors[0].view(3, 1)
        torch.empty(2, device='meta')
        torch.zeros(2).add_(1)  # on the host: not counted
    assert dict(ops.counts) == {'kernels': 1, 'views': 1, 'allocations': 1}


def sgd_and_adam(model, foreach=True):
    """The loop's SGD (two groups, Nesterov) and CoSSL's Adam (decoupled weight decay)."""
    return [torch.optim.SGD(methods.common.param_groups(model, 5e-4), lr=0.1, momentum=0.9, nesterov=True,
                            foreach=foreach),
            torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.02, decoupled_weight_decay=True,
                             foreach=foreach)]


def test_multi_tensor_optimizers_give_the_per_parameter_numbers():
    """The loop's SGD and CoSSL's Adam are foreach on every device; on the CPU their updates are bit
    for bit those of the per-parameter loop PyTorch takes there by default."""
    torch.manual_seed(0)
    model = build_model('wideresnet', 10, depth=10, widen_factor=1)
    args = get_args_parser().parse_args(['--lr', '0.1'])
    assert methods.Method.make_optimizer(None, model, args).defaults['foreach'] is True
    assert methods.base.adam(model, 0.01).defaults['foreach'] is True
    x = torch.randn(8, 3, 32, 32)
    for kind in range(2):
        models = [copy.deepcopy(model) for _ in range(2)]
        optimizers = [sgd_and_adam(m, foreach)[kind] for m, foreach in zip(models, (True, False))]
        for _ in range(3):
            for m, optimizer in zip(models, optimizers):
                optimizer.zero_grad()
                m(x).logits.square().mean().backward()
                optimizer.step()
        for a, b in zip(*(m.parameters() for m in models)):
            assert torch.equal(a, b), type(optimizers[0]).__name__


def test_the_ema_update_with_its_decay_on_the_device_equals_the_number():
    torch.manual_seed(0)
    model = build_model('wideresnet', 10, depth=10, widen_factor=1)
    emas = [ModelEMA(model, 0.999, warmup=True), ModelEMA(model, 0.999, warmup=True, on_device=True)]
    for p in model.parameters():
        p.data.add_(torch.randn_like(p))
    for step in (1, 2, 3):
        for ema in emas:
            ema.update(model, ema.decay_after(step))
    assert float(emas[1].decay_on_device) == pytest.approx(1 - 1 / 3)
    for a, b in zip(*(ema.model.parameters() for ema in emas)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_learning_rate_moves_to_the_device_and_back():
    """A compiled step reads each group's learning rate (and Adam its step counts) on the device; a
    resumed eager run gets numbers back, whichever wrote the checkpoint."""
    model = build_model('wideresnet', 10, depth=10, widen_factor=1)
    sgd, adam = sgd_and_adam(model)
    model(torch.randn(2, 3, 32, 32)).logits.sum().backward()
    adam.step()
    for optimizer in (sgd, adam):
        learning_rate_on_device(optimizer, True)
        assert all(isinstance(g['lr'], torch.Tensor) for g in optimizer.param_groups)
        learning_rate_on_device(optimizer, False)
        assert all(type(g['lr']) is float for g in optimizer.param_groups)
    learning_rate_on_device(adam, True)
    assert adam.param_groups[0]['capturable'] and adam.state[next(model.parameters())]['step'].dtype == torch.float32


class Trace(TorchDispatchMode):
    """Every operation and the shapes of its results."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.append((str(func), [tuple(t.shape) for t in tree_leaves(out) if isinstance(t, torch.Tensor)]))
        return out


@pytest.mark.parametrize('version', ['SimPro', 'FixMatch', 'ACR_d', 'ACR', 'DASO', 'CoSSL'])
def test_every_step_runs_the_same_operations_on_the_same_shapes(small_cifar10_root, version):
    """The views made from each step's plan, forward, backward, the optimizer and the EMA: after the
    first step (which makes the optimizer's state) every step is the same sequence of operations on
    the same shapes, whatever was drawn, so it can be captured once as a CUDA graph (on the meta
    device, where a read of a device value on the host would fail)."""
    args = get_args_parser().parse_args(own_flags([*map(str, BASE), '--data-dir', str(small_cifar10_root),
                                                         '--version', version, '--aug', 'gpu', '--est-epoch', '0']))
    data = build_data(args, methods.METHODS[version].labeled_in_pool)
    args.arch, device = 'wideresnet', torch.device('meta')
    run = build_training(args, data, device, train.learn)
    args.compile = True  # (batches are plans; the step runs eagerly here)
    batches, _ = train.method_batches(args, data, run.method, 0, device)
    assert batches.planned
    traces = []
    for _ in range(4):
        with Trace() as trace:
            train.train_step(run, batches, device, args)
        traces.append(trace.ops)
    assert traces[1] == traces[2] == traces[3] and any(op == 'aten.take.default' for op, _ in traces[1])


def test_planned_batches_give_the_views_of_the_eager_ones(small_cifar10_root):
    args = get_args_parser().parse_args([*map(str, BASE), '--data-dir', str(small_cifar10_root), '--aug', 'gpu'])
    data = build_data(args)
    method = methods.SimPro(args, data)
    eager = train.method_batches(args, data, method, 5, torch.device('cpu'))[0]
    args.compile = True
    planned = train.method_batches(args, data, method, 5, torch.device('cpu'))[0]
    for _ in range(2):
        plan = next(planned)
        assert plan.dim() == 1 and plan.dtype == torch.int64
        for side, other in zip(planned.views(plan), next(eager)):
            assert all(torch.equal(a, b) for a, b in zip(side[0], other[0]))
            assert torch.equal(side[1], other[1]) and torch.equal(side[2], other[2])


@pytest.mark.slow
@pytest.mark.skipif(not any(map(shutil.which, ('g++', 'c++', 'clang++'))),
                    reason='torch.compile generates C++ on the CPU and needs a compiler')
@pytest.mark.parametrize('version', ['SimPro', 'DASO'])
def test_the_compiled_step_equals_the_eager_one(small_cifar10_root, version):
    """--compile (torch.compile of the whole step, generating CPU code here): the same losses, weights,
    weight EMA and optimizer state as the eager steps, up to float rounding, with the views made from
    the plans inside the compiled step, the learning rate read from a tensor that the schedule fills
    (DASO: constant; SimPro: cosine) and DASO's warming EMA decay from the device."""
    extra = ['--version', version] + (['--lr-schedule', 'constant', '--wdecay-all', '--ema-warmup',
                                       '--pretrain-steps', '1'] if version == 'DASO' else [])
    runs = []
    for compiled in (False, True):
        args = get_args_parser().parse_args(own_flags([*map(str, BASE), '--data-dir', str(small_cifar10_root),
                                                             '--aug', 'gpu', *extra] + (['--compile'] * compiled)))
        data = build_data(args)
        args.arch, device = 'wideresnet', torch.device('cpu')
        run = build_training(args, data, device, train.learn)
        batches, _ = train.method_batches(args, data, run.method, 0, device)
        assert batches.planned == compiled
        results = [train.train_step(run, batches, device, args)[0] for _ in range(3)]
        runs.append((run, results))
    (eager, eager_results), (compiled, compiled_results) = runs
    for a, b in zip(eager_results, compiled_results):
        assert b.loss.item() == pytest.approx(a.loss.item(), rel=1e-4)
        assert torch.equal(a.mask, b.mask) and torch.equal(a.pseudo_label, b.pseudo_label)
    for a, b in zip(eager.model.state_dict().values(), compiled.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(eager.ema.model.parameters(), compiled.ema.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert isinstance(compiled.optimizer.param_groups[0]['lr'], torch.Tensor)
    assert float(compiled.scheduler.get_last_lr()[0]) == pytest.approx(eager.scheduler.get_last_lr()[0])


@pytest.mark.slow
@pytest.mark.skipif(not any(map(shutil.which, ('g++', 'c++', 'clang++'))),
                    reason='torch.compile generates C++ on the CPU and needs a compiler')
def test_compiled_views_equal_the_eager_ones_bit_for_bit():
    """The views of --compile (made inside the compiled step) are the eager views' pixels, which are
    PIL's: nothing in the fixed-shape pass is compiled into other arithmetic. (This found that the
    compiled CPU minimum of uint8 values is wrong in torch 2.14; the channel range reduces in int32.)"""
    data = bench.random_split(labeled=256, unlabeled=512, test=10)
    args = bench.recipe_args(torch.device('cpu'), 'gpu', False, 0)
    args.batch_size, args.mu, args.compile = 16, 4, True
    batches = train.method_batches(args, data, methods.SimPro(args, data), 0, torch.device('cpu'))[0]
    compiled = torch.compile(batches.views)
    for _ in range(2):
        plan = next(batches)
        for eager_side, compiled_side in zip(batches.views(plan), compiled(plan)):
            assert all(torch.equal(a, b) for a, b in zip(eager_side[0], compiled_side[0]))


@pytest.mark.slow
@pytest.mark.skipif(not any(map(shutil.which, ('g++', 'c++', 'clang++'))),
                    reason='torch.compile generates C++ on the CPU and needs a compiler')
def test_a_compiled_run_resumes_exactly_and_resumes_eagerly(small_cifar10_root, tmp_path, monkeypatch):
    """A --compile run stopped after a checkpoint ends, resumed with --compile, exactly as one done in
    one go; the same checkpoint resumed without --compile trains on (its learning rates numbers again)."""
    compiled = ['--aug', 'gpu', '--compile']
    assert run(small_cifar10_root, tmp_path / 'whole', *compiled) == 0
    log = (tmp_path / 'whole' / 'log.txt').read_text()  # (the wait for the compiler is announced before it)
    assert log.index('compiling the step (torch.compile): the first step waits for it') < log.index('step 2:')
    crash_after_checkpoint(monkeypatch, step=2)
    with pytest.raises(Interrupted):
        run(small_cifar10_root, tmp_path / 'split', *compiled)
    monkeypatch.undo()
    shutil.copytree(tmp_path / 'split', tmp_path / 'eager')
    assert run(small_cifar10_root, tmp_path / 'split', *compiled, '--resume', 'auto') == 0
    (whole, whole_state), (split, split_state) = final_state(tmp_path / 'whole'), final_state(tmp_path / 'split')
    assert split == whole and len(whole) == 3
    assert all(torch.equal(v, split_state['model'][k]) for k, v in whole_state['model'].items())
    assert run(small_cifar10_root, tmp_path / 'eager', '--aug', 'gpu', '--resume', 'auto') == 0
    eager, eager_state = final_state(tmp_path / 'eager')
    assert [r['step'] for r in eager] == [2, 4, 6]
    assert all(type(g['lr']) is float for g in eager_state['optimizer']['param_groups'])


@pytest.mark.parametrize('unlabeled', [('weak', 'strong'), ('strong_usb', 'weak', 'strong', 'strong_usb')])
def test_device_batches_views_are_the_flip_crop_and_randaugment_of_their_draws(unlabeled):
    """The one gather of every view (reflect-padded, and ACR_d's zero-padded crop_flip) from the host's
    crop sources, and RandAugmentMC (or USB's RandAugment) written in place, equal tensor_augment's
    flip_crop and RandAugmentMC / RandAugmentUSB (each tested against PIL) applied to the same draws
    and rows, whatever the order of the kinds."""
    from dataset import tensor_augment as T
    from dataset.device_batches import DeviceBatches
    from test_tensor_augment import MEAN, STD, sample_images
    images = sample_images(32, 24, seed=3).permute(0, 2, 3, 1).contiguous()
    batches = DeviceBatches(images, torch.arange(24) % 5, torch.arange(12), torch.arange(12, 24), ('crop_flip', 'weak'),
                            unlabeled, batch_size=4, mu=2, seed=0, start=0, mean=MEAN, std=STD, flip=True, cutout=16)
    recorded, draw = {}, batches.draw
    batches.draw = lambda keys: recorded.update(draw(keys)) or recorded
    pairs = next(batches)
    for view, ((flips, top, left), strong) in recorded.items():
        positions = pairs[view.side][2]
        source = images[batches.sides[view.side].rows[positions]].permute(0, 3, 1, 2).contiguous()
        expected = T.flip_crop(source, flips, top, left, T.crop_padding(32),
                               torch.full_like(flips, view.kind == 'crop_flip'))
        if strong is not None:
            augmenter = T.RandAugmentMC(2, 10, 16) if view.kind == 'strong' else T.RandAugmentUSB(3, 5)
            expected = augmenter.apply(expected, strong)
        assert torch.equal(pairs[view.side][0][view.number], T.normalize(expected, MEAN, STD)), view
    assert {view.kind for view in recorded} == {'crop_flip', 'weak', *unlabeled}
