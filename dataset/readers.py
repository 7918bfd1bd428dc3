"""Readers for the official on-disk formats, under one data root with the original's layout.

    <data-dir>/cifar-10/cifar-10-batches-py/     data_batch_1..5, test_batch    (python pickles)
    <data-dir>/cifar-100/cifar-100-python/       train, test                    (python pickles)
    <data-dir>/stl-10/stl10_binary/              train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin
    <data-dir>/small_imagenet_{127,1k}_{32,64}/  train_data_batch_1..10, val_data (downsampled-ImageNet pickles)

Every reader returns uint8 images as (N, H, W, 3) arrays and int64 labels counted from 0.
Files are read as they are: checksums are verified only when downloading (`--download`).
"""
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from dataset.splits import first_per_class
from utils.errors import UserError

CIFAR_HOME = 'https://www.cs.toronto.edu/~kriz/cifar.html'
STL10_HOME = 'https://cs.stanford.edu/~acoates/stl10/'
IMAGENET_HOME = ('the "Downsampled ImageNet" 32x32/64x64 files from https://image-net.org/download-images.php '
                 '(ImageNet-127 is built from them: see README.md, "Data")')

CIFAR_LAYOUT = {  # num_classes -> (folder, train files, test files, label key)
    10: (Path('cifar-10', 'cifar-10-batches-py'), [f'data_batch_{i}' for i in range(1, 6)], ['test_batch'], 'labels'),
    100: (Path('cifar-100', 'cifar-100-python'), ['train'], ['test'], 'fine_labels'),
}
STL10_FOLDER = Path('stl-10', 'stl10_binary')
STL10_SIDE = 96
IMAGENET_TRAIN_FILES = [f'train_data_batch_{i}' for i in range(1, 11)]
IMAGENET_VAL_FILE = 'val_data'


def imagenet_folder(num_classes: int, image_size: int) -> Path:
    return Path(f'small_imagenet_{127 if num_classes == 127 else "1k"}_{image_size}')


def _require(paths, what: str, hint: str) -> None:
    for path in paths:
        if path.exists() and not path.is_file():  # (a folder, a FIFO, a device: there, but not a file)
            raise UserError(f'{path} is not a regular file (a {"folder" if path.is_dir() else "special file"}); '
                            f'put the {what} file there')
        if not path.is_file():
            raise UserError(f'{what} not found: expected {path}; {hint}')


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, 'rb') as f:
            content = pickle.load(f, encoding='latin1')
    except Exception as e:  # truncated or not a pickle: EOFError, UnpicklingError, ValueError, ...
        raise UserError(f'{path} is truncated or corrupt ({type(e).__name__}); delete it and fetch it again')
    if not isinstance(content, dict):
        raise UserError(f'{path} is not a dataset pickle (expected a dict with "data" and labels)')
    # The official files are Python 2 pickles whose keys may load as bytes.
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in content.items()}


def _rows_and_labels(path: Path, label_key: str, side: int, label_offset: int = 0):
    """The CHW uint8 rows and integer labels of one pickle, checked against the official format:
    `data` uint8 of shape (N, 3 * side * side), channel-first rows; labels N integers."""
    content = _load_pickle(path)
    if 'data' not in content or label_key not in content:
        raise UserError(f'{path} lacks the "data" or "{label_key}" entry; is it the right file?')
    rows, labels = np.asarray(content['data']), np.asarray(content[label_key])
    expected = f'uint8 rows of shape (N, {3 * side * side}) (channel-first {side}x{side} images)'
    if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != 3 * side * side:
        raise UserError(f'{path} holds data of dtype {rows.dtype} and shape {rows.shape}; expected {expected}, '
                        f'as in the official files')
    if (labels.size and labels.dtype.kind not in 'iu') or labels.shape != (len(rows),):
        found = f'{labels.dtype} values of shape {labels.shape}'
        raise UserError(f'{path} holds "{label_key}" as {found}; expected {len(rows)} integer labels, '
                        f'one per image, as in the official files')
    return rows, labels.astype(np.int64) - label_offset


def _to_hwc(rows: np.ndarray, side: int) -> np.ndarray:
    return np.ascontiguousarray(rows.reshape(-1, 3, side, side).transpose(0, 2, 3, 1))


def _check_labels(labels: np.ndarray, num_classes: int, path: Path, first: int = 0) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f'{path} has labels outside {first}..{num_classes - 1 + first}; '
                        f'is it a {num_classes}-class file?')


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100

def cifar_files(root: Path, num_classes: int):
    folder, train, test, _ = CIFAR_LAYOUT[num_classes]
    return [root / folder / name for name in train + test]


def download_cifar(root: Path, num_classes: int) -> None:
    """Fetch with torchvision (which checks the archive's checksum) when files are missing."""
    if all(p.is_file() for p in cifar_files(root, num_classes)):
        return
    from torchvision import datasets
    getter = datasets.CIFAR10 if num_classes == 10 else datasets.CIFAR100
    _download(lambda: getter(root / CIFAR_LAYOUT[num_classes][0].parts[0], train=True, download=True))


def read_cifar(root: Path, num_classes: int):
    """(train_images, train_labels, test_images, test_labels) of CIFAR-10 or CIFAR-100."""
    folder, train, test, key = CIFAR_LAYOUT[num_classes]
    name = f'CIFAR-{num_classes}'
    _require(cifar_files(root, num_classes), name,
             f'pass --download to fetch it, or get the python version from {CIFAR_HOME}')

    def read(files):
        parts = [_rows_and_labels(root / folder / f, key, 32) for f in files]
        for f, (_, labels) in zip(files, parts):
            _check_labels(labels, num_classes, root / folder / f)
        rows = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        return _to_hwc(rows, 32), labels

    return (*read(train), *read(test))


# ---------------------------------------------------------------- STL-10

def stl10_files(root: Path):
    return [root / STL10_FOLDER / f for f in
            ('train_X.bin', 'train_y.bin', 'test_X.bin', 'test_y.bin', 'unlabeled_X.bin')]


def download_stl10(root: Path) -> None:
    if all(p.is_file() for p in stl10_files(root)):
        return
    from torchvision import datasets
    _download(lambda: datasets.STL10(root / STL10_FOLDER.parts[0], split='train+unlabeled', download=True))


def _read_stl_images(path: Path, image_size: int, chunk: int = 4096) -> np.ndarray:
    """STL-10 images (stored column-major, 3x96x96) resized to `image_size`, chunk by chunk.

    Resizing here equals resizing in every transform (it is deterministic and comes
    first), and keeps 100,000 images at 32x32 instead of 96x96.
    """
    per_image = 3 * STL10_SIDE * STL10_SIDE
    size = path.stat().st_size
    if size == 0 or size % per_image:
        raise UserError(f'{path} is truncated or corrupt ({size} bytes is not a whole number of '
                        f'{per_image}-byte images); delete it and fetch it again')
    raw = np.memmap(path, dtype=np.uint8, mode='r').reshape(-1, 3, STL10_SIDE, STL10_SIDE)
    out = np.empty((len(raw), image_size, image_size, 3), np.uint8)
    for start in range(0, len(raw), chunk):
        block = raw[start:start + chunk].transpose(0, 3, 2, 1)  # (N, C, W, H) -> (N, H, W, C)
        for i, image in enumerate(block):
            if image_size != STL10_SIDE:
                # torchvision's Resize(32) on a PIL image: bilinear with PIL's antialiasing
                image = np.asarray(Image.fromarray(image).resize((image_size, image_size), Image.BILINEAR))
            out[start + i] = image
    return out


def _read_stl_labels(path: Path, count: int) -> np.ndarray:
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1  # files count from 1
    if len(labels) != count:
        raise UserError(f'{path} has {len(labels)} labels for {count} images; delete the STL-10 files '
                        f'and fetch them again')
    _check_labels(labels, 10, path, first=1)
    return labels


def read_stl10(root: Path, image_size: int):
    """(train_images, train_labels, test_images, test_labels, unlabeled_images) at `image_size`."""
    train_x, train_y, test_x, test_y, unlabeled_x = stl10_files(root)
    _require(stl10_files(root), 'STL-10',
             f'pass --download to fetch it, or get the binary version from {STL10_HOME}')
    train_images = _read_stl_images(train_x, image_size)
    test_images = _read_stl_images(test_x, image_size)
    return (train_images, _read_stl_labels(train_y, len(train_images)),
            test_images, _read_stl_labels(test_y, len(test_images)),
            _read_stl_images(unlabeled_x, image_size))


# ---------------------------------------------------------------- downsampled ImageNet

def _imagenet_paths(root: Path, num_classes: int, image_size: int):
    folder = root / imagenet_folder(num_classes, image_size)
    paths = [folder / f for f in IMAGENET_TRAIN_FILES + [IMAGENET_VAL_FILE]]
    name = 'ImageNet-127' if num_classes == 127 else 'ImageNet-1k'
    _require(paths, f'{name} at {image_size}x{image_size}', f'get {IMAGENET_HOME}')
    return paths[:-1], paths[-1]


def read_imagenet_train(root: Path, num_classes: int, image_size: int, quota=None):
    """Training rows kept by `quota` (the first quota[c] of class c in file order; None keeps all).

    Batch files are read one at a time and only the kept rows survive each file, so peak
    memory is about what is kept plus one batch file, never several copies of the train set.
    """
    train_paths, _ = _imagenet_paths(root, num_classes, image_size)
    quota = np.full(num_classes, np.iinfo(np.int64).max) if quota is None else np.asarray(quota)
    # Fill one array allocated up front; its size bounds the rows: no file holds more rows
    # than its bytes allow. Pages past the last kept row are never touched, so never resident.
    capacity = sum(p.stat().st_size for p in train_paths) // (3 * image_size * image_size)
    images = np.empty((int(min(capacity, quota.sum())), image_size, image_size, 3), np.uint8)
    seen = np.zeros(num_classes, np.int64)
    kept_labels, filled = [], 0
    for path in train_paths:
        rows, labels = _rows_and_labels(path, 'labels', image_size, label_offset=1)
        _check_labels(labels, num_classes, path, first=1)
        keep = first_per_class(labels, quota, seen)
        if not keep.all():
            rows, labels = rows[keep], labels[keep]
        images[filled:filled + len(rows)] = rows.reshape(-1, 3, image_size, image_size).transpose(0, 2, 3, 1)
        filled += len(rows)
        kept_labels.append(labels)
        del rows, labels  # free this batch file before reading the next
    return images[:filled], np.concatenate(kept_labels)


def read_imagenet_val(root: Path, num_classes: int, image_size: int):
    _, val_path = _imagenet_paths(root, num_classes, image_size)
    rows, labels = _rows_and_labels(val_path, 'labels', image_size, label_offset=1)
    _check_labels(labels, num_classes, val_path, first=1)
    return _to_hwc(rows, image_size), labels


def _download(fetch) -> None:
    try:
        fetch()
    except Exception as e:  # no network, bad checksum, disk full: one line, not a traceback
        raise UserError(f'download failed ({type(e).__name__}: {e}); fetch the files by hand into --data-dir')
