"""FixMatch w/ DARP (methods/darp.py): the removal and the solver against independent solutions,
the secant search against scipy's, the schedule of the refinement, exact resume across one, and
sh/DARP.sh (every row, and a 40-step run on a fake CIFAR-10)."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import optimize

import test_launchers
import test_resume
from methods import darp
from methods.darp import DARP, refine, removal, secant
from test_launchers import ROWS, SMALL_RUN, assert_row, launch, launched_args
from utils.errors import UserError
from conftest import step_views

echo_python = test_launchers.echo_python  # the fixture: a python that prints its arguments


def test_removal_keeps_int_alpha_c_entries_per_class_scaled_to_c():
    p = torch.tensor([[0.7, 0.3], [0.4, 0.6], [0.9, 0.1]], dtype=torch.float64)
    target = torch.tensor([0.6, 2.4])  # alpha 2: keep int(1.2) = 1 of class 0 and int(4.8) = 4 (all) of class 1
    out = removal(p, target, alpha=2.0)
    eps = 1e-6
    w0, w1 = (0.6 + eps) / (0.9 + eps), (2.4 + eps) / (1.0 + eps)  # class 0 keeps row 2 only
    expected = torch.tensor([[eps, 0.3 * w1 + eps], [eps, 0.6 * w1 + eps], [0.9 * w0 + eps, 0.1 * w1 + eps]],
                            dtype=torch.float64)
    assert torch.allclose(out, expected / expected.sum(1, keepdim=True), rtol=1e-12)


def test_refinement_solves_darps_convex_problem():
    """Run to convergence, the solver gives the minimiser of sum_n w_n KL(P_n || A_n) with rows summing
    to 1 and columns to c, w_n = 1 / entropy(A_n), as scipy's SLSQP finds it on its own."""
    generator = torch.Generator().manual_seed(0)
    a = torch.softmax(2 * torch.randn(6, 3, generator=generator, dtype=torch.float64), 1)
    c = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    ours = refine(a, c, iters=300, tol=1e-13).numpy()

    a_np, c_np = a.numpy(), c.numpy()
    w = 1 / -(a_np * np.log(a_np + 1e-6)).sum(1)
    objective = lambda x: float((w[:, None] * x.reshape(6, 3) * np.log(x.reshape(6, 3) / a_np)).sum())  # noqa: E731
    constraints = [{'type': 'eq', 'fun': lambda x: x.reshape(6, 3).sum(1) - 1},
                   {'type': 'eq', 'fun': lambda x: x.reshape(6, 3).sum(0)[:2] - c_np[:2]}]  # (the last is implied)
    found = optimize.minimize(objective, a_np.ravel(), method='SLSQP', bounds=[(1e-9, 1)] * 18,
                              constraints=constraints, options={'ftol': 1e-14, 'maxiter': 1000})
    assert found.success
    assert np.allclose(ours.sum(1), 1) and np.allclose(ours.sum(0), c_np, atol=1e-8)
    assert np.allclose(ours, found.x.reshape(6, 3), atol=1e-5)


def test_secant_search_equals_scipys_newton_without_derivative():
    """The official code's optimize.newton(f, x0, maxiter=30, tol=0.1) per class, for all classes at once."""
    generator = torch.Generator().manual_seed(1)
    a, b = torch.rand(8, 4, generator=generator, dtype=torch.float64), torch.rand(8, 1, generator=generator,
                                                                                dtype=torch.float64)
    w = 0.5 + torch.rand(8, 1, generator=generator, dtype=torch.float64)
    d, x0 = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor([0.0, 0.3, -0.2, 1.0],
                                                                                   dtype=torch.float64)
    ours = secant(lambda x: (a * b * torch.exp(-x[None] / w)).sum(0) - d, x0, tol=0.1)
    a, b, w, d = a.numpy(), b[:, 0].numpy(), w[:, 0].numpy(), d.numpy()
    for k in range(4):
        def f(x):
            return np.sum(a[:, k] * b * np.exp(-x / w)) - d[k]
        assert float(ours[k]) == pytest.approx(optimize.newton(f, float(x0[k]), maxiter=30, tol=0.1), rel=1e-12)


def small_method(target='true', unlabeled_per_class=(6, 4, 2), optimizer='sgd'):
    """A DARP of 20 steps over a pool of 12 images of 3 classes: warm-up int(20 * 0.3) = 6 steps, period 4."""
    args = SimpleNamespace(threshold=0.5, total_steps=20, darp_warmup_ratio=0.3, darp_period=4, darp_iters=10,
                           darp_alpha=2.0, darp_tol=0.1, darp_target=target, optimizer=optimizer)
    data = SimpleNamespace(unlabeled_idx=np.arange(12), num_classes=3, name='toy', labeled_per_class=[6, 3, 1],
                           unlabeled_per_class=unlabeled_per_class)
    return DARP(args, data)


def test_the_target_counts_and_the_optimizer():
    assert torch.allclose(small_method().target, torch.tensor([6.0, 4.0, 2.0]))  # the pool's counts
    assert torch.allclose(small_method('labeled').target, torch.tensor([7.2, 3.6, 1.2]))  # p_l scaled to the pool
    with pytest.raises(UserError, match='--darp-target labeled'):
        small_method(unlabeled_per_class=None)  # (STL-10: the pool has no labels)
    network = torch.nn.Linear(2, 3)
    adam = small_method(optimizer='adam').make_optimizer(network, SimpleNamespace(lr=0.1, optimizer='adam'))
    assert isinstance(adam, torch.optim.Adam) and adam.defaults['weight_decay'] == 0.02
    assert adam.defaults['decoupled_weight_decay'] and adam.defaults['lr'] == 0.1


def test_refinement_starts_after_the_warm_up_exactly_every_period(monkeypatch):
    method = small_method()  # after the warm-up of 6 steps, a refinement at steps 8, 12, 16, 20
    refined_at = []
    monkeypatch.setattr(darp, 'refine', lambda *a: refined_at.append(method.host_step) or refine(*a))
    generator = torch.Generator().manual_seed(0)
    y = torch.zeros(2, dtype=torch.long)
    for step in range(1, 21):
        u_index = torch.randperm(12, generator=generator)[:4]
        weak = 3 * torch.randn(4, 3, generator=generator)
        logits = torch.cat([torch.randn(2, 3, generator=generator), weak, torch.randn(4, 3, generator=generator)])
        result = method.loss(step_views(method, logits, y, u_index))
        assert torch.equal(method.predictions[u_index], torch.softmax(weak, 1))  # the pool remembers the batch
        if step <= 6:  # FixMatch's own pseudo labels
            assert torch.equal(result.pseudo_label, weak.argmax(1))
        else:  # the latest refinement's (uniform, class 0, before the first at step 8)
            assert torch.equal(result.pseudo_label, method.refined_label[u_index])
            assert torch.equal(result.mask, method.refined_confidence[u_index] >= 0.5)
        if step == 7:
            assert not result.mask.any() and not result.pseudo_label.any()
    assert refined_at == [8, 12, 16, 20] and int(method.step) == 20
    assert torch.allclose(method.refined_confidence, refine(removal(method.predictions, method.target, 2.0),
                                                            method.target, 10, 0.1).max(1).values.float())


def test_resume_across_a_refinement_is_exact(small_cifar10_root, tmp_path, monkeypatch):
    """Refinements at steps 2, 4, 6 (warm-up 1 step): the run resumed from the checkpoint of step 2
    ends bit-identical to the uninterrupted one, the pool's predictions and refinement included."""
    extra = ['--version', 'DARP', '--darp-warmup-ratio', 0.2, '--darp-period', 2, '--threshold', 0.1]
    assert test_resume.run(small_cifar10_root, tmp_path / 'whole', *extra) == 0
    test_resume.crash_after_checkpoint(monkeypatch, step=2)
    with pytest.raises(test_resume.Interrupted):
        test_resume.run(small_cifar10_root, tmp_path / 'split', *extra)
    monkeypatch.undo()
    assert test_resume.run(small_cifar10_root, tmp_path / 'split', *extra, '--resume', 'auto') == 0
    whole, whole_ckpt = test_resume.final_state(tmp_path / 'whole')
    split, split_ckpt = test_resume.final_state(tmp_path / 'split')
    assert split == whole and [r['step'] for r in split] == [2, 4, 6]
    assert whole_ckpt['method'].keys() == split_ckpt['method'].keys()
    for key, value in whole_ckpt['method'].items():
        assert torch.equal(value, split_ckpt['method'][key]), key
    assert (whole_ckpt['method']['refined_confidence'] != 0.1).any()  # a refinement did happen


@pytest.mark.parametrize('dataset', list(ROWS))
def test_every_row_of_sh_darp(echo_python, dataset):
    for index, (n, m, gl, gu, mode, size) in enumerate(ROWS[dataset]):
        args = launched_args(echo_python, 'DARP.sh', dataset, index)
        assert_row(args, 'DARP.sh', dataset, n, m, gl, gu, mode, size)
        assert (args.version, args.threshold, args.darp_warmup_ratio, args.darp_period, args.darp_iters,
                args.darp_alpha, args.darp_tol) == ('DARP', 0.95, 0.4, 10, 10, 2.0, 0.1)
        assert args.darp_target == ('labeled' if dataset == 'stl10' or dataset.startswith('smallimagenet') else 'true')
        recipe = (args.lr, args.total_steps, args.batch_size, args.mu, args.lr_schedule, args.optimizer)
        if dataset == 'digits':
            assert recipe == (0.1, 1200, 8, 6, 'cosine', 'sgd')
        elif dataset.startswith('smallimagenet'):  # CoSSL's FixMatch, Table 3's source
            assert recipe == (0.002, 250000, 64, 1, 'constant', 'adam')
        else:  # DASO's recipe
            assert recipe == (0.03, 250000, 64, 2, 'constant', 'sgd')
            assert (args.wdecay_all, args.ema_warmup, args.bn_momentum) == (True, True, 0.1)


def test_sh_darp_smallimagenet_1_is_table_3s_64x64_row(echo_python):
    args = launched_args(echo_python, 'DARP.sh', 'smallimagenet', 1)
    assert (args.dataset, args.img_size, args.version, args.optimizer, args.lr, args.total_steps) == (
        'smallimagenet', 64, 'DARP', 'adam', 0.002, 250000)


@pytest.mark.slow
def test_sh_darp_short_run_refines_and_writes_metrics(cifar10_launcher_root, tmp_path):
    """40 steps of the consistent CIFAR-10 row: warm-up 16 steps, then a refinement every 10."""
    out = tmp_path / 'run'
    result = launch('DARP.sh', 'cifar10', 0, '--data-dir', cifar10_launcher_root, '--total-steps', 40, '--eval-step',
                    20, *SMALL_RUN, '--out', out)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in records] == [20, 40] and [r['darp_refining'] for r in records] == [True, True]
    for r in records:
        assert abs(sum(r['pi_u']) - 1) < 1e-5 and r['kl_pi_u'] == pytest.approx(0, abs=1e-6)
    state = torch.load(out / 'checkpoint.pt', weights_only=False)['method']
    assert int(state['step']) == 40 and (state['refined_confidence'] != 0.1).any()
