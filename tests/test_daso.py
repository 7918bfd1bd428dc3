"""DASO against values computed by hand from ytaek-oh/daso lib/algorithm/daso.py (C = 3, D = 2): the queue
and prototypes, the semantic pseudo label, the alignment loss, the blending, the mask from the
blended label, the pseudo-label window and the pretraining boundary. References are literal
numbers or sums written out here in float64, never the method's own helpers."""
import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import train
from dataset.data import build_data
from methods import DASO
from models import NetworkOutput
from test_resume import BASE
from conftest import step_views
from core.command_line import get_args_parser
from core.device import resolve_speed_options
from core.training import build_training
from dataset.batches import LoaderBatches

Q = [0.9529, 0.0471, 3.4e-8]  # softmax(cos([1, 1], P) / 0.05) with P of the queue test


def daso(pretrain_steps=0, dist_temp=1.5, period=100, queue_max_size=2, batch_size=1):
    args = SimpleNamespace(threshold=0.95, pretrain_steps=pretrain_steps, proto_temp=0.05, dist_temp=dist_temp,
                           pl_dist_update_period=period, psa_loss_weight=1.0, queue_max_size=queue_max_size,
                           batch_size=batch_size)
    return DASO(args, SimpleNamespace(name='cifar10', labeled_per_class=[6, 3, 1]), num_features=2)


def with_queue(**kwargs):
    m = daso(**kwargs)
    m.push_labeled(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([0, 1, 0]))
    m.push_labeled(torch.tensor([[3.0, 0.0]]), torch.tensor([0]))
    return m


def close(actual, expected, tol=1e-4):
    actual = actual.detach().double().numpy() if torch.is_tensor(actual) else actual
    expected = expected.detach().double().numpy() if torch.is_tensor(expected) else expected
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


def step(m, p_weak, f_weak, f_strong=(0.0, 1.0), y=0):
    """One loss call, B = Bu = 1: the weak logits are log(p_weak), so the linear softmax is p_weak."""
    logits = torch.tensor([[0.5, 0.0, -0.5], [math.log(v) for v in p_weak], [0.2, 0.1, 0.0]], requires_grad=True)
    features = torch.tensor([[5.0, 5.0], list(f_weak), list(f_strong)], requires_grad=True)
    output = NetworkOutput(logits, features=features)
    loss, terms, mask, label = m.loss(step_views(m, output, torch.tensor([y]), torch.tensor([0])))
    return loss, terms, mask, label, logits, features


def test_queue_keeps_the_newest_per_class_and_prototypes_are_their_means():
    m = with_queue()
    close(m.prototypes, [[2.0, 0.5], [0.0, 1.0], [0.0, 0.0]], 1e-7)  # class 2 never seen: a zero prototype
    assert m.pushed.tolist() == [3, 1, 0]
    m.push_labeled(torch.tensor([[0.0, 4.0], [2.0, 2.0], [6.0, 0.0]]), torch.tensor([0, 0, 0]))  # 3 > capacity 2
    close(m.prototypes[0], [4.0, 1.0], 1e-7)  # mean of the newest two: [2, 2] and [6, 0]


def test_semantic_pseudo_label_and_alignment_loss():
    """Weak feature [1, 1] -> cos = [0.8575, 0.7071, 0] -> q = [0.9529, 0.0471, 3.4e-8]; strong [0, 1]
    -> cos / T = [4.8507, 20, 0] -> L_align = 14.4361."""
    m = with_queue()
    cos = [2.5 / (math.sqrt(2) * math.sqrt(4.25)), 1 / math.sqrt(2), 0.0]
    close(cos, [0.8575, 0.7071, 0.0])
    close(torch.softmax(m.similarity(torch.tensor([[1.0, 1.0]])), -1)[0], Q, 1e-4)
    close(m.similarity(torch.tensor([[0.0, 1.0]]))[0], [4.8507, 20.0, 0.0])
    m.pl_dist.copy_(torch.tensor([60.0, 30.0, 10.0]))
    _, terms, _, _, _, features = step(m, [0.2, 0.7, 0.1], (1.0, 1.0))
    close(terms['loss_align'], 14.4361, 1e-4)
    terms['loss_align'].backward()
    assert torch.count_nonzero(features.grad[:2]) == 0 and torch.count_nonzero(features.grad[2]) > 0  # only F_us


def test_blending_flips_the_label_and_the_blended_confidence_masks():
    """p = [.2 .7 .1], window counts [60 30 10], T_dist 1.5: r = [1, .63, .3029], w = r[1] = .63,
    p^ = [.6743, .2887, .0370]: label 0 instead of 1, masked out at 0.95."""
    m = with_queue(dist_temp=1.5)
    m.pl_dist.copy_(torch.tensor([60.0, 30.0, 10.0]))
    loss, terms, mask, label, logits, _ = step(m, [0.2, 0.7, 0.1], (1.0, 1.0))
    assert label.tolist() == [0] and mask.tolist() == [False]
    w = (30 / 60) ** (1 / 1.5)
    close(w, 0.6300)
    close([(1 - w) * p + w * q for p, q in zip([0.2, 0.7, 0.1], Q)], [0.6743, 0.2887, 0.0370])
    close(terms['loss_u'], 0.0, 0)
    close(loss, terms['loss_x'] + terms['loss_align'], 1e-6)
    # a confident linear label (0.96) that the blend pulls below the threshold is masked out ...
    _, _, mask, label, _, _ = step(m, [0.02, 0.96, 0.02], (1.0, 1.0))
    assert label.tolist() == [0] and mask.tolist() == [False]  # p^ = [.6077, .3849, .0074]
    # ... and an unconfident class-0 row whose semantic label is confident (w = r[0] = 1) is kept
    _, terms, mask, label, _, _ = step(m, [0.5, 0.3, 0.2], (0.0, 1.0))
    assert label.tolist() == [1] and mask.tolist() == [True]
    close(terms['loss_u'], -math.log(math.exp(0.1) / (math.exp(0.2) + math.exp(0.1) + 1)), 1e-5)


def test_blending_weights_with_t_dist_0_3():
    m = with_queue(dist_temp=0.3)
    m.pl_dist.copy_(torch.tensor([60.0, 30.0, 10.0]))
    r = [1, 0.5 ** (1 / 0.3), (1 / 6) ** (1 / 0.3)]
    close(r, [1, 0.0992, 0.0025])
    _, _, mask, label, _, _ = step(m, [0.2, 0.7, 0.1], (1.0, 1.0))
    blended = [(1 - r[1]) * p + r[1] * q for p, q in zip([0.2, 0.7, 0.1], Q)]
    assert label.tolist() == [int(np.argmax(blended))] == [1] and mask.tolist() == [False]


def test_pretraining_is_plain_fixmatch_and_ends_after_its_last_step():
    m = with_queue(pretrain_steps=2)
    m.pl_dist.copy_(torch.tensor([60.0, 30.0, 10.0]))
    for _ in range(2):  # steps 1, 2: p^ = p, no alignment term
        loss, terms, mask, label, _, _ = step(m, [0.2, 0.7, 0.1], (1.0, 1.0))
        assert label.tolist() == [1] and float(terms['loss_align'].detach()) == 0
        close(loss, terms['loss_x'] + terms['loss_u'], 1e-7)
    _, terms, _, label, _, _ = step(m, [0.2, 0.7, 0.1], (1.0, 1.0))  # step 3: DASO
    assert label.tolist() == [0]
    close(terms['loss_align'], 14.4361, 1e-4)


def test_pseudo_label_window_replaces_the_counts_every_period():
    m = with_queue(pretrain_steps=100, period=2)
    close(m.pl_dist, [1, 1, 1], 0)
    step(m, [0.2, 0.7, 0.1], (1.0, 1.0))   # label 1 (masked out: counted all the same)
    close(m.pl_dist, [1, 1, 1], 0)
    step(m, [0.96, 0.02, 0.02], (1.0, 1.0))  # label 0; step 2 ends the window
    close(m.pl_dist, [1, 1, 0], 0)
    close(m.window, [0, 0, 0], 0)
    step(m, [0.1, 0.1, 0.8], (1.0, 1.0))
    close(m.pl_dist, [1, 1, 0], 0)
    step(m, [0.1, 0.1, 0.8], (1.0, 1.0))  # step 4: replaced by steps 3-4 only, not added, not averaged
    close(m.pl_dist, [0, 0, 2], 0)
    close(m.unlabeled_prior(), [0, 0, 1], 0)


def test_state_dict_round_trip():
    m = with_queue(pretrain_steps=1, period=2)
    step(m, [0.2, 0.7, 0.1], (1.0, 1.0))
    state = m.state_dict()
    assert {'queue', 'pushed', 'prototypes', 'window', 'pl_dist', 'step'} <= set(state)
    restored = daso(pretrain_steps=1, period=2)
    restored.load_state_dict(state)
    a, b = step(m, [0.2, 0.7, 0.1], (1.0, 1.0)), step(restored, [0.2, 0.7, 0.1], (1.0, 1.0))
    assert torch.equal(a[0], b[0]) and a[3].tolist() == b[3].tolist() == [0]  # step 2: DASO in both
    for name, value in m.state_dict().items():
        assert torch.equal(value, restored.state_dict()[name]), name


def test_a_queue_smaller_than_a_labeled_batch_is_refused(tmp_path, capsys):
    """DASO's check (DASO.check_arguments), before any data is read: --data-dir holds nothing."""
    from utils.errors import UserError
    with pytest.raises(UserError, match='--queue-max-size 2 is smaller than one labeled batch of 4'):
        DASO.check_arguments(SimpleNamespace(queue_max_size=2, batch_size=4))
    assert train.main(['--version', 'DASO', '--queue-max-size', '2', '--batch-size', '4', '--data-dir',
                       str(tmp_path)]) == 2
    assert capsys.readouterr().err == ('error: --queue-max-size 2 is smaller than one labeled batch of 4 (over all '
                                       'processes); raise it\n')


def test_the_loop_pushes_the_ema_networks_features_of_the_labeled_batch_before_the_step(small_cifar10_root):
    """train_step hands DASO the features of the labeled weak view from the EMA weights as they were
    before the step, with BatchNorm on the batch's statistics (train mode)."""
    args = get_args_parser().parse_args([*map(str, BASE), '--data-dir', str(small_cifar10_root),
                                               '--version', 'DASO', '--depth', '10', '--widen-factor', '1'])
    args.arch = 'wideresnet'
    data = build_data(args)
    device = torch.device('cpu')
    resolve_speed_options(args, device)
    run = build_training(args, data, device, train.learn)
    batches, _ = train.method_batches(args, data, run.method, 0, device)
    labeled, unlabeled = next(batches)
    ema = copy.deepcopy(run.ema.model).train()
    with torch.no_grad():
        expected = ema(labeled[0][0], with_features=True).features
    train.train_step(run, LoaderBatches([labeled], [unlabeled]), device, args)
    y = labeled[1]
    assert expected.shape == (4, 64)
    for c in y.unique().tolist():
        rows = (y == c).nonzero().squeeze(1)
        close(run.method.queue[c, :len(rows)], expected[rows], 1e-6)
        close(run.method.prototypes[c], expected[rows].mean(0), 1e-5)
    assert not run.ema.model.training  # the EMA network is back in eval mode


@pytest.mark.parametrize('flag,value,shown,allowed', [
    ('--dist-temp', '0.0', '0', 'a finite number > 0'), ('--proto-temp', '-1.0', '-1', 'a finite number > 0'),
    ('--pretrain-steps', '-1', '-1', 'an integer >= 0'), ('--pl-dist-update-period', '0', '0', 'an integer >= 1'),
    ('--psa-loss-weight', 'nan', 'nan', 'a finite number >= 0'), ('--queue-max-size', '0', '0', 'an integer >= 1')])
def test_a_baseline_flag_out_of_range_is_one_line(tmp_path, capsys, flag, value, shown, allowed):
    code = train.main(['--version', 'DASO', f'{flag}={value}', '--out', str(tmp_path / 'run')])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f'error: {flag} {shown} is not allowed; use {allowed}']
    assert not (tmp_path / 'run').exists()


def test_dasos_recipe_constant_lr_decay_on_all_parameters_and_ema_warmup(small_cifar10_root):
    """--lr-schedule constant --wdecay-all --ema-warmup: the lr never moves, biases and BatchNorm
    are decayed too, and the weight EMA after step t has decay min(1 - 1/t, 0.999) (step 1: the weights)."""
    args = get_args_parser().parse_args([*map(str, BASE), '--data-dir', str(small_cifar10_root), '--depth', '10',
                                               '--widen-factor', '1', '--lr-schedule', 'constant', '--wdecay-all',
                                               '--ema-warmup'])
    args.arch = 'wideresnet'
    data = build_data(args)
    device = torch.device('cpu')
    resolve_speed_options(args, device)
    run = build_training(args, data, device, train.learn)
    decayed = [p for group in run.optimizer.param_groups if group['weight_decay'] == 5e-4 for p in group['params']]
    assert len(decayed) == len(list(run.model.parameters()))
    batches, _ = train.method_batches(args, data, run.method, 0, device)
    train.train_step(run, batches, device, args)
    for ema, weight in zip(run.ema.model.parameters(), run.model.parameters()):
        assert torch.equal(ema, weight)
    before = [p.clone() for p in run.ema.model.parameters()]
    train.train_step(run, batches, device, args)
    for ema, old, weight in zip(run.ema.model.parameters(), before, run.model.parameters()):
        torch.testing.assert_close(ema, 0.5 * old + 0.5 * weight)
    assert run.scheduler.get_last_lr() == [0.1, 0.1]
    defaults = get_args_parser().parse_args([])
    assert (defaults.lr_schedule, defaults.wdecay_all, defaults.ema_warmup) == ('cosine', False, False)
