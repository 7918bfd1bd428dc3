"""Build ImageNet-127 from the Downsampled ImageNet files, in one command.

    python -m dataset.prepare_imagenet127 --data-dir data --img-size 32     # and --img-size 64

reads <data-dir>/small_imagenet_1k_<size>/ (train_data_batch_1..10 and val_data, the Downsampled
ImageNet pickles from image-net.org) and writes <data-dir>/small_imagenet_127_<size>/: the same
file names, keys, dtypes and images in the same order; only the labels change, each 1k class
(1..1000) to its super-class (1..127, the order of Huh, Agrawal & Efros's 127 synsets), by the
mapping in dataset/imagenet127/ (as CoSSL's construct_small_imagenet_127.py writes ImageNet-127).
Every image is kept, the val set too (train.py draws its balanced test subset from it).

One input file is in memory at a time. The outputs are written under temporary names and renamed
only when all of them are complete, so an interrupted run never leaves files the reader would
take for ImageNet-127. A manifest.json beside them records the inputs' and outputs' sizes and
SHA-256, the mapping's SHA-256 and the command.
"""
import utils.startup  # noqa: F401 (first: a Ctrl-C while the rest imports is one line)
import argparse
import hashlib
import json
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from dataset.readers import IMAGENET_TRAIN_FILES, IMAGENET_VAL_FILE, imagenet_folder
from utils.cli import OneLineParser
from utils.errors import UserError

MAPPING_DIR = Path(__file__).resolve().parent / 'imagenet127'
MAPPING_FILE, CLASSES_FILE = MAPPING_DIR / 'imagenet1k_to_127.tsv', MAPPING_DIR / 'classes.tsv'
FILES = IMAGENET_TRAIN_FILES + [IMAGENET_VAL_FILE]
MANIFEST = 'manifest.json'
PARTIAL = '.partial'  # suffix of an output file still being written
SOURCE = ('the Downsampled ImageNet files (Imagenet{size}_train and Imagenet{size}_val) from '
          'https://image-net.org/download-images.php (an ImageNet account is needed)')


def read_tsv(path: Path) -> list:
    """The rows of a tab-separated file, '#' lines skipped."""
    return [line.rstrip('\n').split('\t') for line in path.read_text().splitlines(True)
            if line.strip() and not line.startswith('#')]


def load_mapping():
    """(super_class: (1000,) int array, index k = 1k label k + 1 -> label_127 in 0..126, class names)."""
    rows = read_tsv(MAPPING_FILE)
    super_class = np.full(1000, -1, np.int64)
    for label, _, label_127, _ in rows:
        super_class[int(label) - 1] = int(label_127)
    names = [name for _, _, name in sorted(read_tsv(CLASSES_FILE), key=lambda row: int(row[0]))]
    assert len(rows) == 1000 and (super_class >= 0).all() and len(names) == 127, 'the mapping files are damaged'
    return super_class, names


class Hashing:
    """A file wrapper that computes the SHA-256 of every byte read or written through it."""

    def __init__(self, file):
        self.file, self.sha256, self.size = file, hashlib.sha256(), 0

    def _seen(self, data):
        self.sha256.update(data)
        self.size += len(data)
        return data

    def read(self, n=-1):
        return self._seen(self.file.read(n))

    def readline(self, n=-1):
        return self._seen(self.file.readline(n))

    def readinto(self, buffer):
        n = self.file.readinto(buffer)
        self._seen(memoryview(buffer)[:n])
        return n

    def write(self, data):
        self._seen(memoryview(data).cast('B'))
        return self.file.write(data)

    def rest(self) -> None:
        """Read what the unpickler left (nothing in a sound file), so the hash covers the whole file."""
        while self.read(1 << 20):
            pass


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def read_batch(path: Path, image_size: int):
    """(the pickle's dict, labels as an int64 array, the file's SHA-256), checked against the format."""
    hint = SOURCE.format(size=image_size)
    try:
        with open(path, 'rb') as f:
            reader = Hashing(f)
            content = pickle.load(reader, encoding='latin1')
            reader.rest()
    except Exception as e:  # truncated or not a pickle
        raise UserError(f'{path} is truncated or corrupt ({type(e).__name__}); fetch it again: {hint}')
    content = {k.decode() if isinstance(k, bytes) else k: v for k, v in content.items()} \
        if isinstance(content, dict) else None
    if content is None or 'data' not in content or 'labels' not in content:
        raise UserError(f'{path} is not a Downsampled ImageNet pickle (a dict with "data" and "labels")')
    data, labels = content['data'], np.asarray(content['labels'])
    columns = 3 * image_size * image_size
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise UserError(f'{path} holds "data" that is not a 2-D uint8 array; is it a Downsampled ImageNet file?')
    if data.shape[1] != columns:
        side = int(round((data.shape[1] / 3) ** 0.5))
        raise UserError(f'{path} holds {side}x{side} images ({data.shape[1]} values per row), not '
                        f'{image_size}x{image_size}; pass --img-size {side} or put the {image_size}x{image_size} '
                        f'files there')
    if labels.shape != (len(data),) or (labels.size and labels.dtype.kind not in 'iu'):
        raise UserError(f'{path} holds {labels.size} labels of type {labels.dtype} for {len(data)} images; '
                        f'expected one integer label per image')
    if labels.size and (labels.min() < 1 or labels.max() > 1000):
        raise UserError(f'{path} has labels outside 1..1000 ({labels.min()}..{labels.max()}); is it an '
                        f'ImageNet-1k file of the Downsampled ImageNet release?')
    return content, labels.astype(np.int64), reader.sha256.hexdigest()


def write_batch(path: Path, content: dict) -> str:
    """Pickle `content` to `path` (flushed to disk); its SHA-256. Protocol 5 writes the image array
    without a copy of it in memory (every Python >= 3.8 reads it)."""
    with open(path, 'wb') as f:
        writer = Hashing(f)
        pickle.dump(content, writer, protocol=5)
        f.flush()
        os.fsync(f.fileno())
    return writer.sha256.hexdigest()


def size_text(n: float) -> str:
    """A byte count in the largest unit that keeps a digit before the point: 512 B, 3.4 MiB, 12.0 GiB."""
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if n < 1024 or unit == 'GiB':
            return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
        n /= 1024


def check_inputs_and_room(source: Path, target: Path, image_size: int, force: bool) -> int:
    """The input files' total size, after checking they exist, that the target holds no ImageNet-127
    (unless force) and that its disk has room for the output."""
    for folder in (source.parent, source, target):
        if folder.exists() and not folder.is_dir():
            raise UserError(f'{folder} is a file, not a folder; pass the folder that holds small_imagenet_1k_<size>/ '
                            f'as --data-dir')
    missing = [source / name for name in FILES if not (source / name).is_file()]
    if missing:
        more = f' (and {len(missing) - 1} more files)' if len(missing) > 1 else ''
        raise UserError(f'{missing[0]} not found{more}; unpack {SOURCE.format(size=image_size)} into {source}: '
                        f'train_data_batch_1..10 and val_data')
    existing = [target / name for name in FILES + [MANIFEST] if (target / name).exists()]
    if existing and not force:
        raise UserError(f'{target} already holds ImageNet-127 ({existing[0].name}); pass --force to write it again')
    needed = sum((source / name).stat().st_size for name in FILES)
    target.mkdir(parents=True, exist_ok=True)
    replaced = sum(path.stat().st_size for path in existing)
    free = shutil.disk_usage(target).free
    if free + replaced < needed * 1.01:  # pickle headers and labels: the output is a little larger
        raise UserError(f'{target} has {size_text(free + replaced)} free but the output needs about '
                        f'{size_text(needed * 1.01)}; free space or pass another --data-dir')
    return needed


def prepare(data_dir: Path, image_size: int, force: bool = False, progress: bool = True) -> dict:
    """Write ImageNet-127 at `image_size` from the 1k files under `data_dir`; return the manifest."""
    source, target = data_dir / imagenet_folder(1000, image_size), data_dir / imagenet_folder(127, image_size)
    total = check_inputs_and_room(source, target, image_size, force)
    super_class, names = load_mapping()
    inputs, outputs, train_counts = [], [], np.zeros(127, np.int64)
    from tqdm import tqdm
    bar = tqdm(total=total, unit='B', unit_scale=True, desc='ImageNet-127', file=sys.stderr,
               disable=not (progress and sys.stderr.isatty()))
    try:
        for name in FILES:
            content, labels, sha = read_batch(source / name, image_size)
            inputs.append({'file': name, 'bytes': (source / name).stat().st_size, 'sha256': sha})
            labels_127 = super_class[labels - 1]
            if name != IMAGENET_VAL_FILE:
                train_counts += np.bincount(labels_127, minlength=127)
            content['labels'] = (labels_127 + 1).tolist()  # 1..127; data (and mean) untouched
            partial = target / (name + PARTIAL)
            outputs.append({'file': name, 'sha256': write_batch(partial, content),
                            'bytes': partial.stat().st_size})
            del content, labels, labels_127  # one input file in memory at a time
            bar.update(inputs[-1]['bytes'])
        bar.close()
        manifest = {
            'command': ' '.join(['python -m dataset.prepare_imagenet127', *sys.argv[1:]]),
            'written': time.strftime('%Y-%m-%d %H:%M:%S'), 'image_size': image_size,
            'mapping': {path.name: file_sha256(path) for path in (MAPPING_FILE, CLASSES_FILE)},
            'inputs': inputs, 'outputs': outputs,
            'train_per_class': {f'{k + 1} {names[k]}': int(n) for k, n in enumerate(train_counts)}}
        # (--force) the old manifest describes the old files, and without the old val_data the reader
        # refuses the folder until the new val_data, renamed last, is in place: never a mix of both
        (target / MANIFEST).unlink(missing_ok=True)
        (target / IMAGENET_VAL_FILE).unlink(missing_ok=True)
        assert FILES[-1] == IMAGENET_VAL_FILE
        for name in FILES:  # all complete: now they take their names
            os.replace(target / (name + PARTIAL), target / name)
        (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + '\n')
    finally:
        bar.close()
        for name in FILES:
            (target / (name + PARTIAL)).unlink(missing_ok=True)
    return manifest


def summary(manifest: dict, data_dir: Path, image_size: int) -> str:
    """The per-class counts in a few lines, and how to train on the result."""
    counts = {name: n for name, n in manifest['train_per_class'].items()}
    largest, smallest = max(counts, key=counts.get), min(counts, key=counts.get)
    ratio = counts[largest] / max(1, counts[smallest])
    row = 0 if image_size == 32 else 1
    return (f'wrote {data_dir / imagenet_folder(127, image_size)}: {sum(counts.values()):,} training images in '
            f'127 classes; largest {largest.split(" ", 1)[1]} ({counts[largest]:,}), smallest '
            f'{smallest.split(" ", 1)[1]} ({counts[smallest]:,}), imbalance ratio {ratio:.1f}\n'
            f'train on it: bash sh/SimPro.sh smallimagenet {row} --data-dir {data_dir.resolve()}')


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog='python -m dataset.prepare_imagenet127', description=__doc__.split('\n')[0])
    p.add_argument('--data-dir', default='./data',
                   help='holds small_imagenet_1k_<size>/ (read) and small_imagenet_127_<size>/ (written); '
                        'default: ./data')
    p.add_argument('--img-size', type=int, choices=(32, 64), required=True, help='32 or 64: which files to convert')
    p.add_argument('--force', action='store_true', help='write over an ImageNet-127 that is already there')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    data_dir = Path(args.data_dir)
    try:
        manifest = prepare(data_dir, args.img_size, args.force, progress=not args.no_progress)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except OSError as e:  # a disk that fills up or fails while writing: the partial files are gone
        print(f'error: cannot write {data_dir / imagenet_folder(127, args.img_size)} ({e.strerror}); nothing was '
              f'replaced; free space or pass another --data-dir', file=sys.stderr)
        return 2
    print(summary(manifest, data_dir, args.img_size))
    return 0


if __name__ == '__main__':
    sys.exit(main())
