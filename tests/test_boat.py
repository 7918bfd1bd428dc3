"""BOAT's step against values computed by hand from Gank0078/BOAT train.py:496-602 (literal numbers,
or its formulas written out here in float64 in the official order), never the method's own code."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import test_launchers
from conftest import step_views
from test_launchers import ROWS, SMALL_RUN, assert_row, launch, launched_args
from methods import BOAT
from models import NetworkOutput

CIFAR10_100 = [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]  # gamma_l = 100, N1 = 500
echo_python = test_launchers.echo_python  # the fixture: a python that prints its arguments


def boat(counts=CIFAR10_100, **options):
    settings = dict(threshold=0.95, tau=1.0, tau2=2.0, tau3=2.0, tau4=1.0, tau_b=2.0, tw=1.0, emap=0.999)
    settings.update(options)
    data = SimpleNamespace(name='cifar10', labeled_per_class=list(counts))
    return BOAT(SimpleNamespace(**settings), data)


def step(method, g, h, y):
    """The method's loss on a step whose rows are the labeled weak view, then the unlabeled weak,
    strong and strong2 views (`g`, `h`: the two heads' logits of every row, in that order)."""
    output = NetworkOutput(torch.as_tensor(g, dtype=torch.float32), torch.as_tensor(h, dtype=torch.float32))
    return method.loss(step_views(method, output, y, torch.arange((len(g) - len(y)) // 3)))


def softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def cross_entropy(z, y):
    return -np.log(softmax(z)[np.arange(len(y)), y])


def reference_step(state, g, h, y, p_l, o):
    """One official step in float64, in train.py's order; `state` (qhat, qbal, confm, simm) is updated."""
    g, h, n = np.asarray(g, np.float64), np.asarray(h, np.float64), len(y)
    k = (len(g) - n) // 3
    gx, gw, gs = g[:n], g[n:n + k], g[n + k:]
    hx, hw, hs = h[:n], h[n:n + k], h[n + k:]
    loss_x_b = cross_entropy(hx + np.log(p_l ** o['tau2'] + 1e-12), y).mean()
    state['qhat'] = o['emap'] * state['qhat'] + (1 - o['emap']) * softmax(gw).mean(0)
    p = softmax(gw)
    label, mask = p.argmax(-1), p.max(-1) >= o['threshold']
    p_b = softmax(gw - o['tau'] * np.log(state['qhat']))
    label_b, conf_b = p_b.argmax(-1), p_b.max(-1)
    state['qbal'] = o['emap'] * state['qbal'] + (1 - o['emap']) * softmax(hw).mean(0)
    loss_x = cross_entropy(gx + o['tau3'] * (np.log(p_l) - np.log(state['qbal'])), y).mean()
    t = o['tw']
    s = (softmax(gw / t) * softmax((gw - o['tau4'] * np.log(state['qhat'])) / t)).max(-1)
    state['confm'] = 0.9 * state['confm'] + 0.1 * conf_b.mean()
    state['simm'] = 0.9 * state['simm'] + 0.1 * s.mean()
    w = s * state['confm'] / state['simm']
    loss_u = (cross_entropy(gs, np.tile(label, 2)) * np.tile(mask, 2)).mean()
    loss_u_b = (cross_entropy(hs, np.tile(label_b, 2)) * np.tile(w, 2)).mean()
    return {'loss_x_g': loss_x, 'loss_x_h': loss_x_b, 'loss_u_g': loss_u, 'loss_u_h': loss_u_b}, label, mask


def test_the_first_step_on_zero_logits_by_hand():
    """All logits 0: qhat and qbal stay uniform; c_b = 1/10, s = 1/100, confm = 0.9 * 0.1 + 0.1 * 0.1 = 0.1,
    simm = 0.09 + 0.001 = 0.091, w = 0.01 * 0.1 / 0.091 = 0.010989; the standard head's labeled loss
    is the alignment's alone: -log softmax(2 (log p_l + log 10))_y, 0.44268 for class 0 and 9.65302 for
    class 9; the balanced unlabeled loss w * log 10 on every row, nothing passes the threshold."""
    method = boat()
    zeros = np.zeros((2 + 3 * 4, 10))
    result = step(method, zeros, zeros, [0, 9])
    assert torch.allclose(method.qhat, torch.full((10,), 0.1)) and torch.allclose(method.qbal, torch.full((10,), 0.1))
    assert math.isclose(float(method.confm), 0.1, rel_tol=1e-6) and math.isclose(float(method.simm), 0.091,
                                                                                 rel_tol=1e-6)
    assert math.isclose(float(result.terms['weight']), 0.01 * 0.1 / 0.091, rel_tol=1e-5)
    assert math.isclose(float(result.terms['loss_x_g']), (0.44268 + 9.65302) / 2, rel_tol=1e-4)
    assert math.isclose(float(result.terms['loss_u_h']), 0.010989 * math.log(10), rel_tol=1e-4)
    assert float(result.terms['loss_u_g']) == 0 and not result.mask.any()


def test_two_steps_follow_the_official_order():
    """Random logits over two steps: every term, both pseudo labels, the mask and the state equal the
    official formulas in their order (qhat updated before the debiased pseudo labels read it, qbal
    before the alignment, confm and simm before the weight)."""
    generator = np.random.default_rng(0)
    options = dict(threshold=0.6, tau=1.0, tau2=2.0, tau3=2.0, tau4=1.0, tau_b=2.0, tw=0.7, emap=0.9)
    method, p_l = boat(**options), np.asarray(CIFAR10_100, np.float64) / sum(CIFAR10_100)
    state = {'qhat': np.full(10, 0.1), 'qbal': np.full(10, 0.1), 'confm': 0.1, 'simm': 0.1}
    for _ in range(2):
        g, h = generator.normal(0, 3, (4 + 3 * 6, 10)), generator.normal(0, 3, (4 + 3 * 6, 10))
        y = generator.integers(0, 10, 4)
        result = step(method, g, h, y)
        expected, label, mask = reference_step(state, g, h, y, p_l, options)
        for name, value in expected.items():
            assert math.isclose(float(result.terms[name]), value, rel_tol=1e-4, abs_tol=1e-6), name
        assert result.pseudo_label.tolist() == label.tolist() and result.mask.tolist() == mask.tolist()
        assert 0 < mask.sum() < len(mask)  # (both kinds of row)
        np.testing.assert_allclose(method.qhat.numpy(), state['qhat'], rtol=1e-5)
        np.testing.assert_allclose(method.qbal.numpy(), state['qbal'], rtol=1e-5)
        assert math.isclose(float(method.confm), state['confm'], rel_tol=1e-5)
        assert math.isclose(float(method.simm), state['simm'], rel_tol=1e-5)
    total = sum(float(result.terms[name]) for name in expected)
    assert math.isclose(float(result.loss), total, rel_tol=1e-5)


def test_the_balanced_pseudo_label_is_the_debiased_standard_heads():
    """A row whose standard head gives 6/17 to class 0 and 3/17 to class 1: with qhat 0.9 on class 0
    (and 0.1/9 elsewhere) the debiased label is class 1 (its logit log 3 - log(0.1/9) beats log 6 -
    log 0.9 and the others' -log(0.1/9)), whatever the balanced head itself predicts (class 5 here):
    the balanced head's strong views learn class 1, weighted; the standard label stays class 0."""
    method = boat(emap=1.0)  # (qhat stays at the value set here)
    method.qhat.copy_(torch.tensor([0.9] + [0.1 / 9] * 9))
    g, h = np.zeros((1 + 3, 10)), np.zeros((1 + 3, 10))
    g[1, :2] = [math.log(6), math.log(3)]
    h[1, 5] = 50.0
    h[2:, 1] = 2.0  # the strong views: cross-entropy -log(e^2 / (e^2 + 9)) for class 1, another for the rest
    result = step(method, g, h, [0])
    assert result.pseudo_label.tolist() == [0] and result.mask.tolist() == [False]
    expected = float(result.terms['weight']) * -math.log(math.exp(2) / (math.exp(2) + 9))
    assert math.isclose(float(result.terms['loss_u_h']), expected, rel_tol=1e-5)


def test_eval_logits_are_the_balanced_head_adjusted_by_qbal():
    method = boat()
    balanced = torch.tensor([[1.0, 0.5, 0.0] + [0.0] * 7])
    uniform = method.eval_logits(NetworkOutput(torch.zeros(1, 10), balanced))
    assert torch.allclose(uniform, balanced + 2 * math.log(10))  # qbal uniform: a constant shift
    method.qbal.copy_(torch.tensor(CIFAR10_100, dtype=torch.float32) / sum(CIFAR10_100))
    shifted = method.eval_logits(NetworkOutput(torch.zeros(1, 10), balanced))
    expected = balanced - 2 * torch.log(torch.tensor(CIFAR10_100, dtype=torch.float32) / sum(CIFAR10_100))
    assert torch.allclose(shifted, expected) and shifted.argmax().item() == 9  # toward the tail
    assert torch.allclose(method.unlabeled_prior(), method.qbal)


def test_the_state_round_trips_through_a_checkpoint():
    """qhat, qbal, confm and simm (the official code saves the first two only) resume exactly."""
    generator = np.random.default_rng(1)
    first = boat()
    g, h = generator.normal(0, 3, (2 + 3 * 4, 10)), generator.normal(0, 3, (2 + 3 * 4, 10))
    step(first, g, h, [1, 2])
    second = boat()
    second.load_state_dict(first.state_dict())
    assert set(first.state_dict()) >= {'qhat', 'qbal', 'confm', 'simm'}
    assert float(step(first, g, h, [1, 2]).loss) == float(step(second, g, h, [1, 2]).loss)


BOAT_RECIPE = {'cifar10': 1.0, 'cifar100': 2.0, 'stl10': 1.0, 'digits': 1.0}  # --tau per dataset


@pytest.mark.parametrize('dataset', list(BOAT_RECIPE))
def test_every_row_of_the_boat_launcher(echo_python, dataset):
    """Its README's recipe on every row (the paper's and USB's), with its --tau per dataset."""
    for index, (n, m, gl, gu, mode, size) in enumerate(ROWS[dataset]):
        args = launched_args(echo_python, 'BOAT.sh', dataset, index)
        assert_row(args, 'BOAT.sh', dataset, n, m, gl, gu, mode, size)
        own = (args.threshold, args.tau, args.tau2, args.tau3, args.tau4, args.tau_b, args.tw, args.emap)
        assert own == (0.95, BOAT_RECIPE[dataset], 2, 2, 1, 2, 1, 0.999), (dataset, index)
        budget = (args.lr, args.total_steps, args.batch_size, args.mu, args.lr_schedule)
        usb = args.randaugment == 'usb'
        assert budget == ((0.1, 1200, 8, 6, 'cosine') if dataset == 'digits' else (0.03, 262144, 64, 2, 'cosine')
                          if usb else (0.03, 250000, 64, 1, 'cosine')), (dataset, index)


@pytest.mark.parametrize('dataset', ['smallimagenet', 'smallimagenet_1k'])
def test_the_launcher_says_why_boat_has_no_imagenet_recipe(dataset):
    result = launch('BOAT.sh', dataset, 0)
    assert (result.returncode, result.stdout) == (2, '')
    assert result.stderr == (f"error: BOAT's official code cannot train on {dataset} (its ResNet-50 has no balanced "
                             f"head); no recipe\n")


@pytest.mark.slow
@pytest.mark.parametrize('aug', ['cpu', 'gpu'])
def test_a_40_step_launcher_run_on_both_augmentation_paths(cifar10_launcher_root, tmp_path, aug):
    """The reversed CIFAR-10 row (index 2) for 40 steps: two evaluations, qbal moved off uniform (the
    logged estimate), the scores moved, checkpoints written."""
    out = tmp_path / 'run'
    result = launch('BOAT.sh', 'cifar10', 2, '--data-dir', cifar10_launcher_root, '--total-steps', 40, '--eval-step',
                    20, *SMALL_RUN, '--aug', aug, '--out', out)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in records] == [20, 40] and all(r['evaluated'] == 200 for r in records)
    assert abs(sum(records[-1]['pi_u']) - 1) < 1e-5 and records[-1]['pi_u'] != [0.1] * 10
    assert records[0]['confm'] != records[1]['confm'] and (out / 'checkpoint.pt').exists()
