"""Meta-Expert against YaxinHou/Meta-Expert (semilearn/imb_algorithms/metaexpert/metaexpert.py,
semilearn/nets/wrn/wrn_metaexpert.py): its parameter counts, its class-balanced weights, its gate's
weights, its reading of the unlabeled distribution and its fused losses, computed here by hand or in
float64 from the code's formulas."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import test_launchers
from conftest import step_views
from methods import CPE, MetaExpert
from models import NetworkOutput, build_model, count_parameters
from test_launchers import ROWS, SMALL_RUN, assert_row, launch, launched_args

echo_python = test_launchers.echo_python  # the fixture: a python that prints its arguments
CIFAR10_1500_150 = [1500, 859, 492, 282, 161, 92, 53, 30, 17, 10]  # its config 002's labeled counts (sum 3496)


def settings(**options):
    values = dict(threshold=0.95, expert_tau1=0.0, expert_tau2=2.0, expert_tau3=4.0, cbn_cut1=2, cbn_cut2=4,
                  est_epoch=0, me_beta=0.99, me_ratio=2.0, dataset='cifar10')
    return SimpleNamespace(**{**values, **options})


def meta_expert(counts=CIFAR10_1500_150, width=128, **options):
    return MetaExpert(settings(**options), SimpleNamespace(name='cifar10', labeled_per_class=list(counts)),
                      num_features=width)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_the_network_and_the_gate_have_its_parameter_counts():
    """Its log's 1,669,889 for 10 classes: the network 1,471,454 (CPE's 1,470,974 and four BatchNorms of
    the depths, 480) and the gate 198,435; 1,506,284 and 232,995 for 100 classes."""
    for classes, network, gate in ((10, 1471454, 198435), (100, 1506284, 232995)):
        model = build_model('wideresnet_usb', classes, experts=3, depth_features=True)
        method = meta_expert(counts=list(range(classes, 0, -1)), cbn_cut1=2, cbn_cut2=4)
        assert (count_parameters(model), sum(p.numel() for p in method.gate.parameters())) == (network, gate)
        assert not any(p.requires_grad for p in method.gate.parameters())  # (never trained, as its code)
    output = build_model('wideresnet_usb', 10, experts=3, depth_features=True)(torch.randn(2, 3, 32, 32))
    assert output.depths.shape == (2, 16 + 32 + 64 + 128) and output.rows(1, 2).depths.shape == (1, 240)


def test_the_class_balanced_weights_and_the_groups():
    """Effective numbers with beta 0.99, scaled to sum to 10 and to 3 (group counts 2359, 774, 363)."""
    method = meta_expert()
    np.testing.assert_allclose(method.class_weights.numpy(), [0.3326, 0.3327, 0.3350, 0.3534, 0.4149, 0.5513, 0.8055,
                                                              1.2779, 2.1179, 3.4788], atol=1e-4)
    np.testing.assert_allclose(method.group_weights.numpy(), [0.9910, 0.9914, 1.0175], atol=1e-4)
    assert method.group.tolist() == [0, 0, 1, 1, 2, 2, 2, 2, 2, 2]


def test_the_weights_rescale_the_gates_softmax_by_each_experts_own_best_class():
    """Scores 0 (a = 1/3 each) and expert 1 sure of a head class, the others of classes outside their
    range: p = (1, 0, 0), w = softmax(1/3, 0, 0), w_1 = e^(1/3) / (e^(1/3) + 2) = 0.4110; in general each
    w_k lies in [1 / (1 + 2e), e / (e + 2)] and they sum to 1."""
    method = meta_expert()
    method.gate.forward = lambda depths, adjusted: torch.zeros(len(depths), 3)
    experts = torch.zeros(1, 3, 3, 10)
    experts[0, 0, :, 0] = experts[0, 1, :, 0] = experts[0, 2, :, 1] = 100.0
    _, w = method.weights(NetworkOutput(experts[:, 0].mean(1), experts=experts, depths=torch.zeros(1, 240)))
    third = math.exp(1 / 3)
    np.testing.assert_allclose(w[0].numpy(), [third / (third + 2), 1 / (third + 2), 1 / (third + 2)], rtol=1e-5)
    assert math.isclose(float(w[0, 0]), 0.4110, abs_tol=1e-4)
    method = meta_expert()
    torch.manual_seed(0)
    experts = torch.randn(64, 3, 3, 10) * 5
    _, w = method.weights(NetworkOutput(experts[:, 0].mean(1), experts=experts, depths=torch.randn(64, 240)))
    assert torch.allclose(w.sum(1), torch.ones(64)) and w.min() >= 1 / (1 + 2 * math.e) - 1e-6
    assert w.max() <= math.e / (math.e + 2) + 1e-6


@pytest.mark.parametrize('estimate,kappa', [('labeled', [1, 0, 0]), ('uniform', [0, 1, 0]), ('reversed', [0, 0, 1])])
def test_the_unlabeled_distribution_is_read_once_from_the_second_experts_pseudo_labels(estimate, kappa):
    """Its test on pi_hat's halves (ratio 2): the labeled distribution (gamma 150) is consistent, a flat
    one uniform, the labeled one flipped reversed."""
    counts = torch.tensor(CIFAR10_1500_150, dtype=torch.float32)
    pi_hat = {'labeled': counts, 'uniform': torch.ones(10), 'reversed': counts.flip(0)}[estimate]
    assert meta_expert().distribution(pi_hat / pi_hat.sum()).tolist() == kappa


def step(method, experts, depths, y):
    experts = torch.as_tensor(experts, dtype=torch.float32)
    output = NetworkOutput(experts[:, 0].mean(1), experts=experts, depths=torch.as_tensor(depths, dtype=torch.float32))
    return method.loss(step_views(method, output, y, torch.arange((len(experts) - len(y)) // 2)))


def test_the_fusion_starts_at_epoch_est_epoch_plus_2_and_equals_its_formulas():
    """est_epoch 0: in epoch 0 the loss is CPE's alone and nothing is counted; in epoch 1 the second
    expert's confident pseudo labels are counted; at the start of epoch 2 kappa is read from them and
    the four fusion losses join, each equal to its formula in float64 (from the gate's scores)."""
    generator = np.random.default_rng(0)
    method, cpe = meta_expert(threshold=0.3), CPE(settings(threshold=0.3), SimpleNamespace(
        name='cifar10', labeled_per_class=CIFAR10_1500_150))
    experts, depths, y = generator.normal(0, 3, (4 + 2 * 12, 3, 3, 10)), generator.normal(0, 1, (28, 240)), [0, 3, 5, 9]
    first = step(method, experts, depths, y)
    expected = step(cpe, experts, depths, y)
    assert float(first.loss) == float(expected.loss) and float(method.count.sum()) == 0
    method.end_epoch()
    second = step(method, experts, depths, y)
    confident = second.mask
    assert float(method.count.sum()) == confident.sum() > 0
    assert method.count.tolist() == torch.bincount(second.pseudo_label[confident], minlength=10).float().tolist()
    method.end_epoch()
    assert float(method.fusing) == 1 and sorted(method.kappa.tolist()) in ([0, 0, 1], [1 / 3] * 3)
    third = step(method, experts, depths, y)
    # the fused terms by hand, from the gate's scores o of each view
    e = np.asarray(experts, np.float64)
    views = {'x': e[:4], 'w': e[4:16], 's': e[16:]}
    adjust = method.adjust.double().numpy()
    group = method.group.numpy()

    def weights(view, rows):
        scores = method.gate(torch.as_tensor(depths[rows], dtype=torch.float32),
                             torch.as_tensor(views[view].mean(2) + adjust, dtype=torch.float32)).double().numpy()
        probs = softmax(views[view].mean(2))
        own = np.stack([probs[:, k][:, group == k].max(-1) for k in range(3)], 1)
        return scores, softmax(own * softmax(scores))

    (o_x, w_x), (o_w, w_w), (o_s, w_s) = (weights(view, rows) for view, rows in (('x', slice(0, 4)),
                                                                                 ('w', slice(4, 16)),
                                                                                 ('s', slice(16, 28))))
    shift = lambda z: z - z.min(-1, keepdims=True)  # noqa: E731
    cw, gw = method.class_weights.double().numpy(), method.group_weights.double().numpy()

    def weighted_ce(z, t, weight):
        losses = -np.log(softmax(z)[np.arange(len(t)), t])
        return (weight[t] * losses).sum() / weight[t].sum()

    fused_x = (w_x[..., None] * shift(views['x'].mean(2) + adjust)).sum(1)
    fuse_sup = weighted_ce(fused_x, np.array(y), cw)
    gate_sup = weighted_ce(o_x, group[y], gw)
    gate_unsup = weighted_ce(o_s, o_w.argmax(-1), np.ones(3))
    mixed_w = (w_w[:, None, :, None] * shift(views['w'])).sum(2)
    mixed_s = (w_s[:, None, :, None] * shift(views['s'])).sum(2)
    kappa = method.kappa.double().numpy()
    fuse_unsup = sum(kappa[k] * weighted_ce(mixed_s[:, k], mixed_w[:, k].argmax(-1), np.ones(10)) for k in range(3))
    for name, value in (('fuse_sup', fuse_sup), ('gate_sup', gate_sup), ('gate_unsup', gate_unsup),
                        ('fuse_unsup', fuse_unsup)):
        assert math.isclose(float(third.terms[name]), value, rel_tol=1e-4), name
    assert math.isclose(float(third.loss), float(expected.loss) + fuse_sup + gate_sup + gate_unsup + fuse_unsup,
                        rel_tol=1e-5)


def test_the_evaluated_logits_are_the_weighted_experts():
    method = meta_expert()
    torch.manual_seed(1)
    experts = torch.randn(5, 3, 3, 10)
    output = NetworkOutput(experts[:, 0].mean(1), experts=experts, depths=torch.randn(5, 240))
    _, w = method.weights(output)
    assert torch.allclose(method.eval_logits(output), (w[..., None] * experts.mean(2)).sum(1))


CUTS = {'cifar10': (2, 4), 'cifar100': (35, 70), 'stl10': (2, 4), 'digits': (2, 4)}


@pytest.mark.parametrize('dataset', list(CUTS))
def test_every_row_of_the_metaexpert_launcher(echo_python, dataset):
    for index, (n, m, gl, gu, mode, size) in enumerate(ROWS[dataset]):
        args = launched_args(echo_python, 'MetaExpert.sh', dataset, index)
        assert_row(args, 'MetaExpert.sh', dataset, n, m, gl, gu, mode, size)
        own = (args.threshold, args.expert_tau1, args.expert_tau2, args.expert_tau3, args.cbn_cut1, args.cbn_cut2,
               args.est_epoch, args.me_beta, args.me_ratio)
        assert own == (0.95, 0, 2, 4, *CUTS[dataset], 0 if dataset == 'digits' else 18, 0.99, 2), (dataset, index)
        budget = (args.lr_schedule, args.total_steps, args.eval_step, args.batch_size, args.mu)
        assert budget == (('cosine', 1200, 40, 8, 6) if dataset == 'digits' else
                          ('cosine' if dataset == 'cifar100' else 'constant', 262144, 1024, 64, 2)), (dataset, index)


@pytest.mark.parametrize('dataset', ['smallimagenet', 'smallimagenet_1k'])
def test_the_launcher_says_why_metaexpert_has_no_imagenet_recipe(dataset):
    result = launch('MetaExpert.sh', dataset, 0)
    assert (result.returncode, result.stdout) == (2, '')
    assert result.stderr.startswith(f"error: Meta-Expert's official code cannot train on {dataset} (")


@pytest.mark.slow
@pytest.mark.parametrize('aug', ['cpu', 'gpu'])
def test_a_60_step_launcher_run_on_both_augmentation_paths(cifar10_launcher_root, tmp_path, aug):
    """The head-tail CIFAR-10 row for 60 steps with --est-epoch 0: the fusion from step 41; the gate
    never moves (the checkpoints of steps 40 and 60 hold the same one)."""
    out = tmp_path / 'run'
    result = launch('MetaExpert.sh', 'cifar10', 4, '--data-dir', cifar10_launcher_root, '--total-steps', 60,
                    '--eval-step', 20, *SMALL_RUN, '--aug', aug, '--est-epoch', 0, '--threshold', 0.2, '--out', out)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in records] == [20, 40, 60] and all(r['evaluated'] == 200 for r in records)
    assert records[-1]['fuse_sup'] > 0 and sum(records[-1]['kappa']) == pytest.approx(1)
    last, previous = (torch.load(out / name, weights_only=False)['method'] for name in ('checkpoint.pt',
                                                                                        'checkpoint.prev.pt'))
    gate = [k for k in last if k.startswith('gate.')]
    assert len(gate) == 22 and all(torch.equal(last[k], previous[k]) for k in gate)
    assert not torch.equal(last['count'], torch.zeros(10))


@pytest.mark.slow
def test_the_head_tail_cifar100_row_trains(cifar100_root, tmp_path):
    """`bash sh/MetaExpert.sh cifar100 4`, a row its code has no config for (head-tail, CIFAR-100: CPE's cuts
    35 and 70, its code's cosine schedule there), trains: 4 steps on fake CIFAR-100 files."""
    out = tmp_path / 'run'
    result = launch('MetaExpert.sh', 'cifar100', 4, '--data-dir', cifar100_root, '--num-max', 20, '--num-max-u', 40,
                    '--total-steps', 4, '--eval-step', 2, *SMALL_RUN, '--out', out)
    assert result.returncode == 0, result.stderr
    args = json.loads((out / 'args.json').read_text())
    assert (args['flag_reverse_LT'], args['cbn_cut1'], args['cbn_cut2'], args['lr_schedule']) == (4, 35, 70, 'cosine')
    assert [json.loads(line)['step'] for line in (out / 'metrics.jsonl').read_text().splitlines()] == [2, 4]
