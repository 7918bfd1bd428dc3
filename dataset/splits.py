"""Long-tailed class counts, unlabeled orderings and the labeled/unlabeled split.

Everything here is a pure function of its arguments (README, "The split"), so the split
of a setting is the same for every run and every `--seed`, but for the unlabeled order of
`--flag-reverse-LT 5` (CPG's `random`), which is shuffled by the run's seed.
"""
import random
import sys
from typing import NamedTuple, Sequence

import numpy as np

from utils.errors import UserError

# --flag-reverse-LT: how the unlabeled counts are ordered over the classes.
UNLABELED_MODES = {0: 'consistent', 1: 'reversed', 2: 'shuffled', 3: 'middle', 4: 'head-tail', 5: 'seed-shuffled'}



def setting_name(gamma_u: float, mode: int) -> str:
    """The paper's name of an unlabeled distribution: 'uniform' when gamma_u is 1 (equal counts in
    any order), else the mode's: consistent, reversed, shuffled, middle, head-tail or seed-shuffled."""
    return 'uniform' if gamma_u == 1 else UNLABELED_MODES[mode]


# Mode 2 shuffles with a fixed seed so the split does not depend on --seed
# (the original shuffled with Python's global `random`, seeded with the run seed); mode 5 shuffles
# with the run's seed, as CPG's `random` order (YaxinHou/CPG semilearn/datasets/utils.py, 'exp_random':
# random.Random(seed).shuffle of the long tail), whose permutation at seed 0 is mode 2's.
SHUFFLE_SEED = 0


def long_tail_counts(max_count: int, num_classes: int, ratio: float,
                     flags: Sequence[str] = ('N1', 'gamma')) -> list:
    """Per-class counts from head to tail: n_i = int(N1 * mu**i), mu = (1/gamma)**(1/(C-1)).

    The last class gets int(N1 / gamma), exactly as the original `make_imb_data`.
    `flags` name the two arguments in error messages.
    """
    if num_classes < 2:
        raise UserError(f'a long-tailed split needs at least 2 classes, got {num_classes}')
    if ratio < 1:
        raise UserError(f'{flags[1]} must be >= 1 (1 means balanced), got {ratio:g}')
    mu = np.power(1 / ratio, 1 / (num_classes - 1))
    counts = [int(max_count * np.power(mu, i)) for i in range(num_classes - 1)]
    counts.append(int(max_count / ratio))
    if min(counts) < 1:
        need = int(np.ceil(ratio))
        raise UserError(f'{flags[0]} {max_count} with {flags[1]} {ratio:g} leaves the last class '
                        f'int({max_count}/{ratio:g}) = {min(counts)} images; use {flags[0]} >= {need} '
                        f'or a smaller {flags[1]}')
    return counts


def order_unlabeled(counts: Sequence[int], mode: int, seed: int = SHUFFLE_SEED) -> list:
    """Re-order head-to-tail counts over the classes by `--flag-reverse-LT` mode (`seed`: the run's,
    read by mode 5 only)."""
    C = len(counts)
    if mode == 0:
        return list(counts)
    if mode == 1:
        return list(counts)[::-1]
    if mode in (2, 5):
        shuffled = list(counts)
        random.Random(SHUFFLE_SEED if mode == 2 else seed).shuffle(shuffled)
        return shuffled
    if mode == 3:    # largest counts in the middle (C=10: 8 6 4 2 0 1 3 5 7 9)
        order = list(range(0, C, 2))[::-1] + list(range(1, C, 2))
    elif mode == 4:  # largest counts at both ends (C=10: 1 3 5 7 9 8 6 4 2 0)
        order = list(range(1, C, 2)) + list(range(0, C, 2))[::-1]
    else:
        modes = ', '.join(f'{k} {v}' for k, v in UNLABELED_MODES.items())
        raise UserError(f'--flag-reverse-LT must be one of {modes}; got {mode}')
    return [counts[j] for j in order]


class Split(NamedTuple):
    """Row indices into one training array, class by class, in file order."""
    labeled_idx: np.ndarray
    unlabeled_idx: np.ndarray
    unlabeled_is_labeled: np.ndarray  # per unlabeled row: it is also a labeled image (ACR_d's pool)
    labeled_per_class: list
    unlabeled_per_class: list         # the unlabeled images proper (not counting labeled ones in the pool)


def split_per_class(labels: np.ndarray, labeled_counts: Sequence[int], unlabeled_counts: Sequence[int],
                    labeled_in_unlabeled: bool = False, allow_short: bool = False) -> Split:
    """For each class take its rows in file order: the first n_i are labeled, the next m_i unlabeled.

    With `labeled_in_unlabeled` (ACR_d) the unlabeled pool is the first n_i + m_i rows, the
    labeled ones marked in `unlabeled_is_labeled`. A class with fewer rows than n_i + m_i is an
    error unless `allow_short`, which takes what exists (labeled first) and warns.
    """
    labels = np.asarray(labels)
    short = []
    labeled, unlabeled, is_labeled, unlabeled_per_class = [], [], [], []
    for c, (n, m) in enumerate(zip(labeled_counts, unlabeled_counts)):
        rows = np.flatnonzero(labels == c)
        if len(rows) < n + m:
            short.append(f'class {c} has {len(rows)} images but the split asks for {n + m} '
                         f'({n} labeled + {m} unlabeled)')
        lab, unl = rows[:n], rows[n:n + m]
        labeled.append(lab)
        unlabeled_per_class.append(len(unl))
        if labeled_in_unlabeled:
            unlabeled += [lab, unl]
            is_labeled += [np.ones(len(lab), bool), np.zeros(len(unl), bool)]
        else:
            unlabeled.append(unl)
            is_labeled.append(np.zeros(len(unl), bool))
    if short and not allow_short:
        more = f' (and {len(short) - 1} more classes)' if len(short) > 1 else ''
        raise UserError(f'{short[0]}{more}; lower --num-max/--num-max-u, or pass '
                        f'--allow-short-classes to take fewer images')
    if short:
        print(f'warning: taking fewer images than asked: {"; ".join(short)}', file=sys.stderr)
    return Split(np.concatenate(labeled).astype(np.int64), np.concatenate(unlabeled).astype(np.int64),
                 np.concatenate(is_labeled), [len(x) for x in labeled], unlabeled_per_class)


def first_per_class(labels: np.ndarray, quota: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Mask of the rows of one chunk that are among the first `quota[c]` rows of their class c.

    `seen[c]` counts the rows of class c in earlier chunks and is updated in place, so a
    file can be streamed chunk by chunk and only the selected rows kept.
    """
    labels = np.asarray(labels, dtype=np.int64)
    order = np.argsort(labels, kind='stable')
    sorted_labels = labels[order]
    rank = np.empty(len(labels), np.int64)
    rank[order] = np.arange(len(labels)) - np.searchsorted(sorted_labels, sorted_labels, side='left')
    position = seen[labels] + rank
    seen += np.bincount(labels, minlength=len(seen))
    return position < quota[labels]


def balanced_subset(labels: np.ndarray, per_class: int, num_classes: int, seed: int = 0) -> np.ndarray:
    """Up to `per_class` rows of each class drawn with a fixed seed (class by class, sorted)."""
    rng = np.random.RandomState(seed)
    picks = []
    for c in range(num_classes):
        rows = np.flatnonzero(labels == c)
        picks.append(np.sort(rng.permutation(rows)[:per_class]))
    return np.concatenate(picks).astype(np.int64)
