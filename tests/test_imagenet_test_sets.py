"""ImageNet-127's two test sets (Table 3): the balanced subset (<= 50 val images per class, gamma_t = 1,
the main 'test') and every val image ('imbalanced_test', gamma_t ~ 286), read from a fake val_data
with uneven class sizes through the users' loaders, evaluated in one pass and logged apart."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train
from core.evaluate import LAST_EVALUATIONS, OTHER_TEST_EVERY, due_test_sets, evaluate_sets
from dataset.data import IMAGENET_MEAN, IMAGENET_STD, IMBALANCED_TEST, MAIN_TEST, build_data
from tools.fake_data import write_small_imagenet
from core.command_line import get_args_parser
from methods import METHODS

VAL_PER_CLASS = np.array([120, 50, 7, 64] + [3 + c % 5 for c in range(4, 127)])  # class 0 has most, ...


@pytest.fixture(scope='module')
def imagenet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('imagenet127')
    write_small_imagenet(root, 127, 32, train_per_class=20, val_per_class=VAL_PER_CLASS)
    return root


def split(root, *extra):
    args = get_args_parser().parse_args(['--dataset', 'smallimagenet', '--data-dir', str(root), *extra])
    args.arch = 'wideresnet'
    return args, build_data(args)


class FirstPixel(torch.nn.Module):
    """A known prediction: the fake images carry their label in the first pixel; classes of even
    label are predicted right, the others as the next class."""

    def forward(self, x, with_features=False):
        label = ((x[:, 0, 0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255).round().long()
        return F.one_hot(torch.where(label % 2 == 0, label, (label + 1) % 127), 127).float()


def test_counts_per_class_of_each_test_set(imagenet_root):
    _, data = split(imagenet_root)
    assert data.test_per_class(IMBALANCED_TEST) == VAL_PER_CLASS.tolist()  # (equal train counts: no re-indexing)
    assert data.test_per_class(MAIN_TEST) == np.minimum(VAL_PER_CLASS, 50).tolist()
    assert len(data.test_images) == VAL_PER_CLASS.sum()
    summary = data.summary('SimPro')
    assert summary['num_test'] == np.minimum(VAL_PER_CLASS, 50).sum()
    assert summary['imbalanced_test_per_class'] == VAL_PER_CLASS.tolist()


@pytest.mark.parametrize('aug', ['cpu', 'gpu'])
def test_top1_of_each_set_from_a_known_prediction(imagenet_root, aug):
    args, data = split(imagenet_root, '--aug', aug, '--num-workers', '0')
    method = METHODS['FixMatch'](args, data)
    _, test_batches = train.method_batches(args, data, method, 0, torch.device('cpu'))
    even = np.arange(127) % 2 == 0
    for due in ([MAIN_TEST], [MAIN_TEST, IMBALANCED_TEST]):
        tested = evaluate_sets(FirstPixel(), test_batches, data.test_sets, due, lambda o: o, 127, torch.device('cpu'))
        assert list(tested) == due
        for name, counts in ((MAIN_TEST, np.minimum(VAL_PER_CLASS, 50)), (IMBALANCED_TEST, VAL_PER_CLASS)):
            if name in due:
                assert tested[name]['top1'] == pytest.approx(100 * counts[even].sum() / counts.sum())
                assert tested[name]['per_class_acc'] == (100.0 * even).tolist()
                assert tested[name]['evaluated'] == counts.sum()


def test_the_other_set_every_10_epochs_and_in_each_of_the_last_20():
    sets = {MAIN_TEST: None, IMBALANCED_TEST: None}
    both = [e for e in range(1, 101) if IMBALANCED_TEST in due_test_sets(sets, e, 100)]
    assert both == [10, 20, 30, 40, 50, 60, 70, 80] + list(range(81, 101))
    assert (OTHER_TEST_EVERY, LAST_EVALUATIONS) == (10, 20)
    assert all(due_test_sets({MAIN_TEST: None}, e, 100) == [MAIN_TEST] for e in range(1, 101))


def test_a_run_logs_both_sets(imagenet_root, tmp_path):
    out = tmp_path / 'run'
    code = train.main(['--version', 'FixMatch', '--dataset', 'smallimagenet', '--data-dir', str(imagenet_root),
                       '--arch', 'wideresnet', '--depth', '10', '--widen-factor', '1', '--batch-size', '4',
                       '--total-steps', '2', '--eval-step', '1', '--num-workers', '0', '--out', str(out),
                       '--no-progress', '--device', 'cpu'])
    assert code == 0
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    for record in records:
        other = record[IMBALANCED_TEST]
        assert record['evaluated'] == np.minimum(VAL_PER_CLASS, 50).sum()
        assert other['evaluated'] == VAL_PER_CLASS.sum() and len(other['per_class_acc']) == 127
        assert set(other) == {'top1', 'top5', 'best_top1', 'mean20_top1', 'per_class_acc', 'group_acc', 'evaluated'}
    assert records[1][IMBALANCED_TEST]['mean20_top1'] == pytest.approx(
        (records[0][IMBALANCED_TEST]['top1'] + records[1][IMBALANCED_TEST]['top1']) / 2)
    assert 'imbalanced test top1' in (out / 'log.txt').read_text()
