"""CPG's step, selection and schedule against YaxinHou/CPG (semilearn/imb_algorithms/cpg/cpg.py:159-604):
literal numbers worked out by hand from its formulas, or its formulas written out here in float64 in its
order (the feature copies through the classifier itself, its Counter rule, its centre loop), never the
method's own code; resume across its stages, two processes, the meta device and its launcher."""
import dataclasses
import json
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
from core.training import new_model
from tools import report
from dataset.data import build_data
from methods import CPG
from methods.cpg import copies_per_class, refined_prior, select, similarity_sums, smooth
from models import NetworkOutput
from test_launchers import ROWS, SMALL_RUN, assert_row, launch, launched_args
from test_resume import BASE, interrupted_equals_whole, own_flags

echo_python = test_launchers.echo_python  # the fixture: a python that prints its arguments
SETTINGS = dict(threshold=0.95, label_smoothing=0.1, cpg_warmup_epochs=30, cpg_update_epochs=5, cpg_min_hits=12,
                cpg_agreement=0.8, cpg_copies=10, cpg_exact_similarity=False, eval_step=1024, total_steps=262144,
                seed=0)
STAGES = ('--cpg-warmup-epochs', 1, '--cpg-update-epochs', 1, '--cpg-min-hits', 0)  # a stage at every epoch from 1


def cpg(labeled=(3, 2, 1), pool=4, **options):
    """CPG on a split of `labeled` images per class (class order) and a pool of `pool` images."""
    targets = np.repeat(np.arange(len(labeled)), labeled)
    data = SimpleNamespace(labeled_per_class=list(labeled), labeled_idx=np.arange(len(targets)),
                           unlabeled_idx=np.arange(len(targets), len(targets) + pool), labeled_targets=targets,
                           images=None, mean=None, std=None, flip=True, cutout=16)
    return CPG(SimpleNamespace(**{**SETTINGS, **options}), data)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def soft_ce(z, t):
    return -(t * np.log(softmax(z))).sum(-1)


def test_label_smoothing_and_the_selection_threshold():
    assert torch.allclose(smooth(torch.tensor([2]), 10, 0.1)[0],
                          torch.tensor([0.1 / 9] * 2 + [0.9] + [0.1 / 9] * 7))
    assert cpg().threshold == pytest.approx(0.855)  # p_cutoff * (1 - smoothing), cpg.py:588-589


@pytest.mark.parametrize('n_ls,copies', [
    # its shipped log (CIFAR-10, gamma 100, random, seed 1) at epoch 35: the 4th smallest count is 108
    ([400, 239, 143, 86, 51, 56, 877, 339, 256, 108], [2, 4, 7, 12, 21, 19, 1, 3, 4, 10]),
    ([400, 298, 261, 349, 400, 926, 4472, 604, 2387, 1979], [10, 13, 15, 11, 10, 4, 0, 6, 1, 2])])
def test_copies_per_row_from_the_labeled_sets_counts(n_ls, copies):
    assert copies_per_class(torch.tensor(n_ls, dtype=torch.float32), 10).tolist() == copies


def test_the_refined_prior_of_the_selection():
    n_l = torch.tensor([400., 239, 143, 86, 51, 30, 18, 11, 6, 4])
    n_s = torch.tensor([0., 0, 0, 0, 0, 26, 859, 328, 250, 104])  # zeros (and counts <= min n_L 4) -> 26
    expected = torch.tensor([26., 26, 26, 26, 26, 26, 859, 328, 250, 104])
    assert torch.allclose(refined_prior(n_s, n_l), expected / expected.sum())
    assert torch.allclose(refined_prior(torch.ones(10), n_l), torch.full((10,), 0.1))  # the first window: uniform
    assert torch.allclose(refined_prior(torch.tensor([0., 3, 9]), torch.tensor([5., 2, 1])),
                          torch.tensor([3., 3, 9]) / 15)  # (3 > min n_L 1 is kept)


def test_the_selection_rule_is_more_than_12_hits_and_more_than_80_percent():
    memory = torch.tensor([[11, 2, 0],    # 13 hits, 11 of a: selected as 0, target (11, 2, 0) / 13
                           [12, 0, 0],    # 12 hits: not more than 12
                           [0, 12, 3],    # 15 hits, 12 of one: 12 > 0.8 * 15 = 12 is false
                           [0, 0, 17],    # selected as 2
                           [0, 0, 0]], dtype=torch.int32)
    label, histogram = select(memory, 12, 0.8)
    assert label.tolist() == [0, -1, -1, 2, -1]
    assert torch.allclose(histogram[0], torch.tensor([11 / 13, 2 / 13, 0]))
    assert torch.equal(histogram[4], torch.zeros(3))


def test_the_similarity_sums_keep_one_row_per_class_and_batch_as_its_code():
    """`sim_num[y] += s` with repeated classes in y adds one of them (the last, on the CPU)."""
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    s = torch.tensor([.1, .2, .3, .4, .5, .6])
    centres = torch.eye(3)
    # features whose (cos + 1) / 2 to their class centre is s: cos = 2 s - 1 in the plane of the centre
    features = torch.stack([torch.cos(torch.acos(2 * v - 1)) * centres[y] +
                            torch.sin(torch.acos(2 * v - 1)) * centres[(y + 1) % 3] for y, v in zip(labels, s)])
    torch.testing.assert_close(similarity_sums(features, labels, centres, exact=False), torch.tensor([.2, .3, .6]))
    torch.testing.assert_close(similarity_sums(features, labels, centres, exact=True), torch.tensor([.3, .3, 1.5]))
    # per batch of 2 rows: batches (0, 0), (1, 2), (2, 2) keep .2; .3 and .4; .6
    torch.testing.assert_close(similarity_sums(features, labels, centres, exact=False, batch=2),
                               torch.tensor([.2, .3, 1.0]))


def test_the_schedule_of_its_configs():
    """Warm-up 30 epochs, then a window every 5: events at the start of epochs 30, 35, ..., 255 (cpg.py:26-41,
    159-463), 46 in 256 epochs of 1,024 steps."""
    assert cpg().stage_starts == tuple(1024 * e for e in range(30, 256, 5))
    assert len(cpg().stage_starts) == 46


def official_step(method, logits, balanced, features, weight, bias, y, x_index, eps):
    """cpg.py:537-604 in float64: the feature copies through the classifier, their mean soft CE with the
    labeled rows, logit-adjusted by n_LS; the auxiliary head's two CE terms; the selection's mask."""
    n_ls = method.n_ls.double().numpy()
    adjust = np.log(n_ls / n_ls.sum())
    b = len(y)
    k = (len(logits) - 2 * b) // 2  # (rows: labeled weak, labeled strong, unlabeled weak, unlabeled strong)
    uw, us = logits[2 * b:2 * b + k], logits[2 * b + k:]
    target = method.targets.double().numpy()[x_index]
    copies = method.copies.numpy()[y]
    radius = method.radius.double().numpy()
    rows, labels = [features[i] for i in range(b)], [target[i] for i in range(b)]
    for i in range(b):
        for j in range(copies[i]):
            rows.append(features[i] + eps[i, j] * radius[y[i]] * features[i] / np.linalg.norm(features[i]))
            labels.append(target[i])
    z = np.stack(rows) @ weight.T + bias + adjust
    sup = soft_ce(z, np.stack(labels)).mean()
    smoothing = float(method.aux_smoothing)
    c = len(adjust)

    def smoothed(label):
        t = np.full((len(label), c), smoothing / (c - 1))
        t[np.arange(len(label)), label] = 1 - smoothing
        return t
    hw, hs, hx = balanced[2 * b:2 * b + k], balanced[2 * b + k:], balanced[:b]
    aux = soft_ce(hs, smoothed(softmax(hw).argmax(-1))).mean() + soft_ce(hx + adjust, smoothed(y)).mean()
    prior = method.selection_prior.double().numpy()
    pw, ps = softmax(uw + prior), softmax(us + prior)
    mask = (pw.max(-1) >= 0.95 * 0.9) & (ps.max(-1) >= 0.95 * 0.9) & (pw.argmax(-1) == ps.argmax(-1))
    return sup, aux, mask & bool(method.selecting), pw.argmax(-1)


@pytest.mark.parametrize('window', ['warm-up', 'first', 'later'])
def test_the_step_equals_its_formulas(window):
    torch.manual_seed(0)
    method, b, k, c, d = cpg(labeled=(3, 2, 1), pool=5), 3, 4, 3, 4
    if window != 'warm-up':
        method.selecting.fill_(1)
        method.aux_smoothing.zero_()
        method.copies.copy_(torch.tensor([10, 10, 10]) if window == 'first' else torch.tensor([1, 2, 5]))
        method.radius.copy_(torch.tensor([0.2, 0.3, 0.5]))
    if window == 'later':  # pool image 0 selected as class 2 with its histogram (3 of 4 as class 2)
        method.n_ls.copy_(torch.tensor([3., 2, 2]))
        method.targets[6] = torch.tensor([0.25, 0, 0.75])
        method.selection_prior.copy_(torch.log(torch.tensor([0.2, 0.3, 0.5])))
    method.max_copies = int(method.copies.max())
    y, x_index = torch.tensor([0, 2, 2]), torch.tensor([1, 5, 6 if window == 'later' else 5])
    features = torch.randn(2 * b + 2 * k, d)
    weight, bias = torch.randn(c, d), torch.randn(c)
    logits = features @ weight.t() + bias
    logits[2 * b:] *= 8  # (confident rows, some of which the weak and strong views agree on)
    balanced = torch.randn(2 * b + 2 * k, c)
    output = NetworkOutput(logits, balanced, features, classifier=weight)
    views = step_views(method, output, y, torch.tensor([0, 3, 1, 0]), x_index)
    torch.manual_seed(1)
    result = method.loss(views)
    torch.manual_seed(1)
    eps = torch.randn(b, method.max_copies, d).double().numpy() if method.max_copies else None
    sup, aux, mask, pseudo = official_step(method, logits.double().numpy(), balanced.double().numpy(),
                                           features.double().numpy(), weight.double().numpy(), bias.double().numpy(),
                                           y.numpy(), x_index.numpy(), eps)
    assert result.terms['loss_x'].item() == pytest.approx(sup, rel=1e-5)
    assert (result.terms['loss_aux_u'] + result.terms['loss_aux_x']).item() == pytest.approx(aux, rel=1e-5)
    assert result.loss.item() == pytest.approx(sup + aux, rel=1e-5)
    assert result.mask.tolist() == mask.tolist() and result.pseudo_label.tolist() == pseudo.tolist()
    assert (window == 'warm-up') == (not mask.any()) and mask.sum() < k  # (a test that can tell)
    remembered = torch.zeros(5, c, dtype=torch.int32)
    for index, label, kept in zip([0, 3, 1, 0], pseudo, mask):
        remembered[index, label] += int(kept)
    assert torch.equal(method.memory, remembered)


class FixedFeatures(torch.nn.Module):
    """A network whose features of a view are a table's row for the image it was made of."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, rows, with_features=False):
        return NetworkOutput(torch.zeros(len(rows), 3), features=self.table[rows.long()])


def test_a_window_closes_into_the_selected_set_and_the_radii_of_its_centres():
    """The second event: the memory becomes the selected set (pool order, majority labels, histogram
    targets), n_LS, the refined prior and the copies follow, the memory starts again; r is n_LS over
    the similarity sums to the class means, normalised (cpg.py:399-459)."""
    method = cpg(labeled=(3, 2, 1), pool=4, cpg_min_hits=2)
    table = torch.tensor([[1., 0], [1, 1], [2, 0], [0, 1], [1, 2], [3, -1], [0, 3], [1, 1], [-1, 2], [5, 5]])
    method.row_views = lambda rows, kind, generator, device: torch.as_tensor(rows)
    network = FixedFeatures(table)
    assert method.start_stage(None, method_data(method), torch.device('cpu'), network).startswith('CPG warm-up over')
    assert (int(method.selecting), float(method.aux_smoothing), method.copies.tolist()) == (1, 0.0, [10, 10, 10])
    method.memory.copy_(torch.tensor([[0, 0, 3], [0, 2, 0], [0, 5, 1], [0, 0, 0]], dtype=torch.int32))
    line = method.start_stage(None, method_data(method), torch.device('cpu'), network)
    assert 'window 1 closed: 2 pool images selected' in line
    assert method.pool_label.tolist() == [2, -1, 1, -1]  # (pool 1: 2 hits, not more than 2; pool 2: 5 > 0.8 * 6)
    assert torch.allclose(method.targets[6:8], torch.tensor([[0, 0, 1.], [0, 5 / 6, 1 / 6]]))
    assert torch.equal(method.targets[8:], torch.zeros(2, 3)) and torch.equal(method.memory, torch.zeros(4, 3).int())
    assert method.n_ls.tolist() == [3, 3, 2]
    assert method.copies.tolist() == [10, 10, 15]  # int(10 * 3 / n): 3 is n_LS's 2nd smallest (C // 3 = 1)
    training = method.training_data(method_data(method))
    assert training.labeled_idx.tolist() == [0, 1, 2, 3, 4, 5, 6, 8] and training.labeled_targets.tolist() == \
        [0, 0, 0, 1, 1, 2, 2, 1]
    # r by hand: the class means of the labeled set's features, then (cos + 1) / 2 summed as its code
    rows, labels = [0, 1, 2, 3, 4, 5, 6, 8], [0, 0, 0, 1, 1, 2, 2, 1]
    f = table[rows].double().numpy()
    centres = np.stack([f[[i for i, y in enumerate(labels) if y == k]].sum(0) / n for k, n in enumerate([3, 3, 2])])
    s = [(f[i] @ centres[y] / np.linalg.norm(f[i]) / np.linalg.norm(centres[y]) + 1) / 2 for i, y in enumerate(labels)]
    last = {y: s[i] for i, y in enumerate(labels)}  # one batch: the last row of each class
    inverse = np.array([3, 3, 2]) / np.array([last[0], last[1], last[2]])
    np.testing.assert_allclose(method.radius.numpy(), inverse / inverse.sum(), rtol=1e-6)
    assert method.max_copies == 15 and int(method.stage) == 2


@dataclasses.dataclass
class Split:
    labeled_idx: np.ndarray
    unlabeled_idx: np.ndarray
    labeled_targets: np.ndarray


def method_data(method):
    """The split of cpg()'s method: images 0-5 labeled (3, 2, 1 per class), 6-9 the pool."""
    labeled = method.original_labeled
    return Split(np.arange(labeled), np.arange(labeled, labeled + 4), np.repeat(np.arange(3), [3, 2, 1]))


def test_the_radii_are_measured_with_the_trained_network_in_training_mode(small_cifar10_root):
    """Its feature passes run `self.model` in train mode (batch statistics, BatchNorm's running
    statistics move); the network's mode is restored."""
    args = get_args_parser().parse_args([*map(str, own_flags([*BASE, '--version', 'CPG'])), '--data-dir',
                                         str(small_cifar10_root)])
    data = build_data(args)
    args.arch = 'wideresnet_usb'
    method, network = CPG(args, data), new_model(args, 10)
    network.eval()
    before = {k: v.clone() for k, v in network.state_dict().items() if 'running_mean' in k}
    method.start_stage(None, data, torch.device('cpu'), network)
    assert not network.training
    moved = [k for k, v in network.state_dict().items() if 'running_mean' in k and not torch.equal(v, before[k])]
    assert moved and torch.isclose(method.radius.sum(), torch.tensor(1.0)) and (method.radius > 0).all()


@pytest.mark.slow
def test_a_resumed_run_equals_an_uninterrupted_one_across_its_stages(small_cifar10_root, tmp_path, monkeypatch):
    """Stages at every epoch of 2 steps from step 0: the run is checkpointed at step 4, after the window
    of steps 2-3 made a selected set that its labeled batches (made again at the resume) hold."""
    extra = ['--version', 'CPG', '--cpg-warmup-epochs', 0, '--cpg-update-epochs', 1, '--cpg-min-hits', 0,
             '--total-steps', 8, '--cpg-exact-similarity']
    whole, _, split, _ = interrupted_equals_whole(small_cifar10_root, tmp_path, monkeypatch, extra, step=4)
    assert [r['step'] for r in split] == [2, 4, 6, 8]
    counts = [r['n_ls'] for r in whole]
    assert counts[0] == counts[1] != counts[2]  # the labeled set grew at step 4 (windows close at 2, 4, 6)
    log = (tmp_path / 'split' / 'log.txt').read_text()
    assert 'resuming at step 4' in log and log.count('step 4: CPG window 2 closed') == 1


@pytest.mark.slow
def test_two_processes_hold_the_same_cpg_state(small_cifar10_root, tmp_path):
    """Under torchrun (gloo) each process remembers every process's confident rows: every buffer is
    bit-identical on both after every step, and the memory and the selected set moved."""
    env = {**os.environ, 'PROBE_OUT': str(tmp_path), 'OMP_NUM_THREADS': '1'}
    args = own_flags([*BASE, '--data-dir', small_cifar10_root, '--out', tmp_path / 'ddp', '--version', 'CPG', *STAGES,
                      '--threshold', 0.1])
    result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                             '--master_port', str(random.randint(20000, 40000)), 'tests/ddp_probe.py',
                             *map(str, args)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=HANG_LIMIT)
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = [json.loads((tmp_path / f'method_rank{r}.json').read_text()) for r in (0, 1)]
    assert len(ranks[0]) == 6 and ranks[0] == ranks[1]
    for name in ('memory', 'pool_label', 'n_ls', 'radius', 'stage'):
        assert len({state[name] for state in ranks[0]}) > 1, name


@pytest.mark.parametrize('copies', [0, 7])
def test_cpg_device_steps_never_read_device_values_back(small_cifar10_root, monkeypatch, copies):
    """In the warm-up and after it (feature copies, the memory's scatter) the step stays on the device (meta
    here). The labeled set is read to the host once per stage, when the batches are made: the original one
    here (a meta tensor has nothing to read)."""
    monkeypatch.setattr(CPG, 'training_data', lambda self, data: data)
    run_, steps = test_speed.meta_training(small_cifar10_root, 'CPG')
    run_.method.max_copies = copies
    for step in range(1, 3):
        loss, _ = steps(step)
    assert loss.device == torch.device('meta')


CPG_ROWS = [(26 + i, gamma, mode) for i, (gamma, mode) in enumerate((g, m) for g in (50, 100, 150, 200)
                                                                     for m in (0, 1, 5))]  # (5: by the seed)
CPG_ROWS_OF = {'cifar10': CPG_ROWS,  # its CIFAR-100 rows: N1 50, M1 450, gamma 10, 15, 20
               'cifar100': [(14 + i, gamma, mode) for i, (gamma, mode) in enumerate((g, m) for g in (10, 15, 20)
                                                                                    for m in (0, 1, 5))]}
# its data code's per-class counts (semilearn/datasets/utils.py make_imbalance_data: int(N1 gamma^(-c/(C-1))))
CPG_COUNTS = {50: [400, 258, 167, 108, 70, 45, 29, 19, 12, 8], 100: [400, 239, 143, 86, 51, 30, 18, 11, 6, 4],
              150: [400, 229, 131, 75, 43, 24, 14, 8, 4, 2], 200: [400, 222, 123, 68, 37, 21, 11, 6, 3, 2]}
UNLABELED_100 = [4600, 2757, 1653, 991, 594, 356, 213, 127, 76, 46]
CIFAR100_SUMS = {14: (1911, 17614), 17: (1687, 15547), 20: (1545, 14315)}  # gamma 10, 15, 20 (its data code's)


@pytest.mark.parametrize('dataset', ['cifar10', 'cifar100', 'digits'])
def test_every_row_of_the_cpg_launcher(echo_python, dataset):
    rows = list(enumerate(ROWS[dataset]))
    if dataset in CPG_ROWS_OF:  # (and its own rows: N1 400, M1 4600 on CIFAR-10; 50, 450 on CIFAR-100)
        n1, m1 = {'cifar10': (400, 4600), 'cifar100': (50, 450)}[dataset]
        rows += [(index, (n1, m1, gamma, gamma, mode, None)) for index, gamma, mode in CPG_ROWS_OF[dataset]]
    for index, (n, m, gl, gu, mode, size) in rows:
        args = launched_args(echo_python, 'CPG.sh', dataset, index)
        assert_row(args, 'CPG.sh', dataset, n, m, gl, gu, mode, size)
        own = (args.threshold, args.label_smoothing, args.cpg_warmup_epochs, args.cpg_update_epochs,
               args.cpg_min_hits, args.cpg_agreement, args.cpg_copies, args.cpg_exact_similarity)
        assert own == ((0.95, 0.1, 4, 3, 1, 0.8, 10, False) if dataset == 'digits' else
                       (0.95, 0.1, 30, 5, 12, 0.8, 10, False)), (dataset, index)
        budget = (args.arch, args.randaugment, args.lr_schedule, args.lr, args.total_steps, args.eval_step,
                  args.batch_size, args.mu, args.wdecay, args.nesterov, args.ema_decay)
        assert budget == ((None, 'fixmatch', 'cosine', 0.1, 1200, 40, 8, 6, 5e-4, True, 0.99)
                          if dataset == 'digits' else
                          ('wideresnet_usb', 'usb', 'cosine', 0.03, 262144, 1024, 64, 7, 5e-4, True, 0.999)), index


@pytest.mark.parametrize('dataset', ['stl10', 'smallimagenet', 'smallimagenet_1k'])
def test_the_launcher_says_why_cpg_has_no_recipe_there(dataset):
    result = launch('CPG.sh', dataset, 0)
    assert (result.returncode, result.stdout) == (2, '')
    assert result.stderr.startswith(f"error: CPG's official code cannot train on {dataset} (")


@pytest.mark.slow
def test_every_launcher_dry_runs_cpgs_rows_with_its_counts(capsys, cifar10_launcher_root, echo_python):
    """CPG's own rows (cifar10 26-37) build their split under its launcher, and one of them under every other:
    N1 400, M1 4600, its per-class counts, in its long-tail, reverse-long-tail and random orders (random:
    shuffled by the run's seed as its code, here at seeds 0 and 2; seed 1 in test_splits)."""
    from methods import METHODS
    from test_dry_run import dry_run
    seed0 = [127, 76, 2757, 356, 991, 594, 1653, 4600, 46, 213]  # its random order at seed 0, gamma 100
    for method in METHODS:
        for index, gamma, mode in CPG_ROWS if method == 'CPG' else CPG_ROWS[5:6]:  # (its random order, gamma 100)
            argv = launch(f'{method}.sh', 'cifar10', index, python=echo_python).stdout.splitlines()[2:]
            code, summary, _, err = dry_run(capsys, *argv, '--data-dir', cifar10_launcher_root)
            assert code == 0, (method, index, err)
            assert summary['labeled_per_class'] == CPG_COUNTS[gamma], (method, index)
            if gamma == 100:
                assert summary['unlabeled_per_class'] == {0: UNLABELED_100, 1: UNLABELED_100[::-1], 5: seed0}[mode]
    argv = launch('CPG.sh', 'cifar10', 31, '--seed', 2, python=echo_python).stdout.splitlines()[2:]
    code, summary, _, err = dry_run(capsys, *argv, '--data-dir', cifar10_launcher_root)
    assert code == 0 and summary['unlabeled_per_class'] == [356, 46, 991, 594, 213, 127, 1653, 76, 2757, 4600]
    truth = report.true_unlabeled_prior(json.loads(json.dumps(vars(get_args_parser().parse_args(argv)))))
    assert truth.tolist() == pytest.approx(np.array(summary['unlabeled_per_class']) / 11413)  # (the report's, by seed)


@pytest.mark.slow
@pytest.mark.parametrize('aug', ['cpu', 'gpu'])
def test_the_middle_row_trains_through_its_stages_on_both_augmentation_paths(cifar10_launcher_root, tmp_path, aug):
    """`bash sh/CPG.sh cifar10 3` (the middle distribution, which its code cannot build) for 40 steps with a
    stage at every 10: the warm-up ends at step 10, windows close at 20 and 30 into selected sets."""
    out = tmp_path / 'run'
    result = launch('CPG.sh', 'cifar10', 3, '--data-dir', cifar10_launcher_root, '--total-steps', 40,
                    '--eval-step', 10, *SMALL_RUN, '--aug', aug, *STAGES, '--threshold', 0.2, '--out', out)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in records] == [10, 20, 30, 40] and all(r['evaluated'] == 200 for r in records)
    assert records[0]['mask_ratio'] == 0 and records[1]['mask_ratio'] > 0  # nothing remembered in the warm-up
    assert records[1]['n_ls'] == records[0]['n_ls'] != records[2]['n_ls']
    log = (out / 'log.txt').read_text()
    assert 'step 10: CPG warm-up over' in log and 'step 20: CPG window 1 closed' in log
    assert json.loads((out / 'args.json').read_text())['flag_reverse_LT'] == 3


@pytest.mark.slow
def test_every_row_of_the_cpg_launcher_dry_runs(capsys, cifar10_launcher_root, cifar100_root, echo_python):
    """Every row of sh/CPG.sh (CIFAR-10's 38, CIFAR-100's 23, the digits' 5) builds its split and its network
    (USB's WRN-28-2 with the auxiliary head; the digits' WRN-10-1) on data in the official formats."""
    from test_dry_run import dry_run
    roots = {'cifar10': cifar10_launcher_root, 'cifar100': cifar100_root, 'digits': None}
    for dataset, root in roots.items():
        index = 0
        while (result := launch('CPG.sh', dataset, index, python=echo_python)).returncode == 0:
            argv = result.stdout.splitlines()[2:] + (['--data-dir', str(root)] if root else [])
            code, summary, _, err = dry_run(capsys, *argv)
            assert code == 0, (dataset, index, err)
            if dataset == 'cifar100' and index in CIFAR100_SUMS:  # its CIFAR-100 rows' labeled and unlabeled sizes
                assert (sum(summary['labeled_per_class']), sum(summary['unlabeled_per_class'])) == \
                    CIFAR100_SUMS[index]
            assert summary['model'] == ('wideresnet' if dataset == 'digits' else 'wideresnet_usb'), (dataset, index)
            index += 1
        assert 'is not a row of' in result.stderr and index == {'cifar10': 38, 'cifar100': 23, 'digits': 5}[dataset]
