"""SimPro and ACR_d against values worked out by hand from their formulas (LeapLabTHU/SimPro
SimPro/train.py, ACR_d/train.py).

Every reference below is written from the formulas (explicit log-softmax sums in float64 over
tiny hand-made logits, or literal numbers), never by calling the methods' own helpers. The
logits are chosen so that the usual slips change the numbers: a flipped adjustment sign, a
missing mask, hard instead of soft targets, a missing / r, the +1 of the pi_u normaliser, a
wrong OR of masks, swapped tau's, the wrong head.
"""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from methods import ACRd, ClassPrior, SimPro, scale_ratio, symmetric_kl
from models import NetworkOutput
from conftest import step_views


# --- independent references (float64, straight from the formulas) ---

def log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def softmax(z):
    return np.exp(log_softmax(z))


def adjustment(prior, tau):
    """a = log(prior ** tau + 1e-12)."""
    return np.log(np.asarray(prior, dtype=np.float64) ** tau + 1e-12)


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def close(actual, expected, tol=1e-5):
    actual = actual.detach().double().numpy() if torch.is_tensor(actual) else np.asarray(actual, np.float64)
    np.testing.assert_allclose(actual, np.asarray(expected, np.float64), rtol=tol, atol=tol)


# --- 1. scale ratio r ---

@pytest.mark.parametrize('num_labeled,num_unlabeled,batch_size,mu,expected', [
    (1162, 40000, 64, 8, 78 / 18),   # 40000 // 512 = 78, 1162 // 64 = 18
    (10, 60, 2, 4, 7 / 5),           # 60 // 8 = 7 (not 7.5), 10 // 2 = 5
    (130, 1000, 64, 7, 1.0),         # 1000 // 448 = 2, 130 // 64 = 2 (unfloored: 1.099)
    (100, 1000, 10, 1, 10.0),
    (1500, 3000, 64, 2, 1.0),        # 3000 // 128 = 23, 1500 // 64 = 23
])
def test_scale_ratio_floors_both_batch_counts(num_labeled, num_unlabeled, batch_size, mu, expected):
    assert scale_ratio(num_labeled, num_unlabeled, batch_size, mu) == pytest.approx(expected, rel=1e-12)


# --- SimPro ---

R = 7 / 5  # 60 unlabeled // (mu 4 * B 2) = 7 batches; 10 labeled // 2 = 5 batches
PI_U = [0.2, 0.3, 0.5]
PI = [0.5, 0.3, 0.2]
TAU = 1.5
THRESHOLD = 0.9

X_WEAK = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]]
X_STRONG = [[1.0, 1.0, 0.0], [-0.5, 0.2, 0.8]]
U_WEAK = [[4.0, 0.0, -1.0],    # q = softmax(u + a_u) has max 0.943 -> passes 0.9
          [1.0, 0.5, 0.4]]     # max 0.506 -> fails; argmax q = 2 while argmax u = 0
U_STRONG = [[2.0, -1.0, 0.5], [0.3, 0.1, 2.0]]
U_STRONG2 = [[1.5, 0.5, 0.0], [0.0, 2.5, -1.0]]
Y = [0, 2]


def simpro(ema_u=0.9, labeled_per_class=(6, 3, 1)):
    args = SimpleNamespace(ema_u=ema_u, tau=TAU, threshold=THRESHOLD, batch_size=2, mu=4)
    data = SimpleNamespace(labeled_per_class=list(labeled_per_class), labeled_idx=np.arange(10),
                           unlabeled_idx=np.arange(60), unlabeled_is_labeled=np.zeros(60, dtype=bool))
    return SimPro(args, data)


def set_priors(method, pi_u=PI_U, pi=PI):
    method.prior.pi_u.copy_(torch.tensor(pi_u))
    method.prior.pi.copy_(torch.tensor(pi))


def simpro_logits(u_weak=U_WEAK):
    rows = X_WEAK + X_STRONG + list(u_weak) + U_STRONG + U_STRONG2
    return torch.tensor(rows, dtype=torch.float32, requires_grad=True)


def simpro_reference(pi_u, pi, u_weak=U_WEAK, y=Y):
    """q, mask, pseudo labels, loss_x, loss_u by hand (SimPro/train.py)."""
    a_u, a = adjustment(pi_u, TAU), adjustment(pi, TAU)
    q = softmax(np.asarray(u_weak) + a_u)
    mask = q.max(1) >= THRESHOLD
    labeled_rows, labeled_y = X_WEAK + X_STRONG, list(y) * 2
    loss_x = sum(-log_softmax(np.asarray(row) + a)[c] for row, c in zip(labeled_rows, labeled_y))
    loss_x = loss_x / len(labeled_rows) / R
    loss_u = 0.0
    for view in (U_STRONG, U_STRONG2):
        per_row = [-(q[i] * log_softmax(np.asarray(view[i]) + a)).sum() * mask[i] for i in range(len(view))]
        loss_u += 0.5 * sum(per_row) / len(view)
    return q, mask, q.argmax(1), loss_x, loss_u


def test_simpro_initial_state_uniform_pi_u_and_labeled_frequencies():
    method = simpro()
    close(method.prior.pi_u, [1 / 3, 1 / 3, 1 / 3])
    close(method.prior.pi, [0.6, 0.3, 0.1])
    close(method.prior.S, [0, 0, 0])
    close(method.prior.L, [0, 0, 0])
    assert method.scale_ratio == pytest.approx(R)
    assert method.view_kinds() == (('weak', 'strong'), ('weak', 'strong', 'strong'))
    assert list(method.unlabeled_views) == ['weak', 'strong', 'strong2']
    assert method.two_heads is False
    # the adjustments of the first epoch come from these initial priors
    loss, terms, _, _ = method.loss(step_views(method, simpro_logits(), torch.tensor(Y), torch.arange(2)))
    _, _, _, loss_x, loss_u = simpro_reference([1 / 3] * 3, [0.6, 0.3, 0.1])
    close(terms['loss_x'], loss_x)
    close(terms['loss_u'], loss_u)
    close(loss, loss_x + loss_u)


def test_simpro_loss_matches_hand_computation():
    method = simpro()
    set_priors(method)
    q, mask, pseudo, loss_x, loss_u = simpro_reference(PI_U, PI)
    # the fixture does what it is meant to: one row passes, one fails, the adjustment moves argmax
    assert mask.tolist() == [True, False] and pseudo.tolist() == [0, 2]
    assert q[0].max() < 0.99  # soft target is far from one-hot, so hard targets would be caught

    logits = simpro_logits()
    loss, terms, got_mask, got_pseudo = method.loss(step_views(method, logits, torch.tensor(Y), torch.arange(2)))
    assert got_mask.tolist() == [True, False]
    assert got_pseudo.tolist() == [0, 2]
    close(terms['loss_x'], loss_x)
    close(terms['loss_u'], loss_u)
    close(loss, loss_x + loss_u)
    # literal values of this fixture (from the formulas above, computed once in float64)
    close(loss_x, 0.6628265109, 1e-8)
    close(loss_u, 0.1503696276, 1e-8)


def test_simpro_gradients_skip_weak_view_and_match_reference():
    method = simpro()
    set_priors(method)
    logits = simpro_logits()
    loss, _, _, _ = method.loss(step_views(method, logits, torch.tensor(Y), torch.arange(2)))
    loss.backward()
    grad = logits.grad
    assert grad is not None
    # q is detached: no gradient reaches the weak unlabeled logits
    assert torch.count_nonzero(grad[4:6]) == 0
    # the other rows get exactly the gradient of the hand-written loss (q held fixed)
    ref = torch.tensor(X_WEAK + X_STRONG + U_WEAK + U_STRONG + U_STRONG2, dtype=torch.float64,
                       requires_grad=True)
    a_u, a = torch.tensor(adjustment(PI_U, TAU)), torch.tensor(adjustment(PI, TAU))
    ls = lambda z: z - torch.log(torch.exp(z).sum(-1, keepdim=True))  # noqa: E731
    q = torch.exp(ls(ref[4:6].detach() + a_u))
    mask = (q.max(1).values >= THRESHOLD).double()
    y = torch.tensor(Y * 2)
    ref_x = -ls(ref[:4] + a)[torch.arange(4), y].mean() / R
    ref_u = sum(0.5 * (-(q * ls(v + a)).sum(1) * mask).mean() for v in (ref[6:8], ref[8:10]))
    (ref_x + ref_u).backward()
    close(grad, ref.grad)
    assert torch.count_nonzero(grad[8:10]) > 0 and torch.count_nonzero(grad[:4]) > 0


def test_simpro_masked_out_row_contributes_nothing():
    """Changing the strong views of the row that fails the mask leaves loss_u unchanged."""
    method = simpro()
    set_priors(method)
    logits = simpro_logits()
    _, base, _, _ = method.loss(step_views(method, logits, torch.tensor(Y), torch.arange(2)))
    moved = logits.detach().clone()
    moved[7] += torch.tensor([5.0, -3.0, 1.0])
    moved[9] += torch.tensor([-2.0, 4.0, 0.0])
    _, terms, _, _ = method.loss(step_views(method, moved, torch.tensor(Y), torch.arange(2)))
    close(terms['loss_u'], base['loss_u'].detach())


def test_simpro_e_step_sums():
    method = simpro()
    set_priors(method)
    q, _, _, _, _ = simpro_reference(PI_U, PI)
    method.loss(step_views(method, simpro_logits(), torch.tensor(Y), torch.arange(2)))
    close(method.prior.S, q[0])           # only the masked row, soft
    close(method.prior.L, [1, 0, 1])      # each labeled sample once, not once per view
    method.loss(step_views(method, simpro_logits(), torch.tensor([1, 1]), torch.arange(2)))
    close(method.prior.S, 2 * q[0])
    close(method.prior.L, [1, 2, 1])


def test_simpro_end_epoch_closed_form_on_literal_sums():
    method = simpro(ema_u=0.9)
    set_priors(method)
    method.prior.S.copy_(torch.tensor([2.0, 1.0, 1.0]))
    method.prior.L.copy_(torch.tensor([3.0, 1.0, 0.0]))
    method.end_epoch()
    # pi_u = 0.9 [.2 .3 .5] + 0.1 [2 1 1] / (4 + 1)
    close(method.prior.pi_u, [0.22, 0.29, 0.47], 1e-6)
    # pi = 0.9 [.5 .3 .2] + 0.1 [5 2 1] / 8
    close(method.prior.pi, [0.5125, 0.295, 0.1925], 1e-6)
    close(method.prior.S, [0, 0, 0])
    close(method.prior.L, [0, 0, 0])
    close(method.unlabeled_prior(), np.array([0.22, 0.29, 0.47]) / 0.98, 1e-6)


def test_simpro_end_epoch_after_loss_calls_matches_formula():
    method = simpro(ema_u=0.7)
    set_priors(method)
    q, _, _, _, _ = simpro_reference(PI_U, PI)
    method.loss(step_views(method, simpro_logits(), torch.tensor(Y), torch.arange(2)))
    method.loss(step_views(method, simpro_logits(), torch.tensor([1, 1]), torch.arange(2)))
    S, L = 2 * q[0], np.array([1.0, 2.0, 1.0])
    method.end_epoch()
    close(method.prior.pi_u, 0.7 * np.array(PI_U) + 0.3 * S / (S.sum() + 1))
    close(method.prior.pi, 0.7 * np.array(PI) + 0.3 * (L + S) / (L + S).sum())


def test_simpro_epoch_with_no_confident_row_shrinks_pi_u_unnormalised():
    method = simpro(ema_u=0.9)
    set_priors(method)
    flat = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]  # q = pi_u^1.5 normalised, max 0.58 < 0.9
    _, terms, mask, _ = method.loss(step_views(method, simpro_logits(flat), torch.tensor(Y), torch.arange(2)))
    assert not mask.any()
    close(terms['loss_u'], 0.0)
    method.end_epoch()
    close(method.prior.pi_u, [0.18, 0.27, 0.45], 1e-6)       # 0.9 * pi_u, sums to 0.9
    close(method.unlabeled_prior(), PI_U, 1e-6)              # reported renormalised
    close(method.prior.pi, [0.5, 0.27, 0.23], 1e-6)          # 0.9 pi + 0.1 [1 0 1]/2


def test_simpro_m_step_shows_in_the_next_loss():
    """a_u and a come from the current priors: the closed-form M-step shows in the next epoch's loss."""
    method = simpro()
    set_priors(method)
    _, _, _, loss_x, loss_u = simpro_reference(PI_U, PI)
    _, terms, _, _ = method.loss(step_views(method, simpro_logits(), torch.tensor(Y), torch.arange(2)))
    close(terms['loss_x'], loss_x)
    close(terms['loss_u'], loss_u)
    method.prior.S.copy_(torch.tensor([2.0, 1.0, 1.0]))
    method.prior.L.copy_(torch.tensor([3.0, 1.0, 0.0]))
    method.end_epoch()
    _, _, _, loss_x, loss_u = simpro_reference([0.22, 0.29, 0.47], [0.5125, 0.295, 0.1925])
    _, terms, _, _ = method.loss(step_views(method, simpro_logits(), torch.tensor(Y), torch.arange(2)))
    close(terms['loss_x'], loss_x)
    close(terms['loss_u'], loss_u)


# --- ACR_d ---

P_L = [0.6, 0.3, 0.1]
TAU1, TAU12, TAU2 = 3.0, 1.0, 2.0

G_X = [[1.0, 0.2, -0.5], [0.3, 0.0, 0.9]]
G_WEAK = [[4.0, 0.0, 0.0],    # mask_1 only via plain softmax(g) (0.965); label_1 = 2 != argmax g
          [4.0, 0.0, 3.5],    # mask_1 only via softmax(g - a_1) (0.991); label_1 = 2 != argmax g = 0
          [3.0, 0.0, 4.0],    # mask_1 via adjusted; mask_12 via softmax(g - a_12) only (0.937)
          [2.0, 0.0, -2.0]]   # no g-based mask passes (mask_b passes via h)
G_S = [[0.5, 0.1, 1.2], [2.0, 0.0, 0.3], [0.1, 0.4, 0.0], [1.0, 1.0, 1.0]]
G_S2 = [[0.2, 1.5, 0.0], [0.0, 0.5, 1.0], [1.2, -0.3, 0.6], [0.0, 2.0, 0.0]]
H_X = [[0.4, 0.9, -0.2], [0.0, 0.6, 0.1]]
H_WEAK = [[0.0, 5.0, 0.0],    # mask_b only via softmax(h) (0.987); label_12 = 0 (from g), not 1
          [1.0, 0.0, 0.0],
          [0.0, 0.0, 0.0],
          [0.0, 0.0, 5.0]]    # mask_b only via softmax(h), where softmax(g) is not confident either
H_S = [[0.1, 0.3, 0.9], [1.1, 0.0, 0.2], [0.0, 0.7, 0.4], [0.5, 0.5, 0.0]]
H_S2 = [[0.6, 0.0, 0.3], [0.2, 0.9, 0.0], [0.3, 0.3, 1.4], [0.0, 0.0, 1.0]]
Y_ACR = [0, 1]


def acrd(est_epoch=2, ema_u=0.8, is_labeled=(True, False, False, True, False, False, True, False)):
    args = SimpleNamespace(threshold=THRESHOLD, tau1=TAU1, tau12=TAU12, tau2=TAU2, est_epoch=est_epoch, ema_u=ema_u,
                           eval_step=500, anchor_estimate='presence')
    data = SimpleNamespace(name='cifar10', labeled_per_class=[6, 3, 1], labeled_idx=np.arange(10),
                           unlabeled_idx=np.arange(len(is_labeled)),
                           unlabeled_is_labeled=np.array(is_labeled, dtype=bool))
    return ACRd(args, data)


def acrd_output(g_weak=G_WEAK, h_weak=H_WEAK):
    g = torch.tensor(G_X + list(g_weak) + G_S + G_S2, dtype=torch.float32, requires_grad=True)
    h = torch.tensor(H_X + list(h_weak) + H_S + H_S2, dtype=torch.float32, requires_grad=True)
    return g, h


def acrd_reference():
    """All of ACR_d's terms by hand (ACR_d/train.py)."""
    a1, a12, a2 = adjustment(P_L, TAU1), adjustment(P_L, TAU12), adjustment(P_L, TAU2)
    g_w, h_w = np.asarray(G_WEAK), np.asarray(H_WEAK)
    p1, p12, pg, ph = softmax(g_w - a1), softmax(g_w - a12), softmax(g_w), softmax(h_w)
    label_1, label_12 = p1.argmax(1), p12.argmax(1)
    mask_1 = (p1.max(1) >= THRESHOLD) | (pg.max(1) >= THRESHOLD)
    mask_b = (p12.max(1) >= THRESHOLD) | (ph.max(1) >= THRESHOLD)
    loss_x = np.mean([-log_softmax(G_X[i])[Y_ACR[i]] for i in range(2)])
    loss_x_b = np.mean([-log_softmax(np.asarray(H_X[i]) + a2)[Y_ACR[i]] for i in range(2)])
    n = len(G_WEAK)
    loss_u = sum(-log_softmax(view[i])[label_1[i]] * mask_1[i] for view in (G_S, G_S2) for i in range(n)) / (2 * n)
    loss_u_b = sum(-log_softmax(view[i])[label_12[i]] * mask_b[i] for view in (H_S, H_S2) for i in range(n)) / (2 * n)
    return dict(label_1=label_1, label_12=label_12, mask_1=mask_1, mask_b=mask_b, loss_x=loss_x,
                loss_x_b=loss_x_b, loss_u=loss_u, loss_u_b=loss_u_b)


def test_acrd_fixture_exercises_the_ors_and_the_adjusted_labels():
    """Guards the hand-picked logits: each case below is what the loss test relies on."""
    a1, a12 = adjustment(P_L, TAU1), adjustment(P_L, TAU12)
    g_w, h_w = np.asarray(G_WEAK), np.asarray(H_WEAK)
    conf_1, conf_12 = softmax(g_w - a1).max(1), softmax(g_w - a12).max(1)
    conf_g, conf_h = softmax(g_w).max(1), softmax(h_w).max(1)
    assert (conf_1 >= THRESHOLD).tolist() == [False, True, True, False]
    assert (conf_g >= THRESHOLD).tolist() == [True, False, False, False]
    assert (conf_12 >= THRESHOLD).tolist() == [False, False, True, False]
    assert (conf_h >= THRESHOLD).tolist() == [True, False, False, True]
    ref = acrd_reference()
    assert ref['mask_1'].tolist() == [True, True, True, False]
    assert ref['mask_b'].tolist() == [True, False, True, True]
    assert ref['label_1'].tolist() == [2, 2, 2, 2] and g_w.argmax(1).tolist() == [0, 0, 2, 0]
    assert ref['label_12'].tolist() == [0, 2, 2, 0] and h_w.argmax(1).tolist() == [1, 0, 0, 2]


def test_acrd_loss_matches_hand_computation():
    method = acrd()
    assert method.view_kinds() == (('weak',), ('weak', 'strong', 'strong'))
    assert method.two_heads is True
    ref = acrd_reference()
    g, h = acrd_output()
    loss, terms, mask, label = method.loss(step_views(method, (g, h), torch.tensor(Y_ACR), torch.tensor([1, 2, 4, 5])))
    assert mask.tolist() == ref['mask_1'].tolist()
    assert label.tolist() == ref['label_1'].tolist()
    close(terms['loss_x_g'], ref['loss_x'])
    close(terms['loss_x_h'], ref['loss_x_b'])
    close(terms['loss_u_g'], ref['loss_u'])
    close(terms['loss_u_h'], ref['loss_u_b'])
    close(terms['loss_x'], ref['loss_x'] + ref['loss_x_b'])
    close(terms['loss_u'], ref['loss_u'] + ref['loss_u_b'])
    close(loss, ref['loss_x'] + ref['loss_x_b'] + ref['loss_u'] + ref['loss_u_b'])
    # literal values of this fixture (float64, from the formulas above)
    close(ref['loss_x'], 1.0424401417, 1e-8)
    close(ref['loss_x_b'], 0.7692042548, 1e-8)
    close(ref['loss_u'], 0.9518952601, 1e-8)
    close(ref['loss_u_b'], 0.8057073554, 1e-8)


def test_acrd_gradients_match_reference_and_skip_weak_views():
    method = acrd()
    g, h = acrd_output()
    loss, _, _, _ = method.loss(step_views(method, (g, h), torch.tensor(Y_ACR), torch.tensor([1, 2, 4, 5])))
    loss.backward()
    assert torch.count_nonzero(g.grad[2:6]) == 0 and torch.count_nonzero(h.grad[2:6]) == 0
    ref = acrd_reference()
    ls = lambda z: z - torch.log(torch.exp(z).sum(-1, keepdim=True))  # noqa: E731
    rg = torch.tensor(G_X + G_WEAK + G_S + G_S2, dtype=torch.float64, requires_grad=True)
    rh = torch.tensor(H_X + H_WEAK + H_S + H_S2, dtype=torch.float64, requires_grad=True)
    y = torch.tensor(Y_ACR)
    l1, l12 = torch.tensor(ref['label_1']).repeat(2), torch.tensor(ref['label_12']).repeat(2)
    m1, mb = torch.tensor(ref['mask_1']).double().repeat(2), torch.tensor(ref['mask_b']).double().repeat(2)
    a2 = torch.tensor(adjustment(P_L, TAU2))
    total = (-ls(rg[:2])[torch.arange(2), y].mean() - ls(rh[:2] + a2)[torch.arange(2), y].mean()
             + (-ls(rg[6:])[torch.arange(8), l1] * m1).mean() + (-ls(rh[6:])[torch.arange(8), l12] * mb).mean())
    total.backward()
    close(g.grad, rg.grad)
    close(h.grad, rh.grad)


def test_acrd_estimate_steps_on_confident_unlabeled_rows_of_h_only():
    """The per-step estimate (Gank0078/ACR train.py): per class, the last row predicted by h decides
    whether the class is present (confident and not a labeled image); g's confidence plays no part."""
    method = acrd(est_epoch=0, ema_u=0.8)
    method.end_epoch()                 # epoch 1 > est_epoch: the estimate runs
    g_1 = [[0.0, 0.0, 0.0]] * 3 + [[6.0, 0.0, 0.0]]  # g confident on row 3 only
    # pool: is_labeled = [T F F T F F T F]
    h_1 = [[0.0, 6.0, 0.0],   # u_index 3: a labeled image -> class 1 absent
           [0.0, 0.0, 6.0],   # u_index 1 -> class 2 present
           [6.0, 0.0, 0.0],   # u_index 6: labeled -> class 0 absent so far
           [0.0, 0.0, 0.0]]   # u_index 2: h flat (argmax 0), not confident; g is: class 0 stays absent
    method.loss(step_views(method, acrd_output(g_1, h_1), torch.tensor(Y_ACR), torch.tensor([3, 1, 6, 2])))
    close(method.unlabeled_prior(), [0.8 / 3, 0.8 / 3, 0.8 / 3 + 0.2], 1e-6)
    h_2 = [[0.0, 0.0, 7.0],   # u_index 4 -> class 2
           [0.0, 7.0, 0.0],   # u_index 5 -> class 1
           [7.0, 0.0, 0.0],   # u_index 7 -> class 0
           [0.0, 0.0, 7.0]]   # u_index 0: labeled, the last row of class 2 -> class 2 absent
    method.loss(step_views(method, acrd_output([[0.0] * 3] * 4, h_2), torch.tensor(Y_ACR), torch.tensor([4, 5, 7, 0])))
    u = 0.8 * np.array([0.8 / 3, 0.8 / 3, 0.8 / 3 + 0.2]) + 0.2 * np.array([0.5, 0.5, 0])
    close(method.unlabeled_prior(), u, 1e-6)
    close(adjustment(P_L, TAU1), method.adjust_1, 1e-6)  # ACR_d: logged only


# --- 7. evaluated logits ---

def test_eval_logits():
    g, h = torch.randn(3, 4), torch.randn(3, 4)
    assert simpro().eval_logits(NetworkOutput(g)) is g
    assert acrd().eval_logits(NetworkOutput(g, h)) is h   # the balanced head


# --- 8. symmetric KL ---

def test_symmetric_kl_literal_symmetric_and_zero():
    p, q = [0.5, 0.5], [0.9, 0.1]
    expected = 0.5 * (0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)) \
        + 0.5 * (0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5))
    assert expected == pytest.approx(0.439445, abs=1e-6)  # 0.25 ln(25/9) + 0.45 ln 1.8 + 0.05 ln 0.2
    assert symmetric_kl(torch.tensor(p), torch.tensor(q)) == pytest.approx(expected, rel=1e-6)
    assert symmetric_kl(torch.tensor(q), torch.tensor(p)) == pytest.approx(expected, rel=1e-6)
    a, b = [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]
    expected3 = 0.5 * kl(a, b) + 0.5 * kl(b, a)
    assert symmetric_kl(torch.tensor(a), torch.tensor(b)) == pytest.approx(expected3, rel=1e-6)
    assert symmetric_kl(torch.tensor(b), torch.tensor(a)) == pytest.approx(expected3, rel=1e-6)
    assert symmetric_kl(torch.tensor(a), torch.tensor(a)) == pytest.approx(0.0, abs=1e-12)
    # unnormalised inputs (SimPro's pi_u after an empty epoch) are renormalised first
    assert symmetric_kl(torch.tensor([1.0, 1.0]), torch.tensor([9.0, 1.0])) == pytest.approx(expected, rel=1e-6)


# --- 9. checkpointed state ---

def test_class_prior_state_dict_round_trip():
    prior = ClassPrior([6, 3, 1], ema_u=0.9)
    values = {'pi_u': [0.22, 0.29, 0.47], 'pi': [0.5125, 0.295, 0.1925], 'S': [1.5, 0.25, 0.0], 'L': [4.0, 2.0, 1.0]}
    for name, v in values.items():
        getattr(prior, name).copy_(torch.tensor(v))
    state = prior.state_dict()
    assert set(state) == set(values)
    restored = ClassPrior([1, 1, 1], ema_u=0.9)
    restored.load_state_dict(state)
    for name, v in values.items():
        close(getattr(restored, name), v, 1e-7)


def test_simpro_state_dict_restores_priors_and_mid_epoch_sums():
    method = simpro()
    set_priors(method)
    method.loss(step_views(method, simpro_logits(), torch.tensor(Y), torch.arange(2)))
    state = method.state_dict()
    assert {'prior.pi_u', 'prior.pi', 'prior.S', 'prior.L'} <= set(state)
    restored = simpro()
    restored.load_state_dict(state)
    for name in ('pi_u', 'pi', 'S', 'L'):
        close(getattr(restored.prior, name), getattr(method.prior, name))
    _, _, _, loss_x, loss_u = simpro_reference(PI_U, PI)
    _, terms, _, _ = restored.loss(step_views(restored, simpro_logits(), torch.tensor(Y), torch.arange(2)))
    close(terms['loss_x'], loss_x)
    close(terms['loss_u'], loss_u)


# ---------------------------------------------------------------- FixMatch

def test_fixmatch_loss_matches_hand_computation():
    """Lx = CE(x_weak, y); Lu = mean(CE(u_strong, argmax softmax(u_weak)) * [max >= threshold]), no adjustment."""
    from methods import FixMatch
    method = FixMatch(SimpleNamespace(threshold=0.9), None)
    assert method.view_kinds() == (('weak',), ('weak', 'strong'))
    x = [[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]]
    u_weak = [[0.0, 5.0, 0.0], [1.0, 1.2, 0.9]]      # row 0 confident (class 1), row 1 not
    u_strong = [[1.0, 0.0, 2.0], [0.0, 4.0, 0.0]]
    logits = torch.tensor(x + u_weak + u_strong, requires_grad=True)
    y = torch.tensor([0, 2])
    loss, terms, mask, label = method.loss(step_views(method, logits, y, torch.arange(2)))

    def ce(row, target):
        row = torch.tensor(row, dtype=torch.float64)
        return float(torch.logsumexp(row, 0) - row[target])
    loss_x = (ce(x[0], 0) + ce(x[1], 2)) / 2
    loss_u = ce(u_strong[0], 1) / 2            # mean over both rows, the second masked out
    assert mask.tolist() == [True, False] and label.tolist() == [1, 1]
    assert abs(terms['loss_x'].item() - loss_x) < 1e-6 and abs(terms['loss_u'].item() - loss_u) < 1e-6
    assert abs(loss.item() - loss_x - loss_u) < 1e-6
    loss.backward()
    assert not logits.grad[2:4].any()          # no gradient through the pseudo labels
    assert method.unlabeled_prior() is None and method.eval_logits(NetworkOutput(logits)) is logits
