"""`train.py --dry-run` on fake datasets in the official formats, read through the users' loaders."""
import json
import pickle

import numpy as np
import pytest

import train
from dataset import readers
from dataset.data import build_data
from methods import METHODS, default_arch
from test_splits import reference_counts
from tools import fake_data
from core.command_line import get_args_parser

# sh/tables.sh: (gamma_l, gamma_u, mode) of every launcher row
CIFAR10_ROWS = list(zip([150] * 5 + [100] * 5 + [150] * 8 + [150, 100],
                        [150, 1, 150, 150, 150, 100, 1, 100, 100, 100, 120, 90, 60, 30, 120, 90, 60, 30, 150, 100],
                        [0, 0, 1, 3, 4, 0, 0, 1, 3, 4, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2]))
CIFAR100_ROWS = list(zip([20] * 5 + [10] * 5 + [20], [20, 1, 20, 20, 20, 10, 1, 10, 10, 10, 20],
                         [0, 0, 1, 3, 4, 0, 0, 1, 3, 4, 2]))
MIDDLE = {10: [8, 6, 4, 2, 0, 1, 3, 5, 7, 9]}
HEAD_TAIL = {10: [1, 3, 5, 7, 9, 8, 6, 4, 2, 0]}


def dry_run(capsys, *argv):
    """Run train.py's main in-process; return (exit code, JSON of the last stdout line, stdout, stderr)."""
    code = train.main([*map(str, argv), '--dry-run'])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    return code, (json.loads(lines[-1]) if code == 0 else None), out, err


def expected_unlabeled(m1, classes, gamma_u, mode):
    counts = reference_counts(m1, classes, gamma_u)
    if mode == 1:
        return counts[::-1]
    if mode == 3:
        order = list(range(0, classes, 2))[::-1] + list(range(1, classes, 2))
        return [counts[j] for j in order]
    if mode == 4:
        order = list(range(1, classes, 2)) + list(range(0, classes, 2))[::-1]
        return [counts[j] for j in order]
    return counts


def check_row(summary, classes, n1, m1, gamma_l, gamma_u, mode, test_per_class):
    assert summary['num_classes'] == classes and summary['image_size'] == 32
    assert summary['labeled_per_class'] == reference_counts(n1, classes, gamma_l)
    if mode == 2:  # shuffled: a permutation of the base counts
        assert sorted(summary['unlabeled_per_class']) == sorted(reference_counts(m1, classes, gamma_u))
    else:
        assert summary['unlabeled_per_class'] == expected_unlabeled(m1, classes, gamma_u, mode)
    assert summary['test_per_class'] == [test_per_class] * classes


@pytest.mark.slow
@pytest.mark.parametrize('row', range(len(CIFAR10_ROWS)))
def test_cifar10_table_rows(capsys, cifar10_root, row):
    gamma_l, gamma_u, mode = CIFAR10_ROWS[row]
    code, summary, _, _ = dry_run(capsys, '--dataset', 'cifar10', '--data-dir', cifar10_root, '--num-max', 500,
                                  '--num-max-u', 4000, '--imb-ratio-label', gamma_l, '--imb-ratio-unlabel', gamma_u,
                                  '--flag-reverse-LT', mode)
    assert code == 0
    check_row(summary, 10, 500, 4000, gamma_l, gamma_u, mode, 1000)
    assert summary['unlabeled_pool_per_class'] == summary['unlabeled_per_class']
    assert summary['dataset'] == 'cifar10' and summary['method'] == 'SimPro'
    assert summary['model'] == 'wideresnet' and summary['params'] == 1_467_610


@pytest.mark.slow
@pytest.mark.parametrize('row', range(len(CIFAR100_ROWS)))
def test_cifar100_table_rows(capsys, cifar100_root, row):
    gamma_l, gamma_u, mode = CIFAR100_ROWS[row]
    code, summary, _, _ = dry_run(capsys, '--dataset', 'cifar100', '--data-dir', cifar100_root, '--num-max', 50,
                                  '--num-max-u', 400, '--imb-ratio-label', gamma_l, '--imb-ratio-unlabel', gamma_u,
                                  '--flag-reverse-LT', mode, '--version', 'ACR_d')
    assert code == 0
    check_row(summary, 100, 50, 400, gamma_l, gamma_u, mode, 100)
    # a second 128->100 head
    assert summary['model'] == 'wideresnet' and summary['params'] == 1_479_220 + 128 * 100 + 100
    # ACR_d: the unlabeled pool also holds the labeled images
    assert summary['unlabeled_pool_per_class'] == [n + m for n, m in zip(summary['labeled_per_class'],
                                                                         summary['unlabeled_per_class'])]


def test_shuffled_rows_are_the_same_for_every_seed(capsys, cifar10_root):
    args = ['--data-dir', cifar10_root, '--imb-ratio-label', 150, '--imb-ratio-unlabel', 150, '--flag-reverse-LT', 2]
    runs = [dry_run(capsys, *args, '--seed', seed)[1]['unlabeled_per_class'] for seed in (0, 1)]
    assert runs[0] == runs[1] != reference_counts(4000, 10, 150)


def test_human_summary_and_json_last(capsys, small_cifar10_root):
    code, summary, out, _ = dry_run(capsys, '--data-dir', small_cifar10_root, '--num-max', 20, '--num-max-u', 30,
                                    '--imb-ratio-label', 10, '--imb-ratio-unlabel', 10, '--flag-reverse-LT', 1)
    assert code == 0
    assert 'cifar10 for SimPro: 10 classes, 32x32, unlabeled reversed' in out
    assert summary['num_labeled'] == sum(reference_counts(20, 10, 10))
    assert summary['num_unlabeled'] == sum(reference_counts(30, 10, 10))


def file_order_rows(root, num_classes):
    """The raw HWC images of the training pickles in file order, and their labels."""
    folder, train_files, _, key = readers.CIFAR_LAYOUT[num_classes]
    parts = [pickle.load(open(root / folder / f, 'rb'), encoding='latin1') for f in train_files]
    rows = np.concatenate([p['data'] for p in parts]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return rows, np.concatenate([p[key] for p in parts])


@pytest.mark.parametrize('method', ['SimPro', 'ACR_d'])
def test_selected_images_are_the_first_of_each_class_in_file_order(small_cifar10_root, method):
    args = get_args_parser().parse_args(
        ['--data-dir', str(small_cifar10_root), '--num-max', '20', '--num-max-u', '30', '--imb-ratio-label', '10',
         '--imb-ratio-unlabel', '10', '--flag-reverse-LT', '1', '--version', method])
    data = build_data(args, METHODS[method].labeled_in_pool)
    rows, labels = file_order_rows(small_cifar10_root, 10)
    n = reference_counts(20, 10, 10)
    m = reference_counts(30, 10, 10)[::-1]
    for c in range(10):
        of_class = np.flatnonzero(labels == c)
        lab = data.labeled_idx[data.labels[data.labeled_idx] == c]
        np.testing.assert_array_equal(data.images[lab], rows[of_class[:n[c]]])
        pool = data.unlabeled_idx[data.labels[data.unlabeled_idx] == c]
        first = 0 if method == 'ACR_d' else n[c]
        np.testing.assert_array_equal(data.images[pool], rows[of_class[first:n[c] + m[c]]])
        marked = data.unlabeled_is_labeled[data.labels[data.unlabeled_idx] == c]
        assert marked.sum() == (n[c] if method == 'ACR_d' else 0)
    # only the rows the split uses are kept in memory
    assert len(data.images) == sum(n) + sum(m)
    assert data.unlabeled_prior == pytest.approx(np.array(m) / sum(m))


def test_views_per_method(small_cifar10_root):
    for method, views in (('SimPro', (2, 3)), ('ACR_d', (1, 3))):
        args = get_args_parser().parse_args(['--data-dir', str(small_cifar10_root), '--num-max', '20',
                                                   '--num-max-u', '30', '--version', method])
        kinds = (tuple(views.values()) for views in (METHODS[method].labeled_views, METHODS[method].unlabeled_views))
        labeled, unlabeled, test = build_data(args).datasets(*kinds)
        (x, y, i), (u, uy, j), (t, ty, k) = labeled[3], unlabeled[5], test[7]
        assert len(x) == views[0] and len(u) == views[1]
        assert all(v.shape == (3, 32, 32) for v in (*x, *u)) and t.shape == (3, 32, 32)
        assert (i, j, k) == (3, 5, 7) and 0 <= y < 10 and 0 <= uy < 10 and 0 <= ty < 10


def test_stl10(capsys, tmp_path):
    fake_data.write_stl10(tmp_path, train_per_class=50, test_per_class=8, unlabeled=300)
    code, summary, out, _ = dry_run(capsys, '--dataset', 'stl10', '--data-dir', tmp_path, '--num-max', 45,
                                    '--imb-ratio-label', 10)
    assert code == 0
    assert summary['labeled_per_class'] == reference_counts(45, 10, 10)
    assert summary['unlabeled_per_class'] is None and summary['unlabeled_pool_per_class'] is None
    assert summary['num_unlabeled'] == 300 and summary['test_per_class'] == [8] * 10
    assert 'not used' in out
    # images are resized from 96x96 (stored column-major) to 32x32 exactly as PIL's bilinear resize
    args = get_args_parser().parse_args(['--dataset', 'stl10', '--data-dir', str(tmp_path), '--num-max', '45'])
    data = build_data(args)
    raw = np.fromfile(tmp_path / 'stl-10/stl10_binary/unlabeled_X.bin', np.uint8).reshape(-1, 3, 96, 96)
    first = np.transpose(raw[0], (2, 1, 0))  # (C, W, H) -> (H, W, C)
    from PIL import Image
    expected = np.asarray(Image.fromarray(first).resize((32, 32), Image.BILINEAR))
    np.testing.assert_array_equal(data.images[data.unlabeled_idx[0]], expected)
    assert data.images.shape[1:] == (32, 32, 3) and (data.labels[data.unlabeled_idx] == -1).all()


@pytest.mark.slow
@pytest.mark.parametrize('size', [32, 64])
def test_imagenet127_reindexes_by_count(capsys, tmp_path, size):
    train_counts = [10 + (c * 37) % 50 for c in range(127)]      # ids not in count order
    val_counts = [60 if c % 2 else 30 for c in range(127)]
    fake_data.write_small_imagenet(tmp_path, 127, size, train_counts, val_counts)
    code, summary, _, _ = dry_run(capsys, '--dataset', 'smallimagenet', '--data-dir', tmp_path, '--img-size', size)
    assert code == 0 and summary['image_size'] == size and summary['num_classes'] == 127
    assert summary['model'] == 'resnet50' and summary['params'] == 23_760_575
    order = sorted(range(127), key=lambda c: (-train_counts[c], c))    # new class k = old class order[k]
    counts = [train_counts[c] for c in order]
    # the original's int(np.around(0.1 n)): a half rounds to the even neighbour (25 -> 2, 35 -> 4)
    half_to_even = [n // 10 + (n % 10 > 5 or (n % 10 == 5 and (n // 10) % 2 == 1)) for n in counts]
    assert any(n % 20 == 5 for n in counts)  # classes where rounding half up would give one more
    assert summary['labeled_per_class'] == half_to_even
    assert summary['unlabeled_per_class'] == [n - k for n, k in zip(counts, half_to_even)]
    assert summary['test_per_class'] == [min(50, val_counts[c]) for c in order]
    # the same map for train and test: the fake writes the old label into the first pixel
    args = get_args_parser().parse_args(['--dataset', 'smallimagenet', '--data-dir', str(tmp_path),
                                               '--img-size', str(size), '--seed', '3'])
    data = build_data(args)
    old_of_new = np.array(order)
    assert (data.images[:, 0, 0, 0] == old_of_new[data.labels]).all()
    assert (data.test_images[:, 0, 0, 0] == old_of_new[data.test_labels]).all()
    # the test subset does not depend on --seed
    args.seed = 0
    np.testing.assert_array_equal(build_data(args).test_images, data.test_images)


@pytest.mark.parametrize('method', ['ACR_d', 'SimPro'])
def test_imagenet127_pool_is_the_images_that_are_not_labeled_for_every_method(capsys, tmp_path, method):
    """The original adds the labeled images to ACR_d's pool on CIFAR and ImageNet-1k, not on ImageNet-127."""
    fake_data.write_small_imagenet(tmp_path, 127, 32, 30, 1)
    code, summary, _, _ = dry_run(capsys, '--dataset', 'smallimagenet', '--data-dir', tmp_path, '--version', method)
    assert code == 0 and summary['labeled_per_class'] == [3] * 127
    assert summary['unlabeled_pool_per_class'] == summary['unlabeled_per_class'] == [27] * 127
    assert summary['num_unlabeled'] == 27 * 127


def test_imagenet1k_pool_of_acr_d_holds_the_labeled_images(capsys, tmp_path):
    fake_data.write_small_imagenet(tmp_path, 1000, 32, 22, 1)
    code, summary, _, _ = dry_run(capsys, '--dataset', 'smallimagenet_1k', '--data-dir', tmp_path, '--version', 'ACR_d',
                                  '--num-max', 4, '--num-max-u', 16, '--imb-ratio-label', 4)
    assert code == 0
    assert summary['unlabeled_pool_per_class'] == reference_counts(20, 1000, 4)  # labeled + unlabeled


def test_imagenet1k(capsys, tmp_path):
    fake_data.write_small_imagenet(tmp_path, 1000, 32, 22, 3)
    code, summary, _, _ = dry_run(capsys, '--dataset', 'smallimagenet_1k', '--data-dir', tmp_path,
                                  '--num-max', 4, '--num-max-u', 16, '--imb-ratio-label', 4)
    assert code == 0
    total = reference_counts(20, 1000, 4)
    assert summary['labeled_per_class'] == [int(0.2 * s) for s in total]
    assert summary['unlabeled_per_class'] == [s - int(0.2 * s) for s in total]
    assert summary['test_per_class'] == [3] * 1000


def test_imagenet_peak_memory_stays_near_what_is_kept(tmp_path):
    """Traced allocations while reading: the kept rows plus about one batch file, not copies of the set."""
    import tracemalloc
    fake_data.write_small_imagenet(tmp_path, 127, 64, 40, 2)
    one_batch = (tmp_path / 'small_imagenet_127_64/train_data_batch_1').stat().st_size
    tracemalloc.start()
    images, labels = readers.read_imagenet_train(tmp_path, 127, 64)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert images.nbytes == 127 * 40 * 64 * 64 * 3
    # pickle.load holds a batch's bytes and its array at once: kept + 2 batches, plus slack
    assert peak < images.nbytes + 2.5 * one_batch, (peak, images.nbytes, one_batch)


def test_digits(capsys):
    code, summary, out, _ = dry_run(capsys, '--dataset', 'digits', '--num-max', 20, '--num-max-u', 120,
                                    '--imb-ratio-label', 20, '--imb-ratio-unlabel', 20, '--flag-reverse-LT', 1)
    assert code == 0 and summary['image_size'] == 16 and summary['test_per_class'] == [30] * 10
    assert summary['labeled_per_class'] == [20, 14, 10, 7, 5, 3, 2, 1, 1, 1]           # CALIBRATION.md
    assert summary['unlabeled_per_class'] == [6, 8, 11, 16, 22, 31, 44, 61, 86, 120]
    assert 'no horizontal flips' in out
    args = get_args_parser().parse_args(['--dataset', 'digits', '--img-size', '16', '--num-max', '20',
                                               '--num-max-u', '120'])
    data = build_data(args)
    from sklearn.datasets import load_digits
    digits = load_digits()
    # the test set is the last 30 of each class in file order, never in the training rows
    test_rows = np.concatenate([np.flatnonzero(digits.target == c)[-30:] for c in range(10)])
    np.testing.assert_array_equal(data.test_labels, digits.target[test_rows])
    first = np.round(digits.images[test_rows[0]] * 255 / 16).astype(np.uint8)
    from PIL import Image
    np.testing.assert_array_equal(data.test_images[0, :, :, 1],
                                  np.asarray(Image.fromarray(first).resize((16, 16), Image.BILINEAR)))
    assert data.images.shape[1:] == (16, 16, 3) and len(data.images) == 200 + 1200
    labeled, unlabeled, _ = data.datasets(('weak', 'strong'), ('weak', 'strong', 'strong'))
    weak, strong = labeled.transform.transforms
    assert not any('Flip' in type(t).__name__ for t in weak.transforms + strong.transforms)
    assert strong.transforms[-1].cutout == 8 and weak.transforms[-1].padding == 2


def test_digits_without_scikit_learn(capsys, monkeypatch):
    monkeypatch.setitem(__import__('sys').modules, 'sklearn.datasets', None)
    code, _, _, err = dry_run(capsys, '--dataset', 'digits')
    assert code == 2 and err.strip() == 'error: --dataset digits needs scikit-learn: pip install scikit-learn'


@pytest.mark.parametrize('method,arch', [('SimPro', 'wideresnet'), ('ACR', 'wideresnet'), ('CCL', 'wideresnet'),
                                         ('FixMatch', 'wideresnet_daso'), ('DASO', 'wideresnet_daso'),
                                         ('DARP', 'wideresnet_daso'), ('CReST+', 'wideresnet_daso'),
                                         ('CoSSL', 'wideresnet_cossl')])
def test_each_method_trains_its_official_codes_network_by_default(capsys, small_cifar10_root, method, arch):
    """On CIFAR (and STL-10) each method's default network is its own code's; --arch overrides it;
    digits keeps the dataset's."""
    common = ['--version', method, '--data-dir', small_cifar10_root, '--num-max', 20, '--num-max-u', 30]
    assert dry_run(capsys, *common)[1]['model'] == arch
    assert dry_run(capsys, *common, '--arch', 'wideresnet_usb')[1]['model'] == 'wideresnet_usb'
    assert default_arch(method, 'digits') == 'wideresnet' and default_arch(method, 'smallimagenet') == 'resnet50'
