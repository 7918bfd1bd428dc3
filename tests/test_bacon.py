"""BaCon against its authors' code (fqhank/AAAI24-BaCon-CISSL semilearn/imb_algorithms/bacon/bacon.py): its
network's heads, ABC's masks and loss, its class counting, its contrastive loss written out here in float64 as its
per-class loop, its bank and centres, and when its projection starts to learn; resume across that start, two
processes, the meta device and its launcher."""
import json
import math
import os
import random
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import test_launchers
import test_speed
from conftest import HANG_LIMIT, ROOT, step_views
from core.command_line import get_args_parser
from core.training import build_training
from dataset.data import build_data
from methods import BaCon
from methods.bacon import BANK_CONFIDENCE, contrastive_loss
from models import NetworkOutput, build_model, count_parameters
from test_launchers import ROWS, SMALL_RUN, assert_row, launch, launched_args
from test_resume import BASE, interrupted_equals_whole, own_flags
import train

echo_python = test_launchers.echo_python  # the fixture: a python that prints its arguments
COUNTS = [40, 20, 10, 5]


def bacon(counts=COUNTS, labeled=6, pool=8, **options):
    settings = dict(threshold=0.95, abc_threshold=0.95, abc_loss_ratio=1.0, contrast_after=100000,
                    total_steps=300000, eval_step=1000)
    data = SimpleNamespace(labeled_per_class=list(counts), labeled_idx=np.arange(labeled),
                           unlabeled_idx=np.arange(labeled, labeled + pool))
    return BaCon(SimpleNamespace(**{**settings, **options}), data)


def test_its_network_adds_abcs_head_and_a_32_wide_projection_with_pytorchs_initialisation():
    plain, net = build_model('wideresnet_usb', 10), build_model('wideresnet_usb', 10, two_heads=True, contrast_dim=32)
    assert count_parameters(net) == count_parameters(plain) + (128 * 10 + 10) + (128 * 32 + 32) == 1_473_044
    bound = 1 / math.sqrt(128)  # nn.Linear's own: uniform weights and biases within 1 / sqrt(fan_in)
    for head in (net.fc_balanced, net.contrast):
        assert head.weight.abs().max() <= bound and head.bias.abs().max() <= bound and head.bias.abs().max() > 0
    assert net.fc.bias.abs().max() == 0  # (the main head keeps USB's initialisation: bias 0)


def test_the_projection_is_detached_until_the_contrastive_loss_starts():
    net = build_model('wideresnet', 4, two_heads=True, depth=10, widen_factor=1, contrast_dim=32)
    images = torch.randn(4, 3, 32, 32)
    assert net(images).projection is None
    output = net(images, projection='detached')
    assert not output.projection.requires_grad
    (output.logits.sum() + output.projection.sum()).backward()
    assert net.contrast.weight.grad is None and net.conv1.weight.grad is not None
    net.zero_grad(set_to_none=True)
    net(images, projection='trained').projection.sum().backward()
    assert net.contrast.weight.grad is not None and net.conv1.weight.grad is not None
    assert bacon().forward_options() == {'with_features': False, 'projection': 'detached'}
    method = bacon()
    method.start_stage(None, None, None, None)
    assert method.forward_options()['projection'] == 'trained' and method.stage_starts == (100001,)


def test_class_counting_reads_the_auxiliary_logits_not_probabilities():
    """A pool image is counted once its largest auxiliary LOGIT reaches 0.95 (bacon.py: torch.max of
    abc_logits_x_ulb_w, .ge(0.95)); the batch's labeled images are counted only when some pool image is."""
    method = bacon()
    low = torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.2, 0.3, 0.1, 0.0]])  # no logit reaches 0.95
    method.count_classes(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([0, 1]), low)
    assert (method.selected == -1).all()
    aux = torch.tensor([[0.96, 0.95, 0.95, 0.95], [0.2, 1.5, 0.1, 0.0]])  # probabilities ~0.25 and ~0.58
    method.count_classes(torch.tensor([0, 3]), torch.tensor([0, 2]), torch.tensor([4, 1]), aux)
    assert method.selected.tolist() == [0, -1, -1, 2, -1, -1, -1, 1, -1, -1, 0, -1, -1, -1]


def test_abcs_loss_and_its_keep_probabilities(monkeypatch):
    """The keep probabilities are min(n) / n_y on the labeled rows and 1 - t (1 - min(n) / n_k) on the
    unlabeled ones (t = epoch / epochs); the losses the means over all rows of the kept rows' CE."""
    drawn = []

    def masks(keep_labeled, keep_unlabeled):
        drawn.append((keep_labeled.tolist(), keep_unlabeled.tolist()))
        return torch.tensor([1., 0, 1]), torch.tensor([1., 1, 0, 1])
    monkeypatch.setattr('methods.bacon.abc_masks', masks)
    method = bacon()
    method.step.fill_(150000)  # epoch 150 of 300
    labeled, labels = torch.randn(3, 4), torch.tensor([0, 2, 3])
    weak = torch.tensor([[9., 0, 0, 0], [0, 0, 9, 0], [0, 0, 0, 1], [0, 9, 0, 0]])
    strong = torch.randn(4, 4)
    loss = method.abc_loss(labeled, labels, weak, strong)
    keep = np.array([0.125, 0.25, 0.5, 1])  # min(n) / n for 40, 20, 10, 5
    assert drawn[0][0] == pytest.approx(keep[[0, 2, 3]].tolist())
    assert drawn[0][1] == pytest.approx((1 - 0.5 * (1 - keep[[0, 2, 3, 1]])).tolist())
    ce = lambda z, y: -torch.log_softmax(z.double(), -1)[torch.arange(len(y)), y]  # noqa: E731
    confident = torch.tensor([1., 1, 0, 1])  # (row 3's softmax max is 0.47 < 0.95)
    expected = (ce(labeled, labels) * torch.tensor([1., 0, 1])).mean() + \
        (ce(strong, torch.tensor([0, 2, 3, 1])) * confident * torch.tensor([1., 1, 0, 1])).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def official_contrast(features, labels, top3, centres, temperatures, select):
    """bacon.py's contrastive_loss in float64, its per-class loop as written."""
    f, c = features.double(), centres.double()
    cos = lambda a, b: (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-8)  # noqa: E731,E501
    f, c, top3 = f.numpy(), c.numpy(), top3.numpy()
    y = np.concatenate([labels.numpy(), top3[:, 0]])
    total = 0.0
    for i in range(len(c)):
        neg_idx = np.concatenate([labels.numpy() != i, ~(top3 == i).any(1)])
        rows = f[y == i]
        if len(rows) == 0:
            continue
        pos = np.exp(cos(rows, c[i][None]) / float(temperatures[i]))
        negatives = f[neg_idx]
        neg = np.exp(cos(rows[:, None, :], negatives[None, :, :]) / 0.1).mean()
        total += (-np.log(pos / (pos + 64 * neg + 1e-8)) * select.numpy()[y == i]).sum()
    return total / (select.sum().item() + 1e-8)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_the_contrastive_loss_equals_its_per_class_loop(seed):
    generator = torch.Generator().manual_seed(seed)
    features, centres = torch.randn(10, 6, generator=generator), torch.randn(4, 6, generator=generator)
    labels = torch.tensor([0, 0, 2, 1])  # (class 3 has only unlabeled rows, if any)
    top3 = torch.stack([torch.randperm(4, generator=generator)[:3] for _ in range(6)])
    temperatures = 0.1 - torch.rand(4, generator=generator) * 0.0005
    select = (torch.rand(10, generator=generator) > 0.3).float()
    classes = torch.cat([labels, top3[:, 0]])
    ours = contrastive_loss(features, classes, top3, labels, centres, temperatures, select)
    assert ours.item() == pytest.approx(official_contrast(features, labels, top3, centres, temperatures, select),
                                        rel=1e-5)


def test_the_bank_and_the_centres():
    """Confident rows' projections replace the bank's (labeled by their position, pool rows after the
    labeled set); each centre is the mean of the bank over the images selected as its class."""
    method = bacon(labeled=2, pool=3)
    method.selected.copy_(torch.tensor([0, 1, 1, -1, 0]))
    rows, features = torch.tensor([0, 2, 4]), torch.tensor([[1., 0], [2., 2], [3., 4]]).repeat(1, 16)
    method.update_bank(rows, features, torch.tensor([True, False, True]))
    assert torch.equal(method.bank[[0, 4]], features[[0, 2]]) and torch.equal(method.bank[2], torch.ones(32))
    assert torch.allclose(method.centres[0], (features[0] + features[2]) / 2)
    assert torch.allclose(method.centres[1], torch.ones(32))  # (images 1 and 2: bank rows still all ones)
    assert torch.equal(method.centres[2:], torch.zeros(2, 32))  # no image selected as 2 or 3: zero
    assert BANK_CONFIDENCE == 0.98


def test_a_step_after_the_start_equals_its_terms(monkeypatch):
    """The step's loss is FixMatch + ABC + the contrastive loss at the temperatures of its selected counts,
    0.1 - (1 - it / T)^2 0.0005 sqrt(freq / max freq), at the centres before the step's bank update."""
    monkeypatch.setattr('methods.bacon.abc_masks', lambda a, b: (torch.ones_like(a), torch.ones_like(b)))
    method = bacon(labeled=2, pool=3, total_steps=1000)
    method.start_stage(None, None, None, None)
    method.step.fill_(500)
    method.selected.copy_(torch.tensor([0, 1, 1, 1, 3]))
    centres = torch.randn(4, 32)
    method.centres.copy_(centres)
    g = torch.Generator().manual_seed(0)
    logits, balanced, projection = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g) * 5, \
        torch.randn(8, 32, generator=g)
    balanced[3] = torch.tensor([1.2, 0, 0, 0])  # (a pool logit >= 0.95: this step's images are counted first)
    views = step_views(BaCon, NetworkOutput(logits, balanced, projection=projection), [0, 1], [0, 2, 1], [1, 0])
    result = method.loss(views)
    selected = method.selected.tolist()  # (this step's counting, which the temperatures read)
    assert selected[:2] == [1, 0] and selected[2 + 2] == 0
    frequency = torch.tensor([selected.count(k) for k in range(4)], dtype=torch.float)
    temperatures = 0.1 - (1 - 500 / 1000) ** 2 * 0.0005 * torch.sqrt(frequency / frequency.max())
    confident = torch.cat([torch.softmax(balanced[:2], -1).max(-1).values,
                           torch.softmax(balanced[2:5], -1).max(-1).values]) >= 0.98
    top3 = balanced[2:5].topk(3, -1).indices
    contrast = official_contrast(torch.cat([projection[:2], projection[2:5]]), torch.tensor([0, 1]), top3, centres,
                                 temperatures, confident.float())
    assert result.terms['loss_contrast'].item() == pytest.approx(contrast, rel=1e-5)
    assert int(method.step) == 501 and not torch.equal(method.centres, centres)


def test_launcher_rows_and_its_configuration(echo_python):
    for dataset in ('cifar10', 'cifar100', 'stl10', 'digits'):
        for index, (n, m, gl, gu, mode, size) in enumerate(ROWS[dataset]):
            args = launched_args(echo_python, 'BaCon.sh', dataset, index)
            assert_row(args, 'BaCon.sh', dataset, n, m, gl, gu, mode, size)
            own = (args.threshold, args.abc_threshold, args.abc_loss_ratio, args.contrast_after, args.wdecay_all)
            assert own == (0.95, 0.95, 1, 400 if dataset == 'digits' else 100000, True), (dataset, index)
            budget = (args.lr_schedule, args.lr, args.total_steps, args.eval_step, args.batch_size, args.mu)
            assert budget == (('cosine', 0.1, 1200, 40, 8, 6) if dataset == 'digits' else
                              ('constant', 0.03, 300000, 1000, 64, 2)), (dataset, index)
    for dataset in ('smallimagenet', 'smallimagenet_1k'):
        result = launch('BaCon.sh', dataset, 0)
        assert result.returncode == 2 and result.stderr.startswith("error: BaCon's official code has no recipe")


def test_bacon_device_steps_never_read_device_values_back(small_cifar10_root):
    """Before and after the contrastive loss starts (class counts, ABC's draws, the contrastive loss, the
    bank and its centres) the step stays on the device (meta here)."""
    run_, steps = test_speed.meta_training(small_cifar10_root, 'BaCon')
    loss, _ = steps(1)
    run_.method.start_stage(None, None, None, None)
    for step in range(2, 4):
        loss, _ = steps(step)
    assert loss.device == torch.device('meta')


@pytest.mark.slow
def test_a_resumed_run_equals_an_uninterrupted_one_across_the_start(small_cifar10_root, tmp_path, monkeypatch):
    """The contrastive loss from step 2 (--contrast-after 1); interrupted after the checkpoint of step 4, the
    resumed run carries the started loss on (its projection trained) and ends bit for bit the same."""
    extra = ['--version', 'BaCon', '--contrast-after', 1, '--total-steps', 8, '--threshold', 0.3, '--abc-threshold',
             0.3]
    _, whole_ckpt, split, _ = interrupted_equals_whole(small_cifar10_root, tmp_path, monkeypatch, extra, step=4)
    assert [r['step'] for r in split] == [2, 4, 6, 8]
    assert bool(whole_ckpt['method']['contrasting']) and (whole_ckpt['method']['selected'] >= 0).any()
    first = torch.load(tmp_path / 'whole' / 'checkpoint.prev.pt', weights_only=False)['model']['contrast.weight']
    assert not torch.equal(first, whole_ckpt['model']['contrast.weight'])  # (the projection learns)


@pytest.mark.slow
def test_two_processes_hold_the_same_bacon_state(small_cifar10_root, tmp_path):
    """Under torchrun (gloo), with DDP finding the projection's parameters unused before the start: every
    buffer (counts, bank, centres) is bit-identical on both processes after every step. (No row of so short
    a run reaches the bank's 0.98 confidence: the bank stays as it started.)"""
    env = {**os.environ, 'PROBE_OUT': str(tmp_path), 'OMP_NUM_THREADS': '1'}
    args = own_flags([*BASE, '--data-dir', small_cifar10_root, '--out', tmp_path / 'ddp', '--version', 'BaCon',
                      '--contrast-after', 2, '--threshold', 0.3, '--abc-threshold', 0.3])
    result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                             '--master_port', str(random.randint(20000, 40000)), 'tests/ddp_probe.py',
                             *map(str, args)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=HANG_LIMIT)
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = [json.loads((tmp_path / f'method_rank{r}.json').read_text()) for r in (0, 1)]
    assert len(ranks[0]) == 6 and ranks[0] == ranks[1]
    for name in ('selected', 'centres', 'contrasting', 'step'):
        assert len({state[name] for state in ranks[0]}) > 1, name


@pytest.mark.slow
@pytest.mark.parametrize('aug', ['cpu', 'gpu'])
def test_a_40_step_launcher_run_on_both_augmentation_paths(cifar10_launcher_root, tmp_path, aug):
    out = tmp_path / 'run'
    result = launch('BaCon.sh', 'cifar10', 2, '--data-dir', cifar10_launcher_root, '--total-steps', 40,
                    '--eval-step', 20, *SMALL_RUN, '--aug', aug, '--contrast-after', 10, '--threshold', 0.2,
                    '--abc-threshold', 0.2, '--out', out)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in records] == [20, 40] and all(r['evaluated'] == 200 for r in records)
    assert 'step 11: BaCon: the contrastive loss starts' in (out / 'log.txt').read_text()


def test_two_heads_are_evaluated_by_the_auxiliary_one():
    output = NetworkOutput(torch.zeros(2, 3), torch.ones(2, 3))
    assert torch.equal(bacon().eval_logits(output), torch.ones(2, 3))


def test_one_step_of_a_real_run_leaves_the_projection_without_gradient_before_the_start(small_cifar10_root):
    args = get_args_parser().parse_args([*map(str, own_flags([*BASE, '--version', 'BaCon'])), '--data-dir',
                                         str(small_cifar10_root)])
    data = build_data(args)
    args.arch = 'wideresnet_usb'
    run_ = build_training(args, data, torch.device('cpu'), train.learn)
    batches, _ = train.method_batches(args, data, run_.method, 0, torch.device('cpu'))
    before = run_.model.contrast.weight.clone()
    train.train_step(run_, batches, torch.device('cpu'), args)
    assert run_.model.contrast.weight.grad is None and torch.equal(before, run_.model.contrast.weight)
