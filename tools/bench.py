"""Speed of augmentation and of SimPro training steps, with the project's own training code.

    python -m tools.bench                    # on CUDA when present, else the CPU (3 min on 2 busy CPU cores)
    python -m tools.bench --steps 50         # more timed steps (the default is 20 on CUDA, 1 on the CPU)

The workload is SimPro's CIFAR-10 step (batch 64, mu 8, WRN-28-2): 64 labeled images in two views
and 512 unlabeled images in three, 1,664 images per step, on random 32x32 images (the speed does
not depend on their content). The last line of stdout is one JSON object:

- aug_pil_img_per_s: the per-image PIL path (dataset/augment.py), one process, one thread;
- aug_tensor_cpu_img_per_s: the batched tensor path (dataset/tensor_augment/), one CPU thread;
- aug_tensor_cuda_img_per_s: the same on CUDA (null without CUDA);
- step_per_s_baseline: training steps per second with --aug cpu (PIL in loader workers), fp32;
- step_per_s_fast: with --aug gpu, channels-last and, on CUDA, bf16 autocast (--amp);
- projected_full_run_min: 43,000 steps of the CIFAR-10 recipe at step_per_s_fast (evaluation excluded);
- peak_gpu_memory_gib: of the fast path (null without CUDA);
- device_ops_per_step: operations the fast path sends to the device per step, counted on the meta
  device, so on any machine: for the augmentation (the batch's views) and the training step
  (forward, backward, optimizer, weight EMA), the kernels (on a GPU each a kernel launch), the views
  (a new view of a tensor's memory, which launches nothing) and the allocations; then the total and
  the kernels of both. Their dispatch is the host's share of an eager step's time;
- cuda_views_equal_cpu: whether a step's views made on CUDA equal those made on the CPU from the
  same seed, bit for bit (null without CUDA);
- cuda_syncs_per_step: host-GPU synchronisations per fast step once warm, counted by CUDA's sync
  debug mode (null without CUDA; the test suite checks the same on the meta device);
- step_per_s_compiled: the fast path with --compile, the whole step compiled (CUDA graphs on CUDA;
  only with --compile; null otherwise);
- cuda_syncs_per_compiled_step: the same count as cuda_syncs_per_step for the compiled step (only with
  --compile on CUDA).
"""
import utils.startup  # noqa: F401 (first: a Ctrl-C while the rest imports is one line)
import json
import os
import time
import warnings
from collections import Counter

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import train
from core.command_line import get_args_parser
from core.device import resolve_speed_options
from core.training import build_training
from dataset.batches import LoaderBatches, make_batches
from utils.cli import OneLineParser, phase
from dataset.data import CIFAR10_MEAN, CIFAR10_STD, SemiSupervisedData
from methods import METHODS

BATCH, MU, FULL_RUN_STEPS = 64, 8, 43000
PROG = 'python -m tools.bench'
IMAGES_PER_STEP = BATCH * 2 + BATCH * MU * 3


def random_split(labeled=1162, unlabeled=9321, test=1000, seed=0) -> SemiSupervisedData:
    """A CIFAR-10-sized split (the sizes of row 0 of the table) of random images."""
    rng = np.random.RandomState(seed)
    n = labeled + unlabeled
    images = rng.randint(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.randint(0, 10, n).astype(np.int64)
    counts = np.bincount(labels[:labeled], minlength=10).tolist()
    return SemiSupervisedData('cifar10', 10, 32, CIFAR10_MEAN, CIFAR10_STD, images, labels, np.arange(labeled),
                              np.arange(labeled, n), np.zeros(unlabeled, bool),
                              rng.randint(0, 256, (test, 32, 32, 3), dtype=np.uint8),
                              rng.randint(0, 10, test).astype(np.int64), counts,
                              np.bincount(labels[labeled:], minlength=10).tolist())


def recipe_args(device, aug, amp, workers):
    args = get_args_parser().parse_args(
        ['--lr', '0.17', '--total-steps', str(FULL_RUN_STEPS), '--batch-size', str(BATCH), '--mu', str(MU),
         '--tau', '2.0', '--threshold', '0.95', '--ema-u', '0.9', '--aug', aug, '--num-workers', str(workers),
         '--device', str(device)] + (['--amp'] if amp else []))
    args.arch, args.img_size = 'wideresnet', 32
    resolve_speed_options(args, device)  # (no image bytes: --aug is always given here)
    return args


def pil_images_per_s(data, steps) -> float:
    labeled, unlabeled, _ = data.datasets(('weak', 'strong'), ('weak', 'strong', 'strong'))
    start = time.perf_counter()
    for step in range(steps):
        for i in range(BATCH):
            labeled[(i, step * BATCH + i)]
        for i in range(BATCH * MU):
            unlabeled[(i, step * BATCH * MU + i)]
    return IMAGES_PER_STEP * steps / (time.perf_counter() - start)


def tensor_images_per_s(data, device, steps) -> float:
    """The batched views of the --aug gpu path (dataset.batches.make_batches), on `device`."""
    args = recipe_args(device, 'gpu', False, 0)
    batches, _ = make_batches(args, data, METHODS['SimPro'](args, data).view_kinds(), 0, device)
    next(batches)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        next(batches)
    synchronize(device)
    return IMAGES_PER_STEP * steps / (time.perf_counter() - start)


def recipe_run(data, device, aug, amp, workers=0, **options):
    """(args, training state, batches) of the recipe on `device`, with `options` set in args."""
    args = recipe_args(device, aug, amp, workers)
    vars(args).update(options)
    run = build_training(args, data, device, train.learn)
    return args, run, train.method_batches(args, data, run.method, 0, device)[0]


def steps_per_s(data, device, aug, amp, steps, workers, compile=False) -> float:
    args, run, batches = recipe_run(data, device, aug, amp, workers, compile=compile)
    warmup = 3 if device.type == 'cuda' else 1  # (cuDNN autotuning, loader workers starting)
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        train.train_step(run, batches, device, args)
    synchronize(device)
    return steps / (time.perf_counter() - start)


ALLOCATIONS = {'empty', 'empty_strided', 'empty_like', 'new_empty', 'new_empty_strided'}


class DeviceOps(TorchDispatchMode):
    """Counts the operations that touch the meta device (an input or a result there; the host's are
    not counted), by kind: 'kernels' (on a GPU, each a kernel launch), 'views' (a new view of a
    tensor's memory: no launch) and 'allocations' (memory without a launch)."""

    def __init__(self):
        super().__init__()
        self.counts = Counter({'kernels': 0, 'views': 0, 'allocations': 0})

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.device.type == 'meta' for t in tree_leaves((args, kwargs, out))):
            self.counts['views' if func.is_view else 'allocations' if func.overloadpacket.__name__ in ALLOCATIONS
                        else 'kernels'] += 1
        return out


def device_ops_per_step(data, version='SimPro') -> dict:
    """The operations on the device of a steady fast step of `version` at the CIFAR-10 recipe, on the
    meta device: per part ('augmentation': making the batch's views; 'train_step': forward, backward,
    optimizer, weight EMA) by kind (DeviceOps), then the 'total' and the 'kernels' of both."""
    device = torch.device('meta')
    args, run, batches = recipe_run(data, device, 'gpu', False, channels_last=True, version=version)
    for _ in range(3):
        with DeviceOps() as augmentation:
            labeled_batch, unlabeled_batch = next(batches)
        with DeviceOps() as step:
            train.train_step(run, LoaderBatches([labeled_batch], [unlabeled_batch]), device, args)
    parts = {'augmentation': dict(augmentation.counts), 'train_step': dict(step.counts)}
    return {**parts, 'total': sum(sum(part.values()) for part in parts.values()),
            'kernels': sum(part['kernels'] for part in parts.values())}


def views_equal_across_devices(data, device) -> bool:
    """A step's views on `device` and on the CPU, from the same seed: identical uint8 pixels?"""
    batches = []
    for where in (device, torch.device('cpu')):
        args = recipe_args(where, 'gpu', False, 0)
        batches.append(next(make_batches(args, data, METHODS['SimPro'](args, data).view_kinds(), 7, where)[0]))
    return all(torch.equal(a.cpu(), b) for side_a, side_b in zip(*batches)
               for views_a, views_b in zip(side_a[0], side_b[0]) for a, b in zip(views_a, views_b))


def syncs_per_step(data, device, steps=5, compile=False) -> float:
    """Synchronisations of the host with the GPU per fast step (after warm-up), as reported by
    torch.cuda.set_sync_debug_mode('warn'); with `compile`, of the compiled step (CUDA graphs)."""
    args, run, batches = recipe_run(data, device, 'gpu', True, compile=compile)
    for _ in range(5 if compile else 3):  # (compiled: compilation, then the CUDA graphs' warm-up and recording)
        train.train_step(run, batches, device, args)
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            for _ in range(steps):
                train.train_step(run, batches, device, args)
        finally:
            torch.cuda.set_sync_debug_mode('default')
    for w in caught[:3]:
        print('sync:', str(w.message).splitlines()[0], f'({w.filename}:{w.lineno})', flush=True)
    return len(caught) / steps


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def main(argv=None):
    parser = OneLineParser(prog=PROG, description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='cpu or cuda[:i]')
    parser.add_argument('--steps', type=int, help='timed training steps, >= 1 (default: 20 on CUDA, 1 on the CPU)')
    parser.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1),
                        help='loader workers of the PIL baseline, >= 0')
    parser.add_argument('--compile', action='store_true', help='also time the fast path under torch.compile')
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f'--steps {args.steps} is not allowed; use an integer >= 1')
    if args.workers < 0:
        parser.error(f'--workers {args.workers} is not allowed; use an integer >= 0')
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f'--device {args.device} is not a device; use cpu or cuda[:i]')
    if device.type not in ('cpu', 'cuda') or (device.type == 'cuda' and not torch.cuda.is_available()):
        parser.error(f'--device {args.device} is not usable here; use cpu' + ('' if torch.cuda.is_available()
                                                                               else ' (no CUDA GPU is visible)'))
    cuda = device.type == 'cuda'
    steps = args.steps or (20 if cuda else 1)
    phase(PROG, 'making a CIFAR-10-sized split of random images')
    data = random_split()
    result = {'device': torch.cuda.get_device_name(device) if cuda else 'cpu', 'cpu_threads': torch.get_num_threads()}

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # augmentation throughput per core
    phase(PROG, 'timing the augmentation: PIL, then tensors on one CPU thread' + (', then on CUDA' if cuda else ''))
    result['aug_pil_img_per_s'] = round(pil_images_per_s(data, 2), 1)
    result['aug_tensor_cpu_img_per_s'] = round(tensor_images_per_s(data, torch.device('cpu'), 3), 1)
    torch.set_num_threads(threads)
    result['aug_tensor_cuda_img_per_s'] = round(tensor_images_per_s(data, device, 20), 1) if cuda else None
    print(f"augmentation, images/s: PIL {result['aug_pil_img_per_s']}, tensor on one CPU thread "
          f"{result['aug_tensor_cpu_img_per_s']}, tensor on CUDA {result['aug_tensor_cuda_img_per_s']}", flush=True)

    phase(PROG, 'counting the device operations of a step (on the meta device)')
    result['device_ops_per_step'] = device_ops_per_step(data)
    print(f"device operations per step: {result['device_ops_per_step']}", flush=True)
    phase(PROG, f'timing {steps} baseline training step(s) after a warm-up (PIL in {args.workers} loader workers, '
                f'fp32{"" if cuda else "; about 20 s a step on 2 CPU cores"})')
    result['step_per_s_baseline'] = round(steps_per_s(data, device, 'cpu', False, steps, args.workers), 4)
    print(f"baseline (PIL workers, fp32): {result['step_per_s_baseline']} steps/s", flush=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    phase(PROG, f'timing {steps} fast training step(s) after a warm-up (tensor augmentation on the device)')
    result['step_per_s_fast'] = round(steps_per_s(data, device, 'gpu', cuda, steps, 0), 4)
    result['peak_gpu_memory_gib'] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2) if cuda else None
    result['projected_full_run_min'] = round(FULL_RUN_STEPS / result['step_per_s_fast'] / 60, 1)
    result['speedup'] = round(result['step_per_s_fast'] / result['step_per_s_baseline'], 2)
    if cuda:
        phase(PROG, 'comparing the views made on CUDA and on the CPU, then counting synchronisations')
    result['cuda_views_equal_cpu'] = views_equal_across_devices(data, device) if cuda else None
    result['cuda_syncs_per_step'] = syncs_per_step(data, device) if cuda else None
    if args.compile:
        phase(PROG, f'compiling the step (torch.compile: a minute or more), then timing {steps} compiled step(s)')
    result['step_per_s_compiled'] = (round(steps_per_s(data, device, 'gpu', cuda, steps, 0, compile=True), 4)
                                     if args.compile else None)
    result['cuda_syncs_per_compiled_step'] = (syncs_per_step(data, device, compile=True) if cuda and args.compile
                                              else None)
    print(f"fast (tensor augmentation on the device{', bf16' if cuda else ''}): {result['step_per_s_fast']} steps/s, "
          f"{result['speedup']}x; 43,000 steps in {result['projected_full_run_min']} min", flush=True)
    print(json.dumps(result))


if __name__ == '__main__':
    main()
