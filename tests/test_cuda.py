"""The CUDA path, on machines that have a GPU (skipped elsewhere; the CPU suite checks the same code
on the CPU and on the meta device): the views made on the GPU are the CPU's bit for bit, eager or
compiled, a warm step never makes the host wait for the GPU, eager or compiled (CUDA graphs), and a
run with the GPU defaults and bf16 trains, checkpoints and resumes."""
import json

import pytest
import torch

import train
from methods import METHODS
from test_resume import Interrupted, crash_after_checkpoint, run
from tools import bench

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
SMALL = dict(labeled=256, unlabeled=1024, test=100)


def test_views_on_cuda_equal_the_cpu():
    assert bench.views_equal_across_devices(bench.random_split(**SMALL), torch.device('cuda'))


def test_warm_steps_never_synchronise():
    """torch.cuda.set_sync_debug_mode('warn') reports no synchronisation in the batches, the
    forward and backward passes, the loss with its E-step, SGD and the weight EMA."""
    assert bench.syncs_per_step(bench.random_split(**SMALL), torch.device('cuda'), steps=3) == 0


def test_compiled_steps_never_synchronise():
    """--compile on CUDA: once compiled and recorded as CUDA graphs, no step makes the host wait."""
    assert bench.syncs_per_step(bench.random_split(**SMALL), torch.device('cuda'), steps=3, compile=True) == 0


def test_compiled_views_on_cuda_equal_the_cpu():
    """The views made inside the compiled step on CUDA are the CPU's eager views, bit for bit."""
    data = bench.random_split(**SMALL)
    views = []
    for where in (torch.device('cuda'), torch.device('cpu')):
        args = bench.recipe_args(where, 'gpu', False, 0)
        args.compile = where.type == 'cuda'
        batches = train.method_batches(args, data, METHODS['SimPro'](args, data), 7, where)[0]
        views.append((torch.compile(batches.views) if args.compile else batches.views)(next(batches)))
    assert all(torch.equal(a.cpu(), b) for side_a, side_b in zip(*views)
               for a, b in zip(side_a[0], side_b[0]))


def test_run_with_gpu_defaults_and_bf16_trains_and_resumes(small_cifar10_root, tmp_path, monkeypatch):
    out = tmp_path / 'run'
    crash_after_checkpoint(monkeypatch, step=2)
    with pytest.raises(Interrupted):
        run(small_cifar10_root, out, '--device', 'cuda', '--amp')
    monkeypatch.undo()
    assert run(small_cifar10_root, out, '--device', 'cuda', '--amp', '--resume', 'auto') == 0
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in records] == [2, 4, 6] and all(r['evaluated'] == 50 for r in records)
    assert records[-1]['pi_u'] != records[0]['pi_u']
    settings = json.loads((out / 'args.json').read_text())
    assert (settings['aug'], settings['amp'], settings['channels_last']) == ('gpu', True, True)
    log = (out / 'log.txt').read_text()
    assert 'resuming at step 2' in log and 'cuda' in log and 'finished' in log
