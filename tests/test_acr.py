"""ACR's estimate of the unlabeled distribution, its anchors and the dynamic tau1, against the
values computed by hand from Gank0078/ACR train.py (literal numbers, or sums written out in
float64 here), never the code's own helpers. ACR_d runs the same estimate, logged only."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from methods import ACR, ACRd
from methods.acr_d import AnchorEstimate
from conftest import step_views

P_L = [0.6, 0.3, 0.1]
CIFAR10_100 = [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]  # gamma_l = 100, N1 = 500


def skl(p, q):
    """0.5 KL(p || q) + 0.5 KL(q || p), natural log."""
    return sum(0.5 * a * math.log(a / b) + 0.5 * b * math.log(b / a) for a, b in zip(p, q))


def estimate(p_l=P_L, ema_u=0.99, est_epoch=0, eval_step=10):
    e = AnchorEstimate(torch.tensor(p_l), ema_u, est_epoch, eval_step, tau_max=2.0)
    e.epoch.fill_(est_epoch + 1)  # past est_epoch: the estimate runs
    return e


def close(actual, expected, tol=1e-4):
    actual = actual.detach().double().numpy() if torch.is_tensor(actual) else actual
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


def test_a_step_overwrites_per_class_the_last_row_wins():
    """labels [0,1,1,2,0], counted [1,1,0,1,0] -> n = [0,0,1] (counting would give [1,1,1]);
    from uniform with ema_u 0.99, u = [0.33, 0.33, 0.34]; S gets the KLs of the new u."""
    e = estimate()
    label, counted = torch.tensor([0, 1, 1, 2, 0]), torch.tensor([True, True, False, True, False])
    close(e.evidence(label, counted), [0, 0, 1], 0)
    e.step(label, counted)
    close(e.u, [0.33, 0.33, 0.34], 1e-6)
    u = [0.33, 0.33, 0.34]
    close(e.kl_sum, [skl(u, P_L), skl(u, [1 / 3] * 3), skl(u, P_L[::-1])], 1e-5)
    # the first row of a class wins nothing: [0,0] with counted [1,0] -> n[0] = 0, an empty step
    e.step(torch.tensor([0, 0]), torch.tensor([True, False]))
    close(e.u, [0.33, 0.33, 0.34], 1e-6)
    close(e.kl_sum, [skl(u, P_L), skl(u, [1 / 3] * 3), skl(u, P_L[::-1])], 1e-5)


def test_counting_rows_is_the_option():
    """--anchor-estimate counts: n = [1, 1, 1] on the same step, u = 0.99/3 + 0.01/3 each."""
    e = estimate()
    e.counts = True
    label, counted = torch.tensor([0, 1, 1, 2, 0]), torch.tensor([True, True, False, True, False])
    close(e.evidence(label, counted), [1, 1, 1], 0)
    e.step(torch.tensor([0, 0, 2]), torch.tensor([True, True, True]))
    close(e.u, [0.99 / 3 + 0.01 * 2 / 3, 0.99 / 3, 0.99 / 3 + 0.01 / 3], 1e-6)


def test_the_estimate_waits_for_est_epoch():
    e = estimate(est_epoch=2)
    e.epoch.fill_(2)  # epoch 2 is not past est_epoch 2
    e.step(torch.tensor([2]), torch.tensor([True]))
    close(e.u, [1 / 3] * 3, 1e-7)
    close(e.kl_sum, [0, 0, 0], 0)
    assert e.end_epoch() is not None  # the start of epoch 3 sets tau1 (from an empty S: 2/3)
    e.step(torch.tensor([2]), torch.tensor([True]))
    close(e.u, [0.99 / 3, 0.99 / 3, 0.99 / 3 + 0.01], 1e-6)


@pytest.mark.parametrize('u,distances,tau1', [
    (P_L, (0.0, 0.2206, 0.8959), 0.4259),
    ([1 / 3] * 3, (0.2206, 0.0, 0.2206), 0.7138),
    (P_L[::-1], (0.8959, 0.2206, 0.0), 1.0432)])
def test_anchor_distances_and_tau1(u, distances, tau1):
    """u held fixed over an epoch of 10 steps (ema_u 1), so S / eval_step is SKL(u, anchor)."""
    e = estimate(ema_u=1.0)
    e.u.copy_(torch.tensor(u))
    for _ in range(10):
        e.step(torch.tensor([0]), torch.tensor([True]))
    assert e.end_epoch() == pytest.approx(tau1, abs=1e-4)
    close(e.kl_mean, distances)
    assert e.metrics()['kl_anchors'] == pytest.approx(dict(zip(('consistent', 'uniform', 'reversed'), distances)),
                                                      abs=1e-4)
    close(e.kl_sum, [0, 0, 0], 0)  # S restarts every epoch


def test_s_is_divided_by_eval_step_not_by_the_steps_that_added():
    e = estimate(ema_u=1.0)
    e.u.copy_(torch.tensor(P_L))
    for i in range(10):  # 2 of 10 steps see no confident unlabeled row
        e.step(torch.tensor([0]), torch.tensor([i < 8]))
    assert e.end_epoch() == pytest.approx(0.4716, abs=1e-4)


@pytest.mark.parametrize('which,tau1', [('consistent', 0.0744), ('uniform', 0.8154), ('reversed', 1.7613)])
def test_tau1_on_cifar10_gamma_100(which, tau1):
    p_l = [c / sum(CIFAR10_100) for c in CIFAR10_100]
    u = {'consistent': p_l, 'uniform': [0.1] * 10, 'reversed': p_l[::-1]}[which]
    e = estimate(p_l=p_l, ema_u=1.0, eval_step=1)
    e.u.copy_(torch.tensor(u))
    e.step(torch.tensor([3]), torch.tensor([True]))
    assert e.end_epoch() == pytest.approx(tau1, abs=1e-4)


# --- the methods ---

def method(cls, est_epoch=1, eval_step=2, ema_u=0.5):
    args = SimpleNamespace(threshold=0.9, tau1=2.0, tau12=2.0, tau2=2.0, est_epoch=est_epoch, ema_u=ema_u,
                           eval_step=eval_step, anchor_estimate='presence')
    data = SimpleNamespace(name='cifar10', labeled_per_class=[6, 3, 1],
                           unlabeled_is_labeled=np.array([True, False, False, False]))
    return cls(args, data)


def step(m, h_weak, u_index):
    """One loss call with the given balanced-head weak logits (4 rows); g is flat."""
    g = torch.zeros(2 + 12, 3)
    h = torch.cat([torch.zeros(2, 3), torch.tensor(h_weak), torch.zeros(8, 3)])
    return m.loss(step_views(m, (g, h), torch.tensor([0, 1]), torch.tensor(u_index)))


H_WEAK = [[0.0, 9.0, 0.0],   # pool row 0: a labeled image -> not counted
          [9.0, 0.0, 0.0],   # class 0, counted, but a later row of class 0 is not confident
          [0.0, 0.0, 9.0],   # class 2, counted
          [0.5, 0.0, 0.0]]   # class 0, not confident: the last row of class 0 wins -> n = [0, 0, 1]


def adjustment(tau):
    return [math.log(p ** tau + 1e-12) for p in P_L]


@pytest.mark.parametrize('cls', [ACR, ACRd])
def test_tau1_schedule_only_a1_moves_and_only_for_acr(cls):
    """est_epoch 1: tau1 = 2 in epochs 0-1, exactly 2/3 in epoch 2 (S of epoch 1 is empty), then from
    epoch 2's mean KLs. ACR_d computes the same tau1 (logged) and keeps a_1 at tau 2."""
    m = method(cls)
    for epoch in range(2):
        step(m, H_WEAK, [0, 1, 2, 3])
        close(m.unlabeled_prior(), [1 / 3] * 3, 1e-7)  # not past est_epoch: no update
        m.end_epoch()
        assert m.metrics()['tau1'] == (2.0 if epoch == 0 else pytest.approx(2 / 3, abs=1e-7))
    assert float(m.tau1) == pytest.approx(2 / 3, abs=1e-7)
    close(m.adjust_1, adjustment(2 / 3 if cls is ACR else 2), 1e-6)
    step(m, H_WEAK, [0, 1, 2, 3])  # epoch 2: n = [0, 0, 1]; u = 0.5 uniform + 0.5 [0,0,1]
    u = [1 / 6, 1 / 6, 2 / 3]
    close(m.unlabeled_prior(), u, 1e-6)
    step(m, H_WEAK, [0, 1, 2, 3])
    u2 = [1 / 12, 1 / 12, 5 / 6]
    close(m.unlabeled_prior(), u2, 1e-6)
    m.end_epoch()
    s = [(skl(u, a) + skl(u2, a)) / 2 for a in (P_L, [1 / 3] * 3, P_L[::-1])]
    tau1 = 2 * math.exp(s[0]) / sum(math.exp(x) for x in s)
    assert m.metrics()['tau1'] == pytest.approx(tau1, abs=1e-5)
    close(m.adjust_1, adjustment(tau1 if cls is ACR else 2), 1e-5)
    for name in ('adjust_12', 'adjust_2'):
        close(getattr(m, name), adjustment(2), 1e-6)
    assert tau1 > 1  # the pool leans to the tail: a stronger adjustment than for a uniform one


def test_acr_pseudo_labels_follow_the_new_adjustment():
    """After tau1 moves to 2/3, the standard head's pseudo labels are argmax softmax(g - log p_l^(2/3))."""
    m = method(ACR, est_epoch=0)
    m.end_epoch()  # start of epoch 1: tau1 = 2/3
    g_weak = [[1.0, 0.6, 0.0], [2.0, 0.0, 1.0]]
    # by hand: g - a(2/3) = [1 + .3405, .6 + .8026, 0 + 1.5351] -> class 2; [2 + .3405, .8026, 1 + 1.5351] -> 2
    a = adjustment(2 / 3)
    expected = [int(np.argmax(np.asarray(row) - a)) for row in g_weak]
    assert expected == [2, 2]
    assert [int(np.argmax(row)) for row in g_weak] == [0, 0]
    g = torch.cat([torch.zeros(2, 3), torch.tensor(g_weak), torch.zeros(4, 3)])
    _, _, _, label = m.loss(step_views(m, (g, torch.zeros(8, 3)), torch.tensor([0, 1]), torch.tensor([1, 2])))
    assert label.tolist() == expected
    close(m.adjust_1, a, 1e-6)


def test_state_dict_holds_the_estimate_and_tau1():
    m = method(ACR, est_epoch=0)
    m.end_epoch()
    step(m, H_WEAK, [0, 1, 2, 3])
    state = m.state_dict()
    assert {'estimate.u', 'estimate.kl_sum', 'estimate.epoch', 'tau1', 'adjust_1'} <= set(state)
    restored = method(ACR, est_epoch=0)
    restored.load_state_dict(state)
    for name, value in m.state_dict().items():
        assert torch.equal(value, restored.state_dict()[name]), name
    m.end_epoch()
    restored.end_epoch()
    assert torch.equal(m.adjust_1, restored.adjust_1) and float(m.tau1) != pytest.approx(2 / 3)
