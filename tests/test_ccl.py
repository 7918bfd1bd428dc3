"""CCL (methods/ccl.py) against the official code's step (zhouzihao11/CCL train.py and
loss/semiConLoss.py at 0410cb1), rewritten below as that code computes it: features in its order,
the contrastive rows picked with torch.nonzero, the inverse with torch.inverse; values by hand; its
launcher's rows, dry runs and a short run."""
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import train
from methods import CCL, METHODS
from models import NetworkOutput, build_model, count_parameters
import test_launchers
from test_dry_run import check_row
from test_launchers import ROWS, SMALL_RUN, assert_row, launch, launched_args
from conftest import step_views
from core.command_line import get_args_parser
from core.training import build_training
from dataset.batches import LoaderBatches

echo_python = test_launchers.echo_python  # the fixture: a python that prints its arguments
C, B, MU = 5, 4, 3
U = B * MU


def official_probabilities(label_feat, unlabel_feat, label):
    """unlabelProbability, as loss/semiConLoss.py computes it."""
    simuu = F.softmax(unlabel_feat @ unlabel_feat.t(), dim=1)
    mat = torch.inverse(torch.eye(simuu.shape[0], dtype=simuu.dtype) - 0.2 * simuu)
    simul = torch.exp(unlabel_feat @ label_feat.t() / 0.1)
    py_sum = label.sum(0).repeat(simul.size(0), 1)
    logits = torch.log(simul @ label / py_sum)
    return mat @ (0.8 * F.softmax(logits, dim=1))


def official_sharp(a):
    a = a ** 4.0
    return a / a.sum(dim=1, keepdim=True)


def official_step(g, h, z, centres, y, p_l, p_u, p_all, mask_l, args):
    """The loss of one official step and its additions to num_all and num_unlabeled. Rows here are
    ours (labeled weak, strong, strong, then unlabeled weak, strong, strong); the official feature
    list is built from them in its own order."""
    cross = lambda a, b: -torch.mean(torch.sum(a * torch.log(b), dim=1))  # noqa: E731
    la = lambda py, tro: torch.log(py ** tro + 1e-12)  # noqa: E731
    logits_x, logits_x_b = g[:B], h[:B]
    logits_x_w, logits_x_s, logits_x_s1 = g[3 * B:].chunk(3)
    logits_x_b_w, logits_x_b_s, logits_x_b_s1 = h[3 * B:].chunk(3)
    pro = U / (U + B)
    l_u_s = F.cross_entropy(logits_x, y)
    l_b_s = F.cross_entropy(logits_x_b + la(p_l, args.tau), y)
    logits_la_u = -la((1 - pro) * p_l + pro * p_all, 1.0) + la(p_u, 1 + args.tau / 2)
    logits_co = 1 / 2 * (logits_x_w + logits_la_u) + 1 / 2 * logits_x_b_w
    energy = -torch.logsumexp(logits_co / args.T, dim=1)
    pseudo_label_co = F.softmax(logits_co / args.T, dim=1)
    pseudo_label_con = official_sharp(F.softmax(logits_co / args.T, dim=1))
    prob_co, targets_co = torch.max(pseudo_label_co, dim=-1)
    mask = prob_co.ge(args.threshold).float()
    targets_co2, mask_twice = torch.cat([targets_co, targets_co]), torch.cat([mask, mask])
    l_u_b = (F.cross_entropy(torch.cat([logits_x_b_s, logits_x_b_s1]) + la(p_all, args.tau), targets_co2,
                             reduction='none') * mask_twice).mean()
    l_u_u = (F.cross_entropy(torch.cat([logits_x_s, logits_x_s1]), targets_co2, reduction='none') * mask_twice).mean()
    loss_cls = (max(1.5, MU) * l_u_u + l_u_s) + (max(1.5, MU) * l_u_b + l_b_s)
    # the projected features in the official input order: x, u_w, u_s, u_s1, x_s, x_s1
    x_s, x_s1 = z[B:2 * B], z[2 * B:3 * B]
    u_w, u_s, u_s1 = z[3 * B:].chunk(3)
    center_label = torch.ones(C, C, dtype=z.dtype)
    one_hot = torch.cat([F.one_hot(y, C), F.one_hot(y, C)]).to(z.dtype)
    label_feat, label = torch.cat([centres, x_s, x_s1]), torch.cat([center_label, one_hot])
    with torch.no_grad():
        up_aim = official_sharp(official_probabilities(label_feat, u_w, label))
    up1, up2 = official_probabilities(label_feat, u_s, label), official_probabilities(label_feat, u_s1, label)
    up_u = (up1 + up2) / 2
    contrac_loss = (cross(up_aim, up1) + cross(up_aim, up2) + cross(up_u, up_u)) / 3
    idx = torch.nonzero(energy.le(-8.75)).squeeze()
    f3, f4 = u_s[idx].reshape(-1, z.shape[1]), u_s1[idx].reshape(-1, z.shape[1])
    picked = pseudo_label_con[idx].reshape(-1, C)
    label2 = torch.cat([center_label, one_hot, picked, picked])
    feat = torch.cat([centres, x_s, x_s1, f3, f4])
    sim = torch.exp(feat @ feat.t() / 0.1) * (torch.ones(len(feat), len(feat), dtype=z.dtype).fill_diagonal_(0))
    py_sum = label2.sum(0).repeat(len(feat), 1) - label2
    logits = torch.log(sim @ label2 / py_sum)[C:]
    contrac_loss2 = torch.nn.CrossEntropyLoss()(logits, label2[C:])
    loss = args.lambda1 * loss_cls + args.lambda2 * contrac_loss + (1 - args.lambda1) * contrac_loss2
    num_all = (pseudo_label_co * mask[:, None]).sum(0)
    num_unlabeled = (pseudo_label_co * mask_l * energy.le(-8.75).float()[:, None]).sum(0)
    return loss, (loss_cls, contrac_loss, contrac_loss2), num_all, num_unlabeled, len(idx.reshape(-1))


def make_ccl(**changes):
    args = SimpleNamespace(threshold=0.6, tau=2.0, T=1.0, alpha=0.5, beta=0.9, upbatch=2, est_epoch=0,
                           lambda1=0.7, lambda2=1.5, mu=MU, eval_step=4)
    vars(args).update(changes)
    labeled = [9, 6, 4, 2, 1]
    data = SimpleNamespace(labeled_per_class=labeled, unlabeled_is_labeled=[i % 3 == 0 for i in range(40)])
    return CCL(args, data), args


def fields(output):
    """The network's output as the official step reads it: (logits, balanced logits, projections, centres)."""
    return output.logits, output.balanced, output.projection, output.centres


def random_output(seed, scale=8.0):
    generator = torch.Generator().manual_seed(seed)
    rows = 3 * B + 3 * U
    g = torch.randn(rows, C, generator=generator, dtype=torch.float64) * scale
    h = torch.randn(rows, C, generator=generator, dtype=torch.float64) * scale
    z = F.normalize(torch.randn(rows, 8, generator=generator, dtype=torch.float64), dim=1)
    centres = F.normalize(torch.randn(C, 8, generator=generator, dtype=torch.float64), dim=1)
    y = torch.randint(0, C, (B,), generator=generator)
    u_index = torch.randint(0, 40, (U,), generator=generator)
    return NetworkOutput(g, h, projection=z, centres=centres), y, u_index


@pytest.mark.parametrize('seed', range(6))
def test_the_step_equals_the_official_code(seed):
    """The loss and its parts, on outputs where some rows are confident and some selected by energy."""
    method, args = make_ccl()
    output, y, u_index = random_output(seed)
    p_l, p_u, p_all = (method.p_l.double(), method.p_u.double(), method.p_all.double())
    mask_l = (~method.is_labeled[u_index]).double()[:, None]
    loss, parts, num_all, num_unlabeled, selected = official_step(*fields(output), y, p_l, p_u, p_all, mask_l, args)
    result = method.loss(step_views(method, output, y, u_index))
    assert 0 < selected < U  # the selection matters in this case
    assert torch.allclose(result.loss, loss, rtol=1e-6, atol=1e-9), (result.loss, loss)
    ours = (result.terms['loss_cls'], result.terms['loss_con'], result.terms['loss_soft'])
    for mine, theirs in zip(ours, parts):
        assert torch.allclose(mine, theirs, rtol=1e-6, atol=1e-9)
    assert torch.allclose(method.n_all, 1 + num_all.float(), rtol=1e-5)  # counted from ones
    assert torch.allclose(method.n_u, 1 + num_unlabeled.float(), rtol=1e-5)


def test_no_row_selected_leaves_only_the_labeled_rows_in_the_soft_term():
    method, args = make_ccl()
    output, y, u_index = random_output(0, scale=0.1)  # low energies nowhere: nothing selected
    loss, parts, *_, selected = official_step(*fields(output), y, method.p_l.double(), method.p_u.double(),
                                              method.p_all.double(), torch.ones(U, 1, dtype=torch.float64), args)
    result = method.loss(step_views(method, output, y, u_index))
    assert selected == 0 and torch.allclose(result.terms['loss_soft'], parts[2], rtol=1e-6)


def test_the_estimates_update_every_upbatch_steps_after_est_epoch():
    """Epoch 0 (= --est-epoch) only counts; in epoch 1 every second step updates p_u and p_all by
    their momenta from the counts since the last update, which then restart from ones."""
    method, args = make_ccl(upbatch=2, est_epoch=0)
    output, y, u_index = random_output(1)  # (3 of its unlabeled rows are selected, 11 confident)
    for _ in range(2):
        method.loss(step_views(method, output, y, u_index))
    assert torch.equal(method.p_u, torch.full((C,), 0.2)) and torch.equal(method.p_all, method.p_l)  # epoch 0
    method.end_epoch()
    assert torch.equal(method.n_all, torch.ones(C)) and int(method.batch) == 0
    method.loss(step_views(method, output, y, u_index))
    n_all, n_u = method.n_all.clone(), method.n_u.clone()
    p_u, p_all = method.p_u.clone(), method.p_all.clone()
    method.loss(step_views(method, output, y, u_index))  # the second step of epoch 1: an update
    step_all, step_u = n_all - 1, n_u - 1  # (the same output: the same additions)
    expected_u = args.alpha * p_u + (1 - args.alpha) * (n_u + step_u) / (n_u + step_u).sum()
    expected_all = args.beta * p_all + (1 - args.beta) * (n_all + step_all) / (n_all + step_all).sum()
    assert torch.allclose(method.p_u, expected_u) and torch.allclose(method.p_all, expected_all)
    assert not torch.equal(method.p_u, p_u)
    assert torch.equal(method.n_all, torch.ones(C)) and torch.equal(method.n_u, torch.ones(C))


def test_the_projection_heads_are_ccls_only():
    """WRN-28-2 with CCL's heads has the official model's 1,568,484 parameters (10 classes); every
    other method's network is unchanged."""
    assert count_parameters(build_model('wideresnet', 10, two_heads=True, projection=True)) == 1_568_484
    assert count_parameters(build_model('wideresnet', 10, two_heads=True)) == 1_468_900
    assert [name for name, m in METHODS.items() if m.projection_heads] == ['CCL']
    network = build_model('wideresnet', 10, two_heads=True, projection=True, depth=10, widen_factor=1).eval()
    output = network(torch.zeros(2, 3, 32, 32))  # evaluation: the two heads' logits only
    assert output.balanced.shape == (2, 10) and output.projection is None and output.centres is None
    output = network.train()(torch.zeros(2, 3, 32, 32))  # training: the projections too
    assert output.projection.shape == (2, 128) and output.centres.shape == (10, 128)


def test_a_step_reads_no_device_value_on_the_host(small_cifar10_root):
    """A whole CCL step (forward, the loss with its inverse and energy selection, SGD, the weight
    EMA) on the meta device, where any read of a value on the host raises."""
    args = get_args_parser().parse_args(['--version', 'CCL', '--data-dir', str(small_cifar10_root),
                                               '--num-max', '20', '--num-max-u', '30', '--imb-ratio-label', '10',
                                               '--imb-ratio-unlabel', '10', '--batch-size', '4', '--mu', '2',
                                               '--depth', '10', '--widen-factor', '1', '--est-epoch', '0',
                                               '--upbatch', '1'])
    from dataset.data import build_data
    data = build_data(args, CCL.labeled_in_pool)
    args.arch, args.aug, args.channels_last, args.amp = 'wideresnet', 'cpu', False, False
    device = torch.device('meta')
    run = build_training(args, data, device, train.learn)
    views = lambda n, k: [torch.empty(n, 3, 32, 32, device=device) for _ in range(k)]  # noqa: E731
    labeled = (views(4, 3), torch.zeros(4, dtype=torch.long, device=device), torch.arange(4, device=device))
    unlabeled = (views(8, 3), torch.zeros(8, dtype=torch.long, device=device),
                 torch.zeros(8, dtype=torch.long, device=device))
    for _ in range(2):
        result, _ = train.train_step(run, LoaderBatches([labeled], [unlabeled]), device, args)
        run.method.end_epoch()
    assert result.loss.device == device


def test_tau_defaults_to_ccls_own():
    parse = get_args_parser().parse_args
    assert parse(['--version', 'CCL']).tau == 2.0 and parse([]).tau == 1.0 and parse(['--version', 'CCL', '--tau',
                                                                                      '0.1']).tau == 0.1


def ccl_recipe(a):
    return a.lr, a.batch_size, a.mu, a.tau, a.alpha, a.beta, a.est_epoch, a.upbatch, a.lambda1, a.lambda2


@pytest.mark.parametrize('dataset', list(ROWS))
def test_every_row_takes_the_official_config_it_is_nearest(echo_python, dataset):
    """configs/cifar10/reverse_100.sh for reversed CIFAR-10 rows, con_*/uni_100 for the others (and
    STL-10, which has none), the defaults for CIFAR-100, SmallImagenet's for ImageNet-127, and the
    digits recipe; every row's split as the other launchers pass it."""
    for index, (n, m, gl, gu, mode, size) in enumerate(ROWS[dataset]):
        a = launched_args(echo_python, 'CCL.sh', dataset, index)
        assert_row(a, 'CCL.sh', dataset, n, m, gl, gu, mode, size)
        if dataset.startswith('smallimagenet'):
            assert ccl_recipe(a) == (0.03, 32, 2, 0.1, 0.5, 0.5, 5, 500, 0.7, 1.5)
        elif dataset == 'cifar100':
            assert ccl_recipe(a) == (0.03, 64, 1, 2.0, 0.5, 0.5, 5, 500, 0.7, 1.0)
        elif dataset == 'digits':
            assert ccl_recipe(a) == (0.1, 8, 6, 2.0, 0.5, 0.9, 5, 40, 0.7, 1.0) and a.total_steps == 1200
            continue
        elif mode == 1:
            assert ccl_recipe(a) == (0.03, 64, 1, 2.0, 0.999, 0.999, 5, 100, 0.7, 1.0), index
        else:
            assert ccl_recipe(a) == (0.03, 64, 1, 2.0, 0.5, 0.9, 20, 500, 0.7, 1.0), index
        assert (a.total_steps, a.eval_step, a.threshold, a.T) == (250000, 500, 0.95, 1.0)


@pytest.mark.slow
def test_a_dry_run_of_every_cifar10_row_builds_its_split(cifar10_launcher_root, echo_python, capsys):
    """Row 3 (middle) and row 4 (head-tail) included: unlabeled distributions CCL's own code cannot build."""
    for index, (n, m, gl, gu, mode, _) in enumerate(ROWS['cifar10']):
        result = launch('CCL.sh', 'cifar10', index, python=echo_python)
        argv = result.stdout.splitlines()[2:] + ['--data-dir', str(cifar10_launcher_root), '--dry-run']
        assert train.main(argv) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        check_row(summary, 10, n, m, gl, gu, mode, 20)
        assert summary['params'] == 1_568_484  # WRN-28-2 with CCL's heads


@pytest.mark.slow
@pytest.mark.parametrize('aug', ['cpu', 'gpu'])
def test_a_short_launcher_run_writes_metrics_and_checkpoints(cifar10_launcher_root, tmp_path, aug):
    out = tmp_path / 'run'
    result = launch('CCL.sh', 'cifar10', 0, '--data-dir', cifar10_launcher_root, '--total-steps', 40, '--eval-step', 20,
                    *SMALL_RUN, '--est-epoch', 0, '--upbatch', 10, '--aug', aug, '--out', out)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / 'args.json').read_text())['aug'] == aug
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in records] == [20, 40] and all(r['evaluated'] == 200 for r in records)
    assert abs(sum(records[-1]['pi_u']) - 1) < 1e-5 and records[1]['p_all'] != records[0]['p_all']
    saved = torch.load(out / 'checkpoint.pt', weights_only=False)
    assert saved['step'] == 40 and {'p_u', 'p_all', 'n_u', 'n_all', 'batch', 'epoch'} <= set(saved['method'])
    assert (out / 'best.pt').exists()


def test_a_run_whose_estimates_never_update_says_so_first():
    args = SimpleNamespace(eval_step=500, upbatch=500, est_epoch=5)
    assert CCL.idle_parts(args, 500 * 7) == []  # epoch 6 (0-based) is past --est-epoch 5: it updates
    assert CCL.idle_parts(args, 500 * 6) == ['the two estimates never update (they start in epoch --est-epoch + 2 '
                                             '= 7; the run has 6)']
    args.upbatch = 501
    assert CCL.idle_parts(args, 500 * 100) == ['the two estimates never update (--upbatch 501 is longer than an '
                                               'epoch of --eval-step 500)']


def test_the_soft_contrastive_loss_and_sharpening_by_hand():
    """Two classes, centres (1,0) and (0,1) (labels all ones), a labeled row (1,0) of class 0, a kept
    unlabeled row (0,1) of class 1 and a row (1,0) not kept. With e = exp(10): the labeled row's
    kernel sums per class are e + 1 and e + 2 over class masses 2 and 3, the kept row's mirror them,
    so each term is -log(a / (a + b)) with a = (e + 1) / 2, b = (e + 2) / 3; the row not kept adds
    nothing (counted, it would make the mean 2/3 of that)."""
    from methods.ccl import sharpen, soft_contrastive_loss
    features = torch.tensor([[1., 0], [0, 1], [1, 0], [0, 1], [1, 0]], dtype=torch.float64)
    labels = torch.tensor([[1., 1], [1, 1], [1, 0], [0, 1], [0, 0]], dtype=torch.float64)
    kept = torch.tensor([True, True, True, True, False])
    e = torch.exp(torch.tensor(10.0, dtype=torch.float64))
    a, b = (e + 1) / 2, (e + 2) / 3
    assert torch.allclose(soft_contrastive_loss(features, labels, kept, 2), -torch.log(a / (a + b)))
    assert torch.allclose(sharpen(torch.tensor([[0.6, 0.4]])), torch.tensor([[0.1296, 0.0256]]) / 0.1552)
