"""dataset/prepare_imagenet127.py: the shipped mapping against the published label sets, and the
command on fake Downsampled ImageNet files in the genuine format, read back by train.py's reader."""
import collections
import hashlib
import json
import pickle

import numpy as np
import pytest

import train
from dataset import prepare_imagenet127 as prep
from tools import fake_data

# Published facts (Huh, Agrawal & Efros's 127-class label sets, as counted in
# shared/imagenet127/VERIFICATION.md), written here by hand, not derived from the shipped files.
MERGED = {'n01861778': ('mammal', 218), 'n03183080': ('device', 124), 'n03094503': ('container', 92),
          'n01503061': ('bird', 59), 'n04341686': ('structure', 57), 'n01767661': ('arthropod', 47),
          'n03122748': ('covering', 43), 'n03419014': ('garment', 25), 'n03405725': ('furniture', 21),
          'n01726692': ('snake', 17), 'n13134947': ('fruit', 16)}
SIZE_HISTOGRAM = {1: 65, 2: 20, 3: 14, 4: 2, 5: 3, 6: 4, 7: 1, 8: 1, 9: 1, 12: 2, 13: 3, 16: 1, 17: 1, 21: 1,
                  25: 1, 43: 1, 47: 1, 57: 1, 59: 1, 92: 1, 124: 1, 218: 1}
# a few 1k classes by their Downsampled ImageNet label (map_clsloc.txt order) and their super-class
KNOWN = {1: ('n02119789', 'n01861778'),    # kit fox: mammal
         2: ('n02100735', 'n01861778')}    # English setter: mammal


def mapping_rows():
    return prep.read_tsv(prep.MAPPING_FILE)


def test_the_mapping_covers_every_class_once():
    rows = mapping_rows()
    assert len(rows) == 1000
    assert sorted(int(r[0]) for r in rows) == list(range(1, 1001))          # every downsampled label once
    assert len({r[1] for r in rows}) == 1000                                 # 1,000 distinct 1k wnids
    assert {int(r[2]) for r in rows} == set(range(127))                      # every super-class used
    classes = prep.read_tsv(prep.CLASSES_FILE)
    assert [int(r[0]) for r in classes] == list(range(127)) and len({r[1] for r in classes}) == 127
    wnid_of = {int(r[0]): r[1] for r in classes}
    assert all(wnid_of[int(r[2])] == r[3] for r in rows)                    # label_127 and wnid_127 agree
    assert not {r[1] for r in rows} & set(wnid_of.values())                  # no super-class is a 1k class
    assert all(line.startswith('#') for line in prep.MAPPING_FILE.read_text().splitlines()[:5])  # provenance


def test_the_mapping_merges_as_the_published_label_sets():
    rows = mapping_rows()
    merged = collections.Counter(r[3] for r in rows)
    names = {r[1]: r[2] for r in prep.read_tsv(prep.CLASSES_FILE)}
    for wnid, (name, count) in MERGED.items():
        assert (names[wnid], merged[wnid]) == (name, count)
    assert dict(collections.Counter(merged.values())) == SIZE_HISTOGRAM      # 65 single-class super-classes
    by_label = {int(r[0]): (r[1], r[3]) for r in rows}
    assert all(by_label[k] == v for k, v in KNOWN.items())
    super_class, _ = prep.load_mapping()
    assert super_class[0] == [int(r[2]) for r in rows if r[0] == '1'][0]


@pytest.fixture
def imagenet_1k(tmp_path):
    """Fake Downsampled ImageNet-1k at 32x32: 2 train images of every class (shuffled over 10 files),
    1 val image each; the writer puts the class into each image's first pixel."""
    fake_data.write_small_imagenet(tmp_path, 1000, 32, 2, 1)
    return tmp_path


def load(path):
    with open(path, 'rb') as f:
        return pickle.load(f, encoding='latin1')


def test_labels_change_and_nothing_else_then_train_py_reads_it(capsys, imagenet_1k):
    assert prep.main(['--data-dir', str(imagenet_1k), '--img-size', '32']) == 0
    out = capsys.readouterr().out
    super_class = {int(r[0]): int(r[2]) for r in mapping_rows()}
    source, target = imagenet_1k / 'small_imagenet_1k_32', imagenet_1k / 'small_imagenet_127_32'
    counts = collections.Counter()
    for name in prep.FILES:
        before, after = load(source / name), load(target / name)
        assert set(after) == set(before)                                     # the same keys
        assert after['data'].dtype == np.uint8 and np.array_equal(after['data'], before['data'])  # same images, order
        assert after['labels'] == [super_class[k] + 1 for k in before['labels']]  # 1..127
        if 'mean' in before:
            assert np.array_equal(after['mean'], before['mean'])
        if name != 'val_data':
            counts.update(before['labels'])
    # per super-class: the sum of its 1k classes' counts (2 each), e.g. mammal 2 * 218
    train_per_class = json.loads((target / 'manifest.json').read_text())['train_per_class']
    assert train_per_class['87 mammal'] == 2 * 218 and train_per_class['1 loaf of bread'] == 2
    assert sum(train_per_class.values()) == 2000
    assert 'largest mammal (436), smallest' in out and 'imbalance ratio 218.0' in out
    assert f'bash sh/SimPro.sh smallimagenet 0 --data-dir {imagenet_1k.resolve()}' in out  # (run from the repo)
    # train.py's reader takes it: 10% labeled of each class, re-indexed by count (mammal first)
    code = train.main(['--dataset', 'smallimagenet', '--data-dir', str(imagenet_1k), '--dry-run'])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and summary['num_classes'] == 127
    assert summary['labeled_per_class'][0] + summary['unlabeled_per_class'][0] == 436
    assert summary['num_labeled'] + summary['num_unlabeled'] == 2000


def test_manifest_records_inputs_outputs_mapping_and_command(capsys, imagenet_1k):
    assert prep.main(['--data-dir', str(imagenet_1k), '--img-size', '32']) == 0
    target = imagenet_1k / 'small_imagenet_127_32'
    manifest = json.loads((target / 'manifest.json').read_text())
    sha = lambda path: hashlib.sha256(path.read_bytes()).hexdigest()  # noqa: E731
    assert [e['file'] for e in manifest['inputs']] == prep.FILES == [e['file'] for e in manifest['outputs']]
    for entry in manifest['inputs']:
        path = imagenet_1k / 'small_imagenet_1k_32' / entry['file']
        assert (entry['bytes'], entry['sha256']) == (path.stat().st_size, sha(path))
    for entry in manifest['outputs']:
        written = target / entry['file']
        assert (entry['bytes'], entry['sha256']) == (written.stat().st_size, sha(written))
    assert manifest['mapping'] == {'imagenet1k_to_127.tsv': sha(prep.MAPPING_FILE),
                                   'classes.tsv': sha(prep.CLASSES_FILE)}
    assert manifest['command'].startswith('python -m dataset.prepare_imagenet127') and manifest['image_size'] == 32
    assert not list(target.glob('*.partial'))


def one_line_error(capsys, *argv):
    code = prep.main([*map(str, argv), '--no-progress'])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith('error: ') and 'Traceback' not in captured.err
    return lines[0]


def test_a_second_run_is_refused_without_force(capsys, imagenet_1k):
    assert prep.main(['--data-dir', str(imagenet_1k), '--img-size', '32']) == 0
    target = imagenet_1k / 'small_imagenet_127_32'
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    line = one_line_error(capsys, '--data-dir', imagenet_1k, '--img-size', 32)
    assert 'already holds ImageNet-127' in line and '--force' in line
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert prep.main(['--data-dir', str(imagenet_1k), '--img-size', '32', '--force', '--no-progress']) == 0


def test_missing_or_truncated_input(capsys, imagenet_1k):
    source = imagenet_1k / 'small_imagenet_1k_32'
    (source / 'train_data_batch_7').unlink()
    line = one_line_error(capsys, '--data-dir', imagenet_1k, '--img-size', 32)
    assert str(source / 'train_data_batch_7') in line and 'image-net.org' in line and 'account' in line
    line = one_line_error(capsys, '--data-dir', imagenet_1k, '--img-size', 64)
    assert 'small_imagenet_1k_64/train_data_batch_1 not found (and 10 more files)' in line
    fake_data.write_small_imagenet(imagenet_1k, 1000, 32, 2, 1)
    path = source / 'train_data_batch_4'
    path.write_bytes(path.read_bytes()[:5000])
    line = one_line_error(capsys, '--data-dir', imagenet_1k, '--img-size', 32)
    assert str(path) in line and 'truncated or corrupt' in line and 'image-net.org' in line
    assert not (imagenet_1k / 'small_imagenet_127_32' / 'train_data_batch_1').exists()  # nothing half-made
    assert not list((imagenet_1k / 'small_imagenet_127_32').glob('*.partial'))


def test_labels_outside_1_to_1000_and_the_wrong_image_size(capsys, imagenet_1k):
    source = imagenet_1k / 'small_imagenet_1k_32'
    content = load(source / 'val_data')
    content['labels'][3] = 1001
    (source / 'val_data').write_bytes(pickle.dumps(content))
    line = one_line_error(capsys, '--data-dir', imagenet_1k, '--img-size', 32)
    assert str(source / 'val_data') in line and 'labels outside 1..1000' in line
    fake_data.write_small_imagenet(imagenet_1k / 'big', 1000, 64, 1, 1)
    (imagenet_1k / 'big' / 'small_imagenet_1k_64').rename(imagenet_1k / 'big' / 'small_imagenet_1k_32')
    line = one_line_error(capsys, '--data-dir', imagenet_1k / 'big', '--img-size', 32)
    assert 'holds 64x64 images (12288 values per row), not 32x32; pass --img-size 64' in line


def test_not_enough_free_disk(capsys, imagenet_1k, monkeypatch):
    import shutil
    monkeypatch.setattr(shutil, 'disk_usage', lambda path: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    line = one_line_error(capsys, '--data-dir', imagenet_1k, '--img-size', 32)
    assert 'has 1.0 MiB free but the output needs about ' in line and ' MiB; free space' in line  # (issue 19)
    assert not list((imagenet_1k / 'small_imagenet_127_32').iterdir())


def test_an_interrupted_run_leaves_nothing_the_reader_takes(capsys, imagenet_1k, monkeypatch):
    written = []

    def write_then_fail(path, content):
        if len(written) == 5:
            raise KeyboardInterrupt  # Ctrl-C while the sixth file is written
        written.append(path)
        return original(path, content)

    original = prep.write_batch
    monkeypatch.setattr(prep, 'write_batch', write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        prep.main(['--data-dir', str(imagenet_1k), '--img-size', '32', '--no-progress'])
    assert len(written) == 5 and not list((imagenet_1k / 'small_imagenet_127_32').iterdir())


def test_a_rebuild_stopped_while_renaming_never_leaves_a_mix_the_reader_takes(capsys, imagenet_1k, monkeypatch):
    import os
    assert prep.main(['--data-dir', str(imagenet_1k), '--img-size', '32', '--no-progress']) == 0
    renamed, real_replace = [], os.replace

    def replace_then_fail(source, target):
        if len(renamed) == 4:
            raise KeyboardInterrupt  # Ctrl-C after 4 of the 11 renames of a --force rebuild
        renamed.append(target)
        real_replace(source, target)

    monkeypatch.setattr(prep.os, 'replace', replace_then_fail)
    with pytest.raises(KeyboardInterrupt):
        prep.main(['--data-dir', str(imagenet_1k), '--img-size', '32', '--force', '--no-progress'])
    capsys.readouterr()
    assert not (imagenet_1k / 'small_imagenet_127_32' / 'val_data').exists()
    code = train.main(['--dataset', 'smallimagenet', '--data-dir', str(imagenet_1k), '--dry-run'])
    assert code == 2 and 'val_data' in capsys.readouterr().err  # refused, not trained on a mix


def test_peak_memory_is_about_one_batch_file(imagenet_1k, tmp_path):
    """Traced allocations while converting 64x64 files: one input file at a time, at most about twice
    its size (unpickling holds a batch's bytes and its array at once; writing copies nothing)."""
    import tracemalloc
    fake_data.write_small_imagenet(tmp_path / 'big', 1000, 64, 10, 1)
    largest = max(p.stat().st_size for p in (tmp_path / 'big' / 'small_imagenet_1k_64').iterdir())
    total = sum(p.stat().st_size for p in (tmp_path / 'big' / 'small_imagenet_1k_64').iterdir())
    tracemalloc.start()
    prep.prepare(tmp_path / 'big', 64, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total > 5 * largest
    assert peak < 2.2 * largest, (peak, largest)
