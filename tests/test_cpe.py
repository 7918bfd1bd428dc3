"""CPE's network and step against machengcheng2016/CPE-LTSSL (semilearn/nets/wrn/wrn_cbn.py,
semilearn/imb_algorithms/cpe/cpe.py:176-313): its parameter counts, its branches, and its loss
written out here in float64 from the code's formulas, never the method's own code."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import test_launchers
import train
from conftest import step_views
from methods import CPE
from models import NetworkOutput, build_model, count_parameters
from test_launchers import ROWS, SMALL_RUN, assert_row, launch, launched_args

echo_python = test_launchers.echo_python  # the fixture: a python that prints its arguments
COUNTS = [50, 30, 20, 12, 8, 5, 3, 2, 1, 1]


def cpe(threshold=0.5, cuts=(2, 4), taus=(0.0, 2.0, 4.0), counts=COUNTS):
    args = SimpleNamespace(threshold=threshold, expert_tau1=taus[0], expert_tau2=taus[1], expert_tau3=taus[2],
                           cbn_cut1=cuts[0], cbn_cut2=cuts[1], dataset='cifar10')
    return CPE(args, SimpleNamespace(name='cifar10', labeled_per_class=list(counts)))


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def cross_entropy(z, y):
    return -np.log(softmax(z)[np.arange(len(y)), y])


def reference(experts, n_labeled, y, threshold, cuts, taus, counts):
    """cpe.py:219-276 in float64: per expert the labeled CE of its branch mean plus tau_j log p_l,
    its own pseudo labels from the weak view's branch mean, the strong view's per-branch CE over
    the active (row, branch) terms; the sum over the experts."""
    e = np.asarray(experts, np.float64)
    k = (len(e) - n_labeled) // 2
    x, weak, strong = e[:n_labeled], e[n_labeled:n_labeled + k], e[n_labeled + k:]
    log_prior = np.log(np.asarray(counts, np.float64) / sum(counts))
    total, parts = 0.0, []
    for j in range(3):
        loss_x = cross_entropy(x[:, j].mean(1) + taus[j] * log_prior, y).mean()
        q = softmax(weak[:, j].mean(1))
        label, mask = q.argmax(-1), q.max(-1) >= threshold
        w = np.stack([mask, mask & (label >= cuts[0]), mask & (label >= cuts[1])], 1).astype(np.float64)
        ce = np.stack([cross_entropy(strong[:, j, b], label) for b in range(3)], 1)
        loss_u = (ce * w).sum() / (w.sum() + 1e-12)
        total += loss_x + loss_u
        parts.append((loss_x, loss_u, label, mask))
    return total, parts


def loss_of(method, experts, y):
    experts = torch.as_tensor(experts, dtype=torch.float32)
    output = NetworkOutput(experts[:, 0].mean(1), experts=experts)
    return method.loss(step_views(method, output, y, torch.arange((len(experts) - len(y)) // 2)))


def test_the_network_is_usbs_wrn_with_three_branches_and_three_experts():
    """1,470,974 parameters for 10 classes and 1,505,804 for 100 (its logs' count; 1,467,104 + 3 * 129 C);
    the three BatchNorms (PyTorch's defaults) see the same map, so their statistics stay equal; the two
    heads added after its initialisation keep PyTorch's (a non-zero bias), the first is Xavier's."""
    assert [count_parameters(build_model('wideresnet_usb', c, experts=3)) for c in (10, 100)] == [1470974, 1505804]
    assert count_parameters(build_model('wideresnet_usb', 10)) == 1467626  # (every other method's: unchanged)
    torch.manual_seed(0)
    model = build_model('wideresnet_usb', 10, depth=10, widen_factor=1, experts=3)
    assert [bn.momentum for bn in model.cbn] == [0.1] * 3 and [bn.eps for bn in model.cbn] == [1e-5] * 3
    assert torch.count_nonzero(model.fc.bias) == 0 and all(torch.count_nonzero(h.bias) > 0 for h in model.expert_fc)
    output = model(torch.randn(6, 3, 32, 32))
    assert output.experts.shape == (6, 3, 3, 10) and torch.equal(output.logits, output.experts[:, 0].mean(1))
    assert all(torch.equal(model.cbn[0].running_mean, bn.running_mean) for bn in model.cbn)
    with torch.no_grad():  # an affine of its own per branch: the branches then differ
        model.cbn[2].weight.mul_(2)
    model.eval()
    out = model(torch.randn(2, 3, 32, 32)).experts
    assert not torch.allclose(out[:, :, 0], out[:, :, 2])
    with pytest.raises(ValueError, match='WideResNet'):
        build_model('resnet50', 10, experts=3)


def test_the_step_equals_its_codes_formulas():
    generator = np.random.default_rng(0)
    experts = generator.normal(0, 2.5, (3 + 2 * 8, 3, 3, 10))
    y = [0, 4, 9]
    result = loss_of(cpe(), experts, y)
    total, parts = reference(experts, 3, y, 0.5, (2, 4), (0.0, 2.0, 4.0), COUNTS)
    assert math.isclose(float(result.loss), total, rel_tol=1e-5)
    for j, (loss_x, loss_u, label, mask) in enumerate(parts, 1):
        assert math.isclose(float(result.terms[f'loss_x{j}']), loss_x, rel_tol=1e-5)
        assert math.isclose(float(result.terms[f'loss_u{j}']), loss_u, rel_tol=1e-5, abs_tol=1e-7)
    loss_x, loss_u, label, mask = parts[1]  # (the evaluated expert's pseudo labels are the logged ones)
    assert result.pseudo_label.tolist() == label.tolist() and result.mask.tolist() == mask.tolist()
    assert 0 < mask.sum() < len(mask) and any(p[2].tolist() != label.tolist() for p in parts)  # (own labels)


def test_a_confident_row_of_class_3_trains_the_first_two_branches():
    """One unlabeled row, every expert sure of class 3 (2 <= 3 < 4): its strong view trains branches H and
    M, not T, and the loss is their mean, (CE_H + CE_M) / 2; the T branch's logits play no part."""
    experts = np.zeros((1 + 2, 3, 3, 10))
    experts[1, :, :, 3] = 20.0  # the weak view
    experts[2, :, 0, 3], experts[2, :, 1, 5], experts[2, :, 2, :] = 1.0, 2.0, 50.0  # the strong view's branches
    result = loss_of(cpe(threshold=0.95), experts, [0])
    ce_h = -math.log(math.e / (math.e + 9))
    ce_m = -math.log(1 / (math.exp(2) + 9))
    for j in (1, 2, 3):
        assert math.isclose(float(result.terms[f'loss_u{j}']), (ce_h + ce_m) / 2, rel_tol=1e-5)
    none = loss_of(cpe(threshold=0.95), np.zeros((1 + 2, 3, 3, 10)), [0])  # no confident row: exactly 0
    assert all(float(none.terms[f'loss_u{j}']) == 0 for j in (1, 2, 3))


def test_the_labeled_loss_is_adjusted_per_expert_and_the_second_expert_is_evaluated():
    """Zero logits: expert j's labeled loss is -log softmax(tau_j log p_l)_y (0 adds nothing: log 10)."""
    result = loss_of(cpe(), np.zeros((2 + 2, 3, 3, 10)), [0, 9])
    prior = np.asarray(COUNTS, np.float64) / sum(COUNTS)
    for j, tau in ((1, 0.0), (2, 2.0), (3, 4.0)):
        expected = cross_entropy(np.tile(tau * np.log(prior), (2, 1)), np.array([0, 9])).mean()
        assert math.isclose(float(result.terms[f'loss_x{j}']), expected, rel_tol=1e-5)
    experts = torch.randn(4, 3, 3, 10)
    assert torch.equal(cpe().eval_logits(NetworkOutput(experts[:, 0].mean(1), experts=experts)),
                       experts[:, 1].mean(1))


@pytest.mark.parametrize('argv,message', [
    (['--dataset', 'smallimagenet'], '--version CPE on smallimagenet (127 classes) needs --cbn-cut1 and --cbn-cut2'),
    (['--cbn-cut1', '5', '--cbn-cut2', '3'], '--cbn-cut1 5 and --cbn-cut2 3 are not allowed for 10 classes'),
    (['--cbn-cut2', '10'], '--cbn-cut1 2 (its default; pass --cbn-cut1 to change it) and --cbn-cut2 10 are not '
                           'allowed for 10 classes; use 0 <= cut1 <= cut2 < 10')])
def test_branch_cuts_that_cannot_work_are_one_line(capsys, tmp_path, argv, message):
    assert train.main(['--version', 'CPE', *argv, '--data-dir', str(tmp_path), '--dry-run']) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {message}') and err.count('\n') == 1


CUTS = {'cifar10': (2, 4), 'cifar100': (35, 70), 'stl10': (2, 4), 'digits': (2, 4)}


@pytest.mark.parametrize('dataset', list(CUTS))
def test_every_row_of_the_cpe_launcher(echo_python, dataset):
    """Its configs' settings on every row: USB's protocol (constant lr) with its experts and cuts."""
    for index, (n, m, gl, gu, mode, size) in enumerate(ROWS[dataset]):
        args = launched_args(echo_python, 'CPE.sh', dataset, index)
        assert_row(args, 'CPE.sh', dataset, n, m, gl, gu, mode, size)
        assert (args.threshold, args.expert_tau1, args.expert_tau2, args.expert_tau3, args.cbn_cut1,
                args.cbn_cut2) == (0.95, 0, 2, 4, *CUTS[dataset]), (dataset, index)
        budget = (args.arch, args.randaugment, args.lr, args.lr_schedule, args.total_steps, args.eval_step,
                  args.batch_size, args.mu, args.wdecay, args.ema_decay)
        assert budget == ((None, 'fixmatch', 0.1, 'cosine', 1200, 40, 8, 6, 5e-4, 0.99) if dataset == 'digits' else
                          ('wideresnet_usb', 'usb', 0.03, 'constant', 262144, 1024, 64, 2, 5e-4, 0.999)), index


@pytest.mark.parametrize('dataset', ['smallimagenet', 'smallimagenet_1k'])
def test_the_launcher_says_why_cpe_has_no_imagenet_recipe(dataset):
    result = launch('CPE.sh', dataset, 0)
    assert (result.returncode, result.stdout) == (2, '')
    assert result.stderr == (f"error: CPE's official code cannot train on {dataset} (its experts exist on its "
                             f"WRN-28-2 only); no recipe\n")


@pytest.mark.slow
@pytest.mark.parametrize('aug', ['cpu', 'gpu'])
def test_a_40_step_launcher_run_on_both_augmentation_paths(cifar10_launcher_root, tmp_path, aug):
    out = tmp_path / 'run'
    result = launch('CPE.sh', 'cifar10', 2, '--data-dir', cifar10_launcher_root, '--total-steps', 40, '--eval-step',
                    20, *SMALL_RUN, '--aug', aug, '--out', out)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in records] == [20, 40] and all(r['evaluated'] == 200 for r in records)
    assert all(r['loss_x1'] > 0 and r['loss_x3'] > 0 for r in records) and (out / 'checkpoint.pt').exists()
    assert 'starting: CPE on cifar10, wideresnet_usb (' in (out / 'log.txt').read_text()  # (its network's)
