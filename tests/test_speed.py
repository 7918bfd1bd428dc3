"""The fast paths change speed, not what is learned: batched augmentation on the device, bf16
autocast and channels-last give the same training as the reference path."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from core import checkpoint

import train
from dataset.data import build_data
from test_resume import BASE, final_state, run
from core.meter import EpochMeter
from core.command_line import get_args_parser
from core.device import resolve_speed_options
from core.training import build_training
import dataset.batches
from dataset.batches import LoaderBatches


def one_step_loss(data_root, **options):
    args = get_args_parser().parse_args([*map(str, BASE), '--data-dir', str(data_root), '--aug', 'gpu'])
    data = build_data(args)
    args.arch = 'wideresnet'
    device = torch.device('cpu')
    resolve_speed_options(args, device)
    for key, value in options.items():
        setattr(args, key, value)
    run = build_training(args, data, device, train.learn)
    batches, _ = train.method_batches(args, data, run.method, 0, device)
    (loss, terms, _, _), _ = train.train_step(run, batches, device, args)
    return loss.item(), {k: v.item() for k, v in terms.items()}


def test_bf16_autocast_and_channels_last_keep_the_loss(small_cifar10_root):
    """One SimPro step from the same weights and batch: fp32, bf16 autocast (on the CPU here; on
    CUDA with --amp) and channels-last agree closely."""
    fp32, fp32_terms = one_step_loss(small_cifar10_root)
    bf16, bf16_terms = one_step_loss(small_cifar10_root, amp=True)
    channels_last, _ = one_step_loss(small_cifar10_root, channels_last=True)
    assert fp32 > 0.1
    assert bf16 == pytest.approx(fp32, rel=2e-2) and bf16 != fp32  # autocast really ran in bf16
    for key in fp32_terms:
        assert bf16_terms[key] == pytest.approx(fp32_terms[key], rel=2e-2, abs=1e-3)
    assert channels_last == pytest.approx(fp32, rel=1e-5)


def test_device_augmentation_run_resumes_exactly(small_cifar10_root, tmp_path, monkeypatch):
    """--aug gpu (here on the CPU): a run interrupted after a checkpoint ends like one done in one go."""
    assert run(small_cifar10_root, tmp_path / 'whole', '--aug', 'gpu') == 0
    save = checkpoint.save_checkpoint

    def save_then_crash(state, path, **kwargs):
        save(state, path, **kwargs)
        if state['step'] == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, 'save_checkpoint', save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run(small_cifar10_root, tmp_path / 'split', '--aug', 'gpu')
    monkeypatch.setattr(train, 'save_checkpoint', save)
    assert run(small_cifar10_root, tmp_path / 'split', '--aug', 'gpu', '--resume', 'auto') == 0
    whole, split = final_state(tmp_path / 'whole'), final_state(tmp_path / 'split')
    assert split[0] == whole[0] and len(whole[0]) == 3
    assert all(torch.equal(v, split[1]['model'][k]) for k, v in whole[1]['model'].items())
    assert json.loads((tmp_path / 'whole' / 'args.json').read_text())['aug'] == 'gpu'


def test_device_batches_follow_the_sampler_and_views(small_cifar10_root):
    """The device path hands out the same samples in the same order as the PIL path, with views
    that are normalised uint8 images of the right rows."""
    args = get_args_parser().parse_args([*map(str, BASE), '--data-dir', str(small_cifar10_root)])
    data = build_data(args)
    device = torch.device('cpu')
    from methods import SimPro
    method = SimPro(args, data)
    args.aug = 'gpu'
    gpu_batches, gpu_test = train.method_batches(args, data, method, 3, device)
    args.aug = 'cpu'
    cpu_batches, cpu_test = train.method_batches(args, data, method, 3, device)
    (gpu_views, gpu_y, gpu_i), _ = next(gpu_batches)
    (cpu_views, cpu_y, cpu_i), _ = next(cpu_batches)
    assert torch.equal(gpu_i.cpu(), cpu_i) and torch.equal(gpu_y.cpu(), cpu_y) and len(gpu_views) == 2
    for view in gpu_views:
        assert view.shape == (4, 3, 32, 32) and view.dtype == torch.float32
        pixels = view * torch.tensor(data.std)[:, None, None] + torch.tensor(data.mean)[:, None, None]
        assert np.allclose((pixels * 255).numpy(), np.round((pixels * 255).numpy()), atol=1e-3)  # from uint8
    rows = data.test_sets['test']
    (gx, gy, _), (cx, cy, _) = next(iter(gpu_test(rows))), next(iter(cpu_test(rows)))
    assert torch.equal(gx[:len(cx)], cx) and torch.equal(gy[:len(cy)], cy)  # the same normalised test images


@pytest.mark.parametrize('version', ['SimPro', 'ACR_d', 'FixMatch', 'ACR', 'DASO', 'BOAT', 'CPE', 'MetaExpert'])
def test_device_steps_never_read_device_values_back(small_cifar10_root, version):
    """Whole --aug gpu steps (the batch with every view, forward, the loss and its E-step sums,
    SGD, the weight EMA, the epoch meter) on the meta device, whose tensors have shapes but no
    values: reading any device value on the host (.item(), a boolean-mask index, bincount's
    range, a Python branch on a tensor) raises there. On CUDA each such read would stall the
    host until the GPU caught up, every step."""
    run, steps = meta_training(small_cifar10_root, version, '--channels-last')
    for step in range(1, 4):
        loss, labeled_batch = steps(step)
        assert labeled_batch[0][0].device == loss.device and labeled_batch[0][0].shape == (4, 3, 32, 32)
    assert loss.device == torch.device('meta')


def meta_training(root, version, *extra):
    """A run of test_resume.BASE with --aug gpu on the meta device, and steps(step): one whole step
    (batch, train_step, the epoch meter), returning (loss, labeled batch)."""
    args = get_args_parser().parse_args([*map(str, BASE), '--data-dir', str(root), '--version', version,
                                               '--aug', 'gpu', *extra])
    data = build_data(args)
    args.arch = 'wideresnet'
    device = torch.device('meta')
    run = build_training(args, data, device, train.learn)
    batches, _ = train.method_batches(args, data, run.method, 0, device)
    meter = EpochMeter(device)

    def steps(step):
        labeled_batch, unlabeled_batch = next(batches)
        result, unlabeled_labels = train.train_step(run, LoaderBatches([labeled_batch], [unlabeled_batch]),
                                                    device, args)
        meter.add(step, *result, unlabeled_labels)
        return result.loss, labeled_batch
    return run, steps


def test_aug_default_keeps_the_images_on_the_gpu_only_when_they_fit(monkeypatch):
    """On CUDA, --aug defaults to gpu while the split's images take at most a quarter of the GPU's
    memory (ImageNet-127 at 64x64, 15.7 GB, stays on the host of a 40 GB GPU); given, it is kept."""
    monkeypatch.setattr(torch.cuda, 'get_device_properties', lambda device: SimpleNamespace(total_memory=40 << 30))
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', False)
    cuda = torch.device('cuda')
    for given, image_bytes, expected in ((None, 150 << 20, 'gpu'), (None, 10 << 30, 'gpu'),
                                         (None, (10 << 30) + 1, 'cpu'), ('gpu', 16 << 30, 'gpu'),
                                         ('cpu', 1, 'cpu')):
        args = get_args_parser().parse_args([] if given is None else ['--aug', given])
        resolve_speed_options(args, cuda, image_bytes)
        assert (args.aug, args.channels_last) == (expected, True), (given, image_bytes)
    assert torch.backends.cudnn.benchmark
    args = get_args_parser().parse_args(['--amp'])
    notes = resolve_speed_options(args, torch.device('cpu'), 1)  # (what the run's first lines say of it)
    assert (args.aug, args.channels_last, args.amp, torch.backends.cudnn.benchmark) == ('cpu', False, False, False)
    assert notes == ['--amp is not read on cpu: bf16 autocast is for CUDA; the run trains in float32']
    assert resolve_speed_options(get_args_parser().parse_args([]), torch.device('cpu'), 1) == []


def test_images_that_do_not_fit_on_the_device_are_one_line_and_write_nothing(small_cifar10_root, tmp_path,
                                                                             monkeypatch, capsys):
    def out_of_memory(images, device):
        raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 15.70 GiB')

    monkeypatch.setattr(dataset.batches, 'to_device', out_of_memory)
    assert run(small_cifar10_root, tmp_path / 'run', '--aug', 'gpu') == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and 'do not fit on cpu' in lines[0] and 'use --aug cpu' in lines[0]
    assert not (tmp_path / 'run').exists()


def test_bench_eval_says_each_phase_and_prints_its_json(monkeypatch, capsys):
    """tools.bench_eval (its network swapped for a small one, its batches made small): each phase is
    announced on stderr before it starts, the JSON line is the last of stdout, and --repeats 0 is one
    line. (It had stopped running when the network's output became a NetworkOutput.)"""
    import json
    from models import build_model
    from tools import bench_eval
    monkeypatch.setattr(bench_eval, 'build_model', lambda arch, classes: build_model('wideresnet', classes, depth=10,
                                                                                     widen_factor=1))
    monkeypatch.setattr(bench_eval, 'STEP_IMAGES', 4)
    monkeypatch.setattr(bench_eval, 'EVAL_BATCH', 8)
    assert bench_eval.main(['--img-size', '32', '--repeats', '1']) == 0
    out, err = capsys.readouterr()
    result = json.loads(out.splitlines()[-1])
    assert result['img_size'] == 32 and result['step_s'] > 0 and result['eval_image_ms'] > 0
    assert result['imbalanced_test_s'] == pytest.approx(50000 * result['eval_image_ms'] / 1000, abs=0.2)
    assert err.splitlines() == [
        'python -m tools.bench_eval: timing 2 training steps of ResNet-50 at 32x32 on cpu (the first warms up) ...',
        'python -m tools.bench_eval: timing 2 evaluation batches of 8 images ...']
    with pytest.raises(SystemExit) as stop:
        bench_eval.main(['--repeats', '0'])
    assert stop.value.code == 2 and capsys.readouterr().err == \
        'python -m tools.bench_eval: error: --repeats 0 is not allowed; use an integer >= 1 (see --help)\n'
