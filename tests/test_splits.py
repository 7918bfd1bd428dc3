"""Long-tail counts, unlabeled orderings and the per-class split, against hand-written values."""
import random

import numpy as np
import pytest

from dataset.splits import (SHUFFLE_SEED, balanced_subset, first_per_class, long_tail_counts,
                            order_unlabeled, split_per_class)
from utils.errors import UserError


def reference_counts(n1, num_classes, gamma):
    """The split of LeapLabTHU/SimPro SimPro/dataset/cifar.py, written independently: N1 * mu**i
    truncated, last class int(N1/gamma)."""
    mu = (1 / gamma) ** (1 / (num_classes - 1))
    return [int(n1 * mu ** i) for i in range(num_classes - 1)] + [int(n1 / gamma)]


def test_known_cifar10_counts():
    # the labeled counts every CIFAR-10-LT paper lists for N1=500
    assert long_tail_counts(500, 10, 100) == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
    assert long_tail_counts(500, 10, 150) == [500, 286, 164, 94, 53, 30, 17, 10, 5, 3]
    assert long_tail_counts(4000, 10, 1) == [4000] * 10


@pytest.mark.parametrize('n1,classes,gamma', [(500, 10, 150), (4000, 10, 100), (50, 100, 20),
                                              (400, 100, 10), (1280, 1000, 256), (7, 3, 2.5)])
def test_counts_match_formula(n1, classes, gamma):
    counts = long_tail_counts(n1, classes, gamma)
    assert counts == reference_counts(n1, classes, gamma)
    assert counts[0] == n1 and counts[-1] == int(n1 / gamma)


def test_counts_reject_bad_ratio_and_empty_class():
    with pytest.raises(UserError, match='must be >= 1'):
        long_tail_counts(500, 10, 0.5)
    with pytest.raises(UserError, match=r'int\(10/20\) = 0'):
        long_tail_counts(10, 10, 20, ('--num-max', '--imb-ratio-label'))
    with pytest.raises(UserError, match='at least 2 classes'):
        long_tail_counts(10, 1, 2)


def test_orderings():
    counts = [100, 90, 80, 70, 60, 50, 40, 30, 20, 10]
    assert order_unlabeled(counts, 0) == counts
    assert order_unlabeled(counts, 1) == counts[::-1]
    # the original: middle uses indices 8 6 4 2 0 1 3 5 7 9, head-tail 1 3 5 7 9 8 6 4 2 0
    assert order_unlabeled(counts, 3) == [20, 40, 60, 80, 100, 90, 70, 50, 30, 10]
    assert order_unlabeled(counts, 4) == [90, 70, 50, 30, 10, 20, 40, 60, 80, 100]
    shuffled = order_unlabeled(counts, 2)
    expected = list(counts)
    random.seed(SHUFFLE_SEED)
    random.shuffle(expected)
    assert shuffled == expected and sorted(shuffled) == sorted(counts) and shuffled != counts
    assert order_unlabeled(counts, 2) == shuffled == order_unlabeled(counts, 2, seed=7)  # independent of --seed
    with pytest.raises(UserError, match='--flag-reverse-LT'):
        order_unlabeled(counts, 6)


def test_the_seed_shuffled_order_is_cpgs_random_order():
    """Mode 5 shuffles the long tail by the run's seed, as YaxinHou/CPG's 'exp_random' (random.Random(seed)):
    its orders of CIFAR-10's M1 4600, gamma 100 at seeds 0, 1 and 2 (its configs' seeds), seed 0's being mode 2's."""
    tail = long_tail_counts(4600, 10, 100)
    assert tail == [4600, 2757, 1653, 991, 594, 356, 213, 127, 76, 46]
    assert order_unlabeled(tail, 5, seed=0) == [127, 76, 2757, 356, 991, 594, 1653, 4600, 46, 213] == \
        order_unlabeled(tail, 2)
    assert order_unlabeled(tail, 5, seed=1) == [213, 76, 46, 127, 356, 991, 4600, 594, 2757, 1653]
    assert order_unlabeled(tail, 5, seed=2) == [356, 46, 991, 594, 213, 127, 1653, 76, 2757, 4600]


def test_orderings_odd_class_count():
    counts = [5, 4, 3, 2, 1]
    assert order_unlabeled(counts, 3) == [1, 3, 5, 4, 2]   # indices 4 2 0 1 3
    assert order_unlabeled(counts, 4) == [4, 2, 1, 3, 5]   # indices 1 3 4 2 0


LABELS = np.array([1, 0, 0, 2, 1, 0, 2, 2, 0, 1, 0, 2])  # rows of class 0: 1 2 5 8 10


def test_simpro_split_takes_file_order():
    split = split_per_class(LABELS, [2, 1, 1], [2, 1, 2])
    assert split.labeled_idx.tolist() == [1, 2, 0, 3]
    assert split.unlabeled_idx.tolist() == [5, 8, 4, 6, 7]
    assert not split.unlabeled_is_labeled.any()
    assert split.labeled_per_class == [2, 1, 1] and split.unlabeled_per_class == [2, 1, 2]


def test_acr_split_pool_holds_labeled_rows_marked():
    split = split_per_class(LABELS, [2, 1, 1], [2, 1, 2], labeled_in_unlabeled=True)
    assert split.labeled_idx.tolist() == [1, 2, 0, 3]
    assert split.unlabeled_idx.tolist() == [1, 2, 5, 8, 0, 4, 3, 6, 7]
    assert split.unlabeled_is_labeled.tolist() == [1, 1, 0, 0, 1, 0, 1, 0, 0]
    assert split.unlabeled_per_class == [2, 1, 2]


def test_short_class_is_an_error_unless_allowed(capsys):
    with pytest.raises(UserError, match=r'class 1 has 3 images but the split asks for 5 \(2 labeled \+ 3'):
        split_per_class(LABELS, [2, 2, 1], [2, 3, 1])
    split = split_per_class(LABELS, [2, 2, 1], [2, 3, 1], allow_short=True)
    assert split.labeled_per_class == [2, 2, 1] and split.unlabeled_per_class == [2, 1, 1]
    assert 'class 1 has 3 images' in capsys.readouterr().err


def test_first_per_class_streams_across_chunks():
    labels = np.array([0, 1, 0, 0, 1, 2, 0, 1, 1, 0])
    quota = np.array([3, 2, 0])
    seen = np.zeros(3, np.int64)
    kept = np.concatenate([first_per_class(labels[:4], quota, seen), first_per_class(labels[4:], quota, seen)])
    assert kept.tolist() == [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert seen.tolist() == [5, 4, 1]


def test_balanced_subset_is_fixed_and_capped():
    labels = np.array([0] * 8 + [1] * 3)
    rows = balanced_subset(labels, 5, 2, seed=0)
    assert (np.bincount(labels[rows]) == [5, 3]).all()
    assert rows.tolist() == balanced_subset(labels, 5, 2, seed=0).tolist()
