"""The dataset catalog (DATASETS, at the end: what the rest of the code knows of each dataset) and
the builders: from command-line settings to one labeled/unlabeled/test split.

`build_data(args)` returns a `SemiSupervisedData`: one uint8 array of the training images the
split uses, index arrays for the labeled set and the unlabeled pool, and the test set.
Which rows are labeled is a pure function of (dataset, N1, M1, gamma_l, gamma_u, mode, method)
and the files, never of `--seed` (README, "The split"; FIDELITY.md, "Data and splits").
"""
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from dataset import readers
from dataset.augment import CUTOUT, test_transform, views
from dataset.splits import (UNLABELED_MODES, Split, balanced_subset, long_tail_counts, order_unlabeled,
                            setting_name, split_per_class)
from utils.errors import UserError

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN, IMAGENET_STD = (0.48109809, 0.45747185, 0.40785507), (0.26040889, 0.2532126, 0.26820634)

DIGITS_MEAN, DIGITS_STD = (0.3053,) * 3, (0.3187,) * 3  # of the 16x16 images, every channel alike
DIGITS_TEST_PER_CLASS = 30

IMAGENET127_LABELED_FRACTION = 0.1
IMAGENET127_TEST_PER_CLASS = 50
TEST_SUBSET_SEED = 0  # the balanced ImageNet-127 test subset is the same for every run
MAIN_TEST = 'test'    # the name of a split's main test set (SemiSupervisedData.test_sets)
IMBALANCED_TEST = 'imbalanced_test'  # ImageNet-127's every val image

@dataclass
class SemiSupervisedData:
    name: str
    num_classes: int
    image_size: int
    mean: tuple
    std: tuple
    images: np.ndarray               # (N, S, S, 3) uint8: every training image the split uses
    labels: np.ndarray               # (N,) int64; -1 where the label is unknown (STL-10 unlabeled)
    labeled_idx: np.ndarray          # rows of the labeled set
    unlabeled_idx: np.ndarray        # rows of the unlabeled pool
    unlabeled_is_labeled: np.ndarray  # per pool row: also a labeled image (ACR_d), excluded from estimates
    test_images: np.ndarray          # every image a run evaluates
    test_labels: np.ndarray
    labeled_per_class: list
    unlabeled_per_class: Optional[list]  # true counts of the unlabeled images proper; None if unknown
    unlabeled_mode: Optional[str] = None
    notes: tuple = ()                # lines for the human summary (e.g. flags a dataset does not use)
    flip: bool = True                # horizontal flips in the weak/strong views
    cutout: int = CUTOUT             # side of RandAugmentMC's gray square
    labeled_targets: Optional[np.ndarray] = None  # per labeled_idx entry, the label trained on (default: its
    # true label; CReST+ adds pool rows with pseudo labels, and their true labels are never read)
    test_sets: Optional[dict] = None  # name -> rows of test_images: the test sets evaluated. The first,
    # 'test', is the one of top1, best_top1, ... (default: every row); each other is logged under its name
    # (ImageNet-127: 'test' the balanced subset, 'imbalanced_test' every val image)

    def __post_init__(self):
        if self.labeled_targets is None:
            self.labeled_targets = self.labels[self.labeled_idx]
        if self.test_sets is None:
            self.test_sets = {MAIN_TEST: np.arange(len(self.test_labels))}

    def test_per_class(self, name: str = MAIN_TEST) -> list:
        return np.bincount(self.test_labels[self.test_sets[name]], minlength=self.num_classes).tolist()

    @property
    def unlabeled_prior(self) -> Optional[np.ndarray]:
        """The true class distribution of the unlabeled images, for logging only."""
        if self.unlabeled_per_class is None:
            return None
        counts = np.asarray(self.unlabeled_per_class, dtype=np.float64)
        return counts / counts.sum()

    def pool_per_class(self) -> Optional[list]:
        labels = self.labels[self.unlabeled_idx]
        if (labels < 0).any():
            return None
        return np.bincount(labels, minlength=self.num_classes).tolist()

    def summary(self, method: str) -> dict:
        return {
            'dataset': self.name, 'method': method, 'num_classes': self.num_classes,
            'image_size': self.image_size, 'unlabeled_mode': self.unlabeled_mode,
            'num_labeled': len(self.labeled_idx), 'num_unlabeled': len(self.unlabeled_idx),
            'num_test': len(self.test_sets[MAIN_TEST]),
            'labeled_per_class': self.labeled_per_class,
            'unlabeled_per_class': self.unlabeled_per_class,
            'unlabeled_pool_per_class': self.pool_per_class(),
            'test_per_class': self.test_per_class(),
            **{f'{name}_per_class': self.test_per_class(name) for name in list(self.test_sets)[1:]},
        }

    def datasets(self, labeled_views, unlabeled_views):
        """(labeled, unlabeled, test) torch datasets drawing the given views per image (e.g. a
        method's `labeled_views` = ('weak', 'strong')) with the per-sample PIL augmentation."""
        make = lambda kinds: views(kinds, self.image_size, self.mean, self.std, self.flip, self.cutout)  # noqa: E731
        return (ViewDataset(self.images, self.labels, self.labeled_idx, make(labeled_views),
                            targets=self.labeled_targets),
                ViewDataset(self.images, self.labels, self.unlabeled_idx, make(unlabeled_views)),
                ViewDataset(self.test_images, self.test_labels, np.arange(len(self.test_labels)),
                            test_transform(self.mean, self.std)))


class ViewDataset(torch.utils.data.Dataset):
    """Rows `indices` of a uint8 image array; item i is (transform(image), label, i), the label
    `labels[row]` or, when given, `targets[i]`.

    A key may also be (i, seed): the augmentation's random generators (Python's `random`,
    NumPy's and torch's, which the FixMatch transforms draw from) are seeded with it first,
    so a sample's views depend only on its key, not on the worker that makes them.
    """

    def __init__(self, images, labels, indices, transform, targets=None):
        self.images, self.indices, self.transform = images, indices, transform
        self.targets = labels[indices] if targets is None else targets

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, key):
        i, seed = key if isinstance(key, tuple) else (key, None)
        if seed is not None:
            random.seed(seed)
            np.random.seed(seed)
            torch.default_generator.manual_seed(seed)  # the CPU generator only (torch.manual_seed also
            # queues a seed for every CUDA device, which costs far more than drawing the views)
        row = self.indices[i]
        return self.transform(Image.fromarray(self.images[row])), int(self.targets[i]), i


# ---------------------------------------------------------------- builders

def build_data(args, labeled_in_pool: bool = False) -> SemiSupervisedData:
    """The split for `args.dataset` with the settings of `args` (see core/command_line.py);
    `labeled_in_pool`: the method's unlabeled pool also holds the labeled images (ACR_d's,
    marked), where the dataset's original code did so (CIFAR, ImageNet-1k, digits)."""
    if args.dataset not in DATASETS:
        raise UserError(f'unknown dataset {args.dataset!r}; choose one of {", ".join(DATASETS)}')
    sizes = DATASETS[args.dataset].image_sizes
    if args.img_size is None:
        args.img_size = sizes[0]
    if args.img_size not in sizes:
        raise UserError(f'--img-size {args.img_size} is not available for {args.dataset}; '
                        f'use {" or ".join(map(str, sizes))}')
    return DATASETS[args.dataset].build(args, labeled_in_pool)


def _labeled_counts(args, num_classes):
    return long_tail_counts(args.num_max, num_classes, args.imb_ratio_label, ('--num-max', '--imb-ratio-label'))


def _unlabeled_counts(args, num_classes):
    counts = long_tail_counts(args.num_max_u, num_classes, args.imb_ratio_unlabel,
                              ('--num-max-u', '--imb-ratio-unlabel'))
    return order_unlabeled(counts, args.flag_reverse_LT, args.seed)


def _keep_only_split_rows(images, labels, split: Split):
    """Drop the training rows the split does not use, re-pointing its indices."""
    keep = np.union1d(split.labeled_idx, split.unlabeled_idx)
    if len(keep) == len(images):
        return images, labels, split
    new_row = np.full(len(images), -1, np.int64)
    new_row[keep] = np.arange(len(keep))
    return images[keep], labels[keep], split._replace(labeled_idx=new_row[split.labeled_idx],
                                                      unlabeled_idx=new_row[split.unlabeled_idx])


def _from_split(name, num_classes, args, images, labels, split, test_images, test_labels, mean, std,
                mode=None, notes=(), **options):
    images, labels, split = _keep_only_split_rows(images, labels, split)
    return SemiSupervisedData(name, num_classes, args.img_size, mean, std, images, labels,
                              split.labeled_idx, split.unlabeled_idx, split.unlabeled_is_labeled,
                              test_images, test_labels, split.labeled_per_class, split.unlabeled_per_class,
                              mode, tuple(notes), **options)


def _cifar(args, labeled_in_pool, num_classes):
    mean, std = DATASETS[args.dataset].mean, DATASETS[args.dataset].std
    root = Path(args.data_dir)
    labeled, unlabeled = _labeled_counts(args, num_classes), _unlabeled_counts(args, num_classes)
    if args.download:
        readers.download_cifar(root, num_classes)
    train_x, train_y, test_x, test_y = readers.read_cifar(root, num_classes)
    split = split_per_class(train_y, labeled, unlabeled, labeled_in_unlabeled=labeled_in_pool,
                            allow_short=args.allow_short_classes)
    return _from_split(args.dataset, num_classes, args, train_x, train_y, split, test_x, test_y, mean, std,
                       setting_name(args.imb_ratio_unlabel, args.flag_reverse_LT))


def build_cifar10(args, labeled_in_pool=False):
    return _cifar(args, labeled_in_pool, 10)


def build_cifar100(args, labeled_in_pool=False):
    return _cifar(args, labeled_in_pool, 100)


def build_stl10(args, labeled_in_pool=False):
    """Labeled: long-tailed from the 5,000 train images. Unlabeled: all of unlabeled_X.bin
    (true labels unknown; ACR_d's pool is the same, the labeled images are not added)."""
    root = Path(args.data_dir)
    labeled = _labeled_counts(args, 10)
    if args.download:
        readers.download_stl10(root)
    train_x, train_y, test_x, test_y, unlabeled_x = readers.read_stl10(root, args.img_size)
    split = split_per_class(train_y, labeled, [0] * 10, allow_short=args.allow_short_classes)
    n = len(split.labeled_idx)
    images = np.concatenate([train_x[split.labeled_idx], unlabeled_x])
    labels = np.concatenate([train_y[split.labeled_idx], np.full(len(unlabeled_x), -1, np.int64)])
    return SemiSupervisedData('stl10', 10, args.img_size, CIFAR10_MEAN, CIFAR10_STD, images, labels,
                              np.arange(n), np.arange(n, len(images)), np.zeros(len(unlabeled_x), bool),
                              test_x, test_y, split.labeled_per_class, None,
                              notes=('unlabeled: all of unlabeled_X.bin; --num-max-u, --imb-ratio-unlabel '
                                     'and --flag-reverse-LT are not used',))


def build_imagenet127(args, labeled_in_pool=False):
    """10% of each class labeled (rounded half to even, as NumPy), the rest unlabeled; classes re-indexed so
    class 0 has the most training images. Two test sets (Table 3): a fixed balanced subset of <= 50 val
    images per class (gamma_t = 1, the original's), and every val image (gamma_t ~ 286: 50 per ImageNet-1k
    class merged into each class; the test set of CoSSL and ACR)."""
    root = Path(args.data_dir)
    images, labels = readers.read_imagenet_train(root, 127, args.img_size)
    counts = np.bincount(labels, minlength=127)
    by_count = np.argsort(-counts, kind='stable')       # old class ids, most images first
    new_class = np.empty(127, np.int64)
    new_class[by_count] = np.arange(127)
    labels, counts = new_class[labels], counts[by_count]
    # NumPy's rounding, half to even, as the original: 0.1 * 25 = 2.5 -> 2, 0.1 * 35 = 3.5 -> 4
    labeled = [int(np.around(IMAGENET127_LABELED_FRACTION * c)) for c in counts]
    unlabeled = [int(c) - n for c, n in zip(counts, labeled)]
    # every method's pool is the images that are not labeled: the original adds the labeled images
    # to ACR_d's pool for CIFAR and ImageNet-1k, not for ImageNet-127
    split = split_per_class(labels, labeled, unlabeled)
    test_x, test_y = readers.read_imagenet_val(root, 127, args.img_size)
    test_y = new_class[test_y]
    balanced = balanced_subset(test_y, IMAGENET127_TEST_PER_CLASS, 127, seed=TEST_SUBSET_SEED)
    return _from_split('smallimagenet', 127, args, images, labels, split, test_x, test_y,
                       IMAGENET_MEAN, IMAGENET_STD,
                       test_sets={MAIN_TEST: balanced, IMBALANCED_TEST: np.arange(len(test_y))},
                       notes=('labeled: 10% of each class; --num-max, --num-max-u, --imb-ratio-* and '
                              '--flag-reverse-LT are not used',))


def build_imagenet1k(args, labeled_in_pool=False):
    """s_i = long-tail counts with N1 = num_max + num_max_u (1280 in the paper) and gamma_l;
    labeled int(num_max / N1 * s_i) (20%), unlabeled the rest, both from the first s_i per class."""
    root = Path(args.data_dir)
    total = long_tail_counts(args.num_max + args.num_max_u, 1000, args.imb_ratio_label,
                             ('--num-max + --num-max-u', '--imb-ratio-label'))
    fraction = args.num_max / (args.num_max + args.num_max_u)
    labeled = [int(fraction * s) for s in total]
    unlabeled = [s - n for s, n in zip(total, labeled)]
    images, labels = readers.read_imagenet_train(root, 1000, args.img_size, quota=total)
    split = split_per_class(labels, labeled, unlabeled, labeled_in_unlabeled=labeled_in_pool,
                            allow_short=args.allow_short_classes)
    test_x, test_y = readers.read_imagenet_val(root, 1000, args.img_size)
    return _from_split('smallimagenet_1k', 1000, args, images, labels, split, test_x, test_y,
                       IMAGENET_MEAN, IMAGENET_STD, UNLABELED_MODES[0],
                       notes=('--imb-ratio-unlabel and --flag-reverse-LT are not used',))


def build_digits(args, labeled_in_pool=False):
    """The 1,797 real 8x8 handwritten digits bundled with scikit-learn (no download), scaled to
    `--img-size` in 3 channels. The last 30 images of each class (file order) are a fixed balanced
    test set; the long-tailed split is drawn from the rest exactly as for CIFAR. No horizontal
    flips (they do not preserve digits) and a cutout of half the image side."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError('--dataset digits needs scikit-learn: pip install scikit-learn')
    digits = load_digits()
    labels = digits.target.astype(np.int64)
    scaled = np.round(digits.images * (255 / 16)).astype(np.uint8)  # pixel values are 0..16
    images = np.stack([np.asarray(Image.fromarray(x).resize((args.img_size,) * 2, Image.BILINEAR)) for x in scaled])
    images = np.repeat(images[..., None], 3, axis=3)
    test = np.concatenate([np.flatnonzero(labels == c)[-DIGITS_TEST_PER_CLASS:] for c in range(10)])
    train = np.setdiff1d(np.arange(len(labels)), test)  # file order
    split = split_per_class(labels[train], _labeled_counts(args, 10), _unlabeled_counts(args, 10),
                            labeled_in_unlabeled=labeled_in_pool, allow_short=args.allow_short_classes)
    return _from_split('digits', 10, args, images[train], labels[train], split, images[test], labels[test],
                       DIGITS_MEAN, DIGITS_STD, setting_name(args.imb_ratio_unlabel, args.flag_reverse_LT),
                       notes=('real handwritten digits from scikit-learn; no horizontal flips',),
                       flip=False, cutout=args.img_size // 2)


@dataclass(frozen=True)
class DatasetInfo:
    """What the rest of the code knows of a dataset; its rows (N1, M1, the ratios) are in sh/tables.sh."""
    num_classes: int
    image_sizes: tuple           # sides it can be trained at; the first is the default
    mean: tuple
    std: tuple
    arch: str                    # the default network (--arch)
    build: Callable              # (args, labeled_in_pool) -> SemiSupervisedData
    prior_from_arguments: bool   # its unlabeled class distribution follows from the split's arguments alone
    unused: tuple = ()           # split settings (argparse names) its builder does not read
    why_unused: str = ''         # why, in a phrase
    downloads: bool = False      # --download fetches it (the others: README, "Data")


_NO_UNLABELED_SPLIT = ('num_max_u', 'imb_ratio_unlabel', 'flag_reverse_LT')
DATASETS = {  # in the order of the paper's tables
    'cifar10': DatasetInfo(10, (32,), CIFAR10_MEAN, CIFAR10_STD, 'wideresnet', build_cifar10, True, downloads=True),
    'cifar100': DatasetInfo(100, (32,), CIFAR100_MEAN, CIFAR100_STD, 'wideresnet', build_cifar100, True,
                            downloads=True),
    'stl10': DatasetInfo(10, (32,), CIFAR10_MEAN, CIFAR10_STD, 'wideresnet', build_stl10, False, _NO_UNLABELED_SPLIT,
                         'its unlabeled set is all of unlabeled_X.bin', downloads=True),
    'smallimagenet': DatasetInfo(127, (32, 64), IMAGENET_MEAN, IMAGENET_STD, 'resnet50', build_imagenet127, False,
                                 ('num_max', 'imb_ratio_label', *_NO_UNLABELED_SPLIT),
                                 'its split is fixed: 10% of each class labeled, the rest unlabeled'),
    'smallimagenet_1k': DatasetInfo(1000, (32, 64), IMAGENET_MEAN, IMAGENET_STD, 'resnet50', build_imagenet1k,
                                    False, ('imb_ratio_unlabel', 'flag_reverse_LT'),
                                    "each class's unlabeled images are the rest of its long-tailed count (they follow "
                                    'the labeled distribution)'),
    'digits': DatasetInfo(10, (16, 8, 32), DIGITS_MEAN, DIGITS_STD, 'wideresnet', build_digits, True),
}
