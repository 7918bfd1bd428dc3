"""Small fake datasets written in the genuine on-disk formats, for tests and for trying the
pipeline without downloading anything. They are read by the same readers as the real files.

    python -m tools.fake_data ./fake-data cifar10      # then: python train.py --data-dir ./fake-data ...
"""
import utils.startup  # noqa: F401 (first: a Ctrl-C while the rest imports is one line)
import pickle
import sys
from pathlib import Path

import numpy as np

from dataset import readers
from utils.cli import OneLineParser, unwritable


def _labels_in_file_order(counts, rng) -> np.ndarray:
    """Labels with counts[c] rows of class c, shuffled as in a real file."""
    labels = np.repeat(np.arange(len(counts)), counts)
    return labels[rng.permutation(len(labels))]


def _images(n, side, rng, labels=None) -> np.ndarray:
    """Random CHW rows; with labels, the class is also written into the first pixel (for tests)."""
    rows = rng.randint(0, 256, size=(n, 3 * side * side), dtype=np.uint8)
    if labels is not None:
        rows[:, 0] = np.asarray(labels) % 256
    return rows


def _dump(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'wb') as f:
        pickle.dump(content, f, protocol=4)


def write_cifar(root, num_classes=10, train_per_class=5000, test_per_class=None, seed=0) -> Path:
    """CIFAR-10/100 python pickles; train_per_class may be an int or a per-class list."""
    rng = np.random.RandomState(seed)
    root = Path(root)
    folder, train_files, test_files, key = readers.CIFAR_LAYOUT[num_classes]
    counts = np.broadcast_to(train_per_class, (num_classes,))
    test_counts = np.broadcast_to(test_per_class or (10000 // num_classes), (num_classes,))
    for files, cnt in ((train_files, counts), (test_files, test_counts)):
        labels = _labels_in_file_order(cnt, rng)
        rows = _images(len(labels), 32, rng, labels)
        for part, idx in zip(files, np.array_split(np.arange(len(labels)), len(files))):
            content = {'batch_label': part, key: labels[idx].tolist(), 'data': rows[idx],
                       'filenames': [f'{i}.png' for i in idx]}
            if num_classes == 100:
                content['coarse_labels'] = (labels[idx] // 5).tolist()
            _dump(root / folder / part, content)
    return root


def write_stl10(root, train_per_class=500, test_per_class=800, unlabeled=1000, seed=0) -> Path:
    """STL-10 binary files: uint8 images 3x96x96 stored column-major, labels 1..10."""
    rng = np.random.RandomState(seed)
    folder = Path(root) / readers.STL10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    side = readers.STL10_SIDE
    for split, per_class in (('train', train_per_class), ('test', test_per_class)):
        labels = _labels_in_file_order(np.broadcast_to(per_class, (10,)), rng)
        _images(len(labels), side, rng).tofile(folder / f'{split}_X.bin')
        (labels + 1).astype(np.uint8).tofile(folder / f'{split}_y.bin')
    _images(unlabeled, side, rng).tofile(folder / 'unlabeled_X.bin')
    return Path(root)


def write_small_imagenet(root, num_classes=127, image_size=32, train_per_class=20, val_per_class=5,
                         seed=0) -> Path:
    """Downsampled-ImageNet pickles: train_data_batch_1..10 and val_data, labels from 1."""
    rng = np.random.RandomState(seed)
    folder = Path(root) / readers.imagenet_folder(num_classes, image_size)
    labels = _labels_in_file_order(np.broadcast_to(train_per_class, (num_classes,)), rng)
    rows = _images(len(labels), image_size, rng, labels)
    for name, idx in zip(readers.IMAGENET_TRAIN_FILES, np.array_split(np.arange(len(labels)), 10)):
        _dump(folder / name, {'data': rows[idx], 'labels': (labels[idx] + 1).tolist(), 'mean': rows.mean(0)})
    val_labels = _labels_in_file_order(np.broadcast_to(val_per_class, (num_classes,)), rng)
    _dump(folder / readers.IMAGENET_VAL_FILE,
          {'data': _images(len(val_labels), image_size, rng, val_labels), 'labels': (val_labels + 1).tolist()})
    return Path(root)


WRITERS = {  # dataset -> writer(root, small): small keeps the training images and writes a test set of 200
    'cifar10': lambda root, small: write_cifar(root, 10, test_per_class=20 if small else None),
    'cifar100': lambda root, small: write_cifar(root, 100, 500, test_per_class=2 if small else None),
    'stl10': lambda root, small: write_stl10(root, test_per_class=20 if small else 800),
    'smallimagenet': lambda root, small: write_small_imagenet(root, 127, 32, 60, 2 if small else 50),
    'smallimagenet_1k': lambda root, small: write_small_imagenet(root, 1000, 32, 12, 1 if small else 5),
}


def main(argv=None):
    parser = OneLineParser(prog='python -m tools.fake_data', description='Write a fake dataset in the official '
                                                                         'on-disk format.')
    parser.add_argument('root', help='data directory to write into (then pass it as --data-dir)')
    parser.add_argument('dataset', choices=sorted(WRITERS))
    parser.add_argument('--small', action='store_true',
                        help='a test set of a few hundred images (200 for CIFAR and STL-10), so that a trial run '
                             'evaluates in a second; the training images are the same')
    args = parser.parse_args(argv)
    if why := unwritable('', args.root):  # (before anything is written)
        parser.error(why)
    try:
        WRITERS[args.dataset](args.root, args.small)
    except OSError as e:
        parser.error(f'cannot write under {args.root} ({e.strerror}: {e.filename}); choose a writable folder')
    print(f'wrote a fake {args.dataset} under {args.root}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
