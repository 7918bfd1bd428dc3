"""FixMatch w/ CoSSL (methods/cossl.py): TFE's features and labels by hand, the classifier's own
Adam, the class-balanced draws, the stage boundary, exact resume across it and sh/CoSSL.sh."""
import copy
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from core import checkpoint

import test_launchers
import train
from conftest import HANG_LIMIT, ROOT
from methods import Batch
from models import NetworkOutput
from methods.cossl import (CoSSL, LinearClassifier, imprinted_probabilities, linear_cross_entropy, offline_tfe_set,
                           tail_feature_enhancement, tfe_probability)
from test_launchers import ROWS, assert_row, launch, launched_args
from test_cpg import CPG_ROWS_OF
from test_usb_protocol import USB_ROWS
from test_speed import meta_training
from test_resume import BASE, interrupted_equals_whole, own_flags, run
from conftest import step_views
from core.command_line import get_args_parser

echo_python = test_launchers.echo_python  # the fixture: a python that prints its arguments

# co-learning from step 4 of 6 (epochs of 2 steps), a warm-up of 3 classifier steps
STAGE = ['--version', 'CoSSL', '--cossl-start', 4, '--tfe-warmup-steps', 3, '--lr', 0.002]


def test_tfe_probability_and_features_by_hand():
    # (n_max - n_c) / n_max for counts 100, 50, 10: the head never mixes, the tail almost always
    assert torch.allclose(tfe_probability([100, 50, 10]), torch.tensor([0.0, 0.5, 0.9]))
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 8.0]])
    u = torch.tensor([[5.0, 6.0], [7.0, 8.0], [4.0, 0.0]])
    mix = torch.tensor([True, False, True])
    lam = torch.tensor([0.75, 0.9, 0.5])
    # row 0: 0.75 [1, 2] + 0.25 [5, 6] = [2, 3]; row 1 is not mixed: x itself; row 2: 0.5 [0, 8] + 0.5 [4, 0]
    expected = torch.tensor([[2.0, 3.0], [3.0, 4.0], [2.0, 4.0]])
    assert torch.equal(tail_feature_enhancement(x, u, mix, lam), expected)


def test_offline_tfe_set_by_hand():
    """Counts 2, 1: class 1 gets 2 - 1 = 1 feature l a + (1 - l) b, a its one labeled feature, b the
    other feature the imprinted classifier finds most class-1-like (here an unlabeled one)."""
    labeled = torch.tensor([[1.0, 0.0], [0.8, 0.2], [0.0, 4.0]])
    labels = torch.tensor([0, 0, 1])
    labeled_probs = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]])
    unlabeled = torch.tensor([[2.0, 2.0], [6.0, 0.0]])
    unlabeled_probs = torch.tensor([[0.4, 0.6], [0.95, 0.05]])  # [2, 2] is the most class-1-like of the others
    features, targets = offline_tfe_set(labeled, labels, labeled_probs, unlabeled, unlabeled_probs, [2, 1],
                                        np.random.default_rng(0))
    lam = np.random.default_rng(0)
    lam.choice(1, 1)
    lam = float(lam.beta(0.75, 0.75, 1)[0])
    assert torch.equal(features[:3], labeled) and targets.tolist() == [0, 0, 1, 1]
    expected = lam * torch.tensor([0.0, 4.0]) + (1 - lam) * torch.tensor([2.0, 2.0])
    assert torch.allclose(features[3], expected) and 0 < lam < 1
    probabilities = imprinted_probabilities(labeled, labels, 2)  # unit class means [0.9, 0.1]/|.|, [0, 1]
    mean0 = torch.tensor([0.9, 0.1]) / torch.tensor([0.9, 0.1]).norm()
    assert torch.allclose(probabilities(torch.tensor([[1.0, 1.0]])),
                          torch.softmax(torch.stack([mean0.sum(), torch.tensor(1.0)]), 0)[None])


def test_classifier_gradient_and_adam_equal_torch():
    """The closed-form gradient is autograd's; the hand-written Adam (weight decay on the weight
    only, as the official param groups) is torch.optim.Adam's; the EMA is decay * ema + (1 - decay) w."""
    g = torch.Generator().manual_seed(0)
    features, labels = torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)
    classifier = LinearClassifier(5, 3)
    classifier.reset(torch.Generator().manual_seed(1))
    weight = classifier.weight.clone().requires_grad_()
    bias = classifier.bias.clone().requires_grad_()
    loss, grad_weight, grad_bias = linear_cross_entropy(features, labels, weight.detach(), bias.detach())
    torch.nn.functional.cross_entropy(features @ weight.T + bias, labels).backward()
    assert torch.allclose(grad_weight, weight.grad, atol=1e-6) and torch.allclose(grad_bias, bias.grad, atol=1e-6)
    adam = torch.optim.Adam([{'params': [weight], 'weight_decay': 0.1}, {'params': [bias], 'weight_decay': 0}],
                            lr=0.01)
    ema = weight.detach().clone()
    for _ in range(3):
        adam.zero_grad()
        torch.nn.functional.cross_entropy(features @ weight.T + bias, labels).backward()
        adam.step()
        ema = 0.9 * ema + 0.1 * weight.detach()
        classifier.step(features, labels, lr=0.01, weight_decay=0.1, ema_decay=0.9)
    assert torch.allclose(classifier.weight, weight.detach(), atol=1e-6)
    assert torch.allclose(classifier.bias, bias.detach(), atol=1e-6)
    assert torch.allclose(classifier.ema_weight, ema, atol=1e-6) and int(classifier.steps) == 3


class Split:
    """The few fields of a split CoSSL reads: 3 classes with 6, 3 and 1 labeled images."""
    num_classes, labeled_per_class = 3, [6, 3, 1]
    labeled_idx = np.arange(10)
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1 + [0] * 20)
    unlabeled_idx = np.arange(10, 30)
    labeled_targets = None
    images = np.zeros((30, 8, 8, 3), np.uint8)
    mean, std, flip, cutout = (0.5,) * 3, (0.25,) * 3, True, 4


def cossl(num_features=4, **overrides):
    args = get_args_parser().parse_args(['--version', 'CoSSL'])
    vars(args).update(overrides)
    return CoSSL(args, Split(), num_features=num_features)


class MeanEncoder(torch.nn.Module):
    """A stand-in network: its features are the images' channel means, its logits their negation."""

    def forward(self, x, with_features=False):
        features = x.float().mean(dim=(2, 3))
        return NetworkOutput(-features, features=features if with_features else None)


def test_class_balanced_draws():
    """Every class is drawn equally often whatever its labeled count, each row is an image of its
    drawn class, and the whole-set draws cover labeled and unlabeled rows."""
    x_rows, classes, u_rows, coin, lam = cossl().draw_tfe_batch(torch.Generator().manual_seed(0), 30000)
    assert np.array_equal(Split.labels[x_rows], classes.numpy())
    assert np.allclose(np.bincount(classes.numpy(), minlength=3) / 30000, 1 / 3, atol=0.01)
    assert set(x_rows[classes.numpy() == 2]) == {9}  # the tail's one image
    assert set(u_rows) == set(range(30)) and 0 <= coin.min() and lam.max() < 1


def test_colearning_pseudo_labels_come_from_the_classifier_on_the_ema_features():
    """In co-learning the pseudo label and the mask are the classifier's on the EMA network's
    features of the weak unlabeled view, not the network's own logits; then one classifier step."""
    method = cossl(num_features=3, threshold=0.9, batch_size=2, mu=2)
    method.colearning = True
    method.classifier.weight.copy_(torch.eye(3) * 10)
    weak_means = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.1], [0.3, 0.3, 0.4]])
    images = torch.zeros(2 + 3 * 4, 3, 8, 8)
    images[2:6] = weak_means[:, :, None, None]  # labeled rows first, then the weak, strong, strong views
    method.before_forward(Batch.of(method, images, torch.tensor([0, 1]), torch.arange(4)), MeanEncoder())
    # softmax(10 f): rows 0 and 1 confident in class 0 and 1; rows 2 and 3 not confident
    assert method.pseudo_label.tolist() == [0, 1, 2, 2]
    assert (method.confidence >= 0.9).tolist() == [True, True, False, False]
    assert int(method.classifier.steps) == 1 and method.loss_tfe > 0
    logits = torch.zeros(14, 3)
    logits[2:6, 2] = 50.0  # the network's own weak logits say class 2, confidently: not used
    result = method.loss(step_views(method, logits, torch.tensor([0, 1]), torch.arange(4)))
    assert result.pseudo_label.tolist() == [0, 1, 2, 2] and result.mask.tolist() == [True, True, False, False]
    method.colearning = False  # pre-training: FixMatch on the network's own weak logits
    result = method.loss(step_views(method, logits, torch.tensor([0, 1]), torch.arange(4)))
    assert result.pseudo_label.tolist() == [2] * 4 and result.mask.all() and result.terms['loss_tfe'] == 0


def saved_states(monkeypatch):
    """Every checkpoint.pt a run writes, by step (deep copies)."""
    saved, save = {}, checkpoint.save_checkpoint

    def keep(state, path, **kwargs):
        save(state, path, **kwargs)
        if path.name == 'checkpoint.pt':
            saved[state['step']] = copy.deepcopy(state)

    monkeypatch.setattr(train, 'save_checkpoint', keep)
    return saved


def test_stage_boundary_changes_only_the_method(small_cifar10_root, tmp_path, monkeypatch):
    """Up to the boundary (step 4) a run equals one whose co-learning never starts; at it only the
    classifier and the stage change: the network, its EMA, the optimizer and the schedule carry on;
    after it the classifier trains and is evaluated."""
    saved = saved_states(monkeypatch)
    starts = []
    start_stage = CoSSL.start_stage

    def record(self, ema_network, data, device, network):
        before = copy.deepcopy(ema_network.state_dict())
        line = start_stage(self, ema_network, data, device, network)
        starts.append((before, copy.deepcopy(ema_network.state_dict()), copy.deepcopy(self.state_dict())))
        return line

    monkeypatch.setattr(CoSSL, 'start_stage', record)
    assert run(small_cifar10_root, tmp_path / 'stage', *STAGE) == 0
    staged = dict(saved)
    saved.clear()
    assert run(small_cifar10_root, tmp_path / 'never', *STAGE[:2], '--cossl-start', 6, *STAGE[4:]) == 0
    never = dict(saved)

    assert len(starts) == 1
    for step in (2, 4):  # nothing differs before the boundary
        for key in ('model', 'ema', 'method'):
            for name, tensor in never[step][key].items():
                assert torch.equal(tensor, staged[step][key][name]), (step, key, name)
        assert never[step]['record']['loss_tfe'] == 0 == staged[step]['record']['loss_tfe']
    ema_before, ema_after, method_after = starts[0]
    assert all(torch.equal(ema_before[name], ema_after[name]) for name in ema_before)  # the encoder carries on
    before = staged[4]['method']
    assert not before['colearning_started'] and method_after['colearning_started']
    assert not before['classifier.weight'].any() and method_after['classifier.weight'].any()
    assert not torch.equal(method_after['classifier.ema_weight'], method_after['classifier.weight'])  # warmed up
    assert int(method_after['classifier.steps']) == 0  # its Adam starts afresh after the warm-up
    after = staged[6]
    assert after['scheduler']['last_epoch'] == 6  # the schedule was not restarted (a generation's would be)
    # the network's Adam carries on (its moments, its steps); its decoupled weight decay 0.02 becomes L2 0.02 lr
    assert [g['decoupled_weight_decay'] for g in staged[4]['optimizer']['param_groups']] == [True]
    assert [(g['decoupled_weight_decay'], g['weight_decay']) for g in after['optimizer']['param_groups']] == \
        [(False, pytest.approx(0.02 * 0.002))]
    assert int(after['optimizer']['state'][0]['step']) == 6
    assert int(after['method']['classifier.steps']) == 2 and after['record']['loss_tfe'] > 0
    assert never[6]['record']['loss_tfe'] == 0 and not never[6]['method']['classifier.weight'].any()
    assert after['record']['top1'] != never[6]['record']['top1'] or \
        not torch.equal(after['model']['fc.weight'], never[6]['model']['fc.weight'])
    log = (tmp_path / 'stage' / 'log.txt').read_text()
    assert log.count('step 4: co-learning starts') == 1


def test_evaluated_network_is_the_ema_classifier_on_the_encoder():
    method = cossl()
    network = torch.nn.Linear(2, 2)
    assert method.eval_network(network) is network  # pre-training: the network's own head
    method.colearning = True
    method.classifier = LinearClassifier(2, 3)
    method.classifier.ema_weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    method.classifier.weight.fill_(7.0)  # the online classifier is not the one evaluated

    class Encoder(torch.nn.Module):
        def forward(self, x, with_features=False):
            return NetworkOutput(x.sum(1, keepdim=True), features=x)

    encoder = Encoder().eval()
    evaluated = method.eval_network(encoder)
    assert torch.equal(evaluated(torch.tensor([[2.0, 3.0]])).logits, torch.tensor([[2.0, 3.0, 5.0]]))
    assert not evaluated.training


# crashed before the boundary, at it (the warm-up runs after resuming, offline or online) and in
# co-learning (the classifier's Adam and its draws carry on)
@pytest.mark.parametrize('start,crash_at,warmup', [(4, 2, 'offline'), (4, 4, 'offline'), (4, 4, 'online'),
                                                   (2, 4, 'offline')])
def test_resume_across_the_boundary_equals_an_uninterrupted_run(small_cifar10_root, tmp_path, monkeypatch, start,
                                                                crash_at, warmup):
    stage = [*STAGE[:2], '--cossl-start', start, *STAGE[4:], '--tfe-warmup', warmup]
    whole, _, _, _ = interrupted_equals_whole(small_cifar10_root, tmp_path, monkeypatch, stage, step=crash_at)
    assert whole[-1]['loss_tfe'] > 0


def expected_recipe(dataset):
    tfe = ('weak', 'online') if dataset.startswith('smallimagenet') else ('strong', 'offline')
    if dataset == 'digits':
        return 0.1, 'cosine', 'sgd', 1200, 8, 6, 0.95, 960, 40, 0.6, 0.002, 5e-4, *tfe
    return 0.002, 'constant', 'adam', 250000, 64, 1, 0.95, 200000, 5000, 0.6, 0.002, 5e-4, *tfe


@pytest.mark.parametrize('dataset', list(ROWS))
def test_every_row_of_the_launcher(echo_python, dataset):
    for index, (n, m, gl, gu, mode, size) in enumerate(ROWS[dataset]):
        args = launched_args(echo_python, 'CoSSL.sh', dataset, index)
        assert_row(args, 'CoSSL.sh', dataset, n, m, gl, gu, mode, size)
        assert (args.lr, args.lr_schedule, args.optimizer, args.total_steps, args.batch_size, args.mu,
                args.threshold, args.cossl_start, args.tfe_warmup_steps, args.max_lam, args.lr_tfe, args.wd_tfe,
                args.tfe_view, args.tfe_warmup) == expected_recipe(dataset)
    result = launch('CoSSL.sh', dataset, len(ROWS[dataset]) + len(USB_ROWS.get(dataset, ())) +
                    len(CPG_ROWS_OF.get(dataset, ())))  # (past every row)
    assert result.returncode == 2 and 'is not a row of' in result.stderr


@pytest.mark.slow
def test_launcher_short_run(cifar10_launcher_root, tmp_path):
    """40 steps of the consistent CIFAR-10 row, co-learning from step 20."""
    out = tmp_path / 'run'
    result = launch('CoSSL.sh', 'cifar10', 0, '--data-dir', cifar10_launcher_root, '--total-steps', 40,
                    '--eval-step', 20, '--batch-size', 4, '--mu', 2, '--num-workers', 0, '--depth', 10,
                    '--widen-factor', 1, '--cossl-start', 20, '--tfe-warmup-steps', 5, '--out', out)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in records] == [20, 40] and all(r['evaluated'] == 200 for r in records)
    assert records[0]['loss_tfe'] == 0 and records[1]['loss_tfe'] > 0
    assert 'step 20: co-learning starts' in (out / 'log.txt').read_text()
    assert json.loads((out / 'args.json').read_text())['version'] == 'CoSSL'


def test_cossl_device_steps_never_read_device_values_back(small_cifar10_root):
    """Pre-training and co-learning steps (the classifier's pseudo labels, its TFE batch, its Adam
    step and EMA) on the meta device, whose tensors have no values: a host read raises there. The
    warm-up (once, at the boundary) is left out: co-learning is switched on by hand."""
    run, steps = meta_training(small_cifar10_root, 'CoSSL', '--lr', '0.002')
    for step in range(1, 5):
        run.method.colearning = step > 2
        loss, _ = steps(step)
    assert loss.device == torch.device('meta') and run.method.classifier.host_steps == 2


@pytest.mark.slow
def test_two_processes_hold_the_same_cossl_state(small_cifar10_root, tmp_path):
    """Under torchrun (gloo) each process draws its own TFE batches and the classifier's gradients are
    averaged: every buffer is bit-identical on both processes after every step, across the boundary."""
    env = {**os.environ, 'PROBE_OUT': str(tmp_path), 'OMP_NUM_THREADS': '1'}
    args = own_flags([*BASE, '--data-dir', small_cifar10_root, '--out', tmp_path / 'ddp', *STAGE[:2],
                      '--cossl-start', 2, *STAGE[4:]])
    result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                             '--master_port', str(random.randint(20000, 40000)), 'tests/ddp_probe.py',
                             *map(str, args)], cwd=ROOT, capture_output=True, text=True, env=env,
                            timeout=HANG_LIMIT)
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = [json.loads((tmp_path / f'method_rank{r}.json').read_text()) for r in (0, 1)]
    assert len(ranks[0]) == 6 and ranks[0] == ranks[1]
    assert len({state['classifier.ema_weight'] for state in ranks[0]}) > 1  # and the classifier moved


def test_the_classifier_learns_at_lr_tfe_in_its_warm_up_and_at_lr_in_co_learning(monkeypatch):
    """utils/tfe_init.py warms the classifier up at lr_tfe; train_cifar_fix_cossl.py then trains it at
    --lr (the ImageNet-127 script at lr_tfe: its launcher rows pass --lr-classifier)."""
    for overrides, expected in (({}, 0.5), ({'lr_classifier': 0.002}, 0.002)):
        method = cossl(num_features=3, lr=0.5, lr_tfe=0.01, tfe_warmup_steps=2, tfe_warmup='online', batch_size=2,
                       mu=2, **overrides)
        seen, step = [], method.classifier.step
        monkeypatch.setattr(method.classifier, 'step', lambda *a: seen.append(a[2]) or step(*a))
        method.start_stage(MeanEncoder(), None, torch.device('cpu'))
        images = Batch.of(method, torch.zeros(2 + 3 * 4, 3, 8, 8), torch.tensor([0, 1]), torch.arange(4))
        method.before_forward(images, MeanEncoder())
        assert seen == [0.01, 0.01, expected]
