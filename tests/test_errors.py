"""Bad input: one line on stderr naming the problem and the fix, exit status 2, no traceback."""
import shutil
import subprocess
import sys

import pytest

import train
from conftest import ROOT
from utils import fake_data


def run_main(capsys, *argv):
    code = train.main([*map(str, argv), '--dry-run'])
    out, err = capsys.readouterr()
    return code, err


def assert_one_line(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def run_cli(*argv):
    return subprocess.run([sys.executable, 'train.py', *map(str, argv)], cwd=ROOT, capture_output=True, text=True)


def test_missing_dataset_from_the_shell(tmp_path):
    result = run_cli('--dataset', 'cifar100', '--data-dir', tmp_path, '--dry-run')
    assert result.returncode == 2 and 'Traceback' not in result.stderr and result.stdout == ''
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(tmp_path / 'cifar-100' / 'cifar-100-python' / 'train') in lines[0]
    assert '--download' in lines[0] and 'cs.toronto.edu' in lines[0]


def test_unknown_dataset_from_the_shell():
    result = run_cli('--dataset', 'mnist', '--dry-run')
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid choice: 'mnist'" in lines[0] and 'cifar10' in lines[0]


@pytest.fixture
def cifar_copy(small_cifar10_root, tmp_path):
    shutil.copytree(small_cifar10_root, tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_truncated_pickle(capsys, cifar_copy):
    path = cifar_copy / 'cifar-10' / 'cifar-10-batches-py' / 'data_batch_3'
    content = path.read_bytes()
    path.write_bytes(content[:len(content) // 2])
    code, err = run_main(capsys, '--data-dir', cifar_copy, '--num-max', 20, '--num-max-u', 30)
    assert_one_line(code, err, str(path), 'truncated or corrupt')
    assert path.stat().st_size == len(content) // 2  # nothing was deleted or rewritten


def test_wrong_file_contents(capsys, cifar_copy):
    import pickle
    path = cifar_copy / 'cifar-10' / 'cifar-10-batches-py' / 'test_batch'
    path.write_bytes(pickle.dumps({'data': [[1, 2, 3]], 'labels': [0]}))
    code, err = run_main(capsys, '--data-dir', cifar_copy, '--num-max', 20, '--num-max-u', 30)
    assert_one_line(code, err, str(path), 'expected (N, 3072) rows')


def test_truncated_stl10(capsys, tmp_path):
    fake_data.write_stl10(tmp_path, train_per_class=50, test_per_class=2, unlabeled=10)
    path = tmp_path / 'stl-10' / 'stl10_binary' / 'unlabeled_X.bin'
    path.write_bytes(path.read_bytes()[:-100])
    code, err = run_main(capsys, '--dataset', 'stl10', '--data-dir', tmp_path, '--num-max', 45)
    assert_one_line(code, err, str(path), 'truncated or corrupt')
    (tmp_path / 'stl-10' / 'stl10_binary' / 'test_y.bin').write_bytes(b'\x01')
    path.unlink()
    code, err = run_main(capsys, '--dataset', 'stl10', '--data-dir', tmp_path, '--num-max', 45)
    assert_one_line(code, err, 'STL-10 not found', str(path), '--download')


def test_missing_imagenet_file(capsys, tmp_path):
    fake_data.write_small_imagenet(tmp_path, 127, 32, 3, 1)
    (tmp_path / 'small_imagenet_127_32' / 'val_data').unlink()
    code, err = run_main(capsys, '--dataset', 'smallimagenet', '--data-dir', tmp_path)
    assert_one_line(code, err, 'ImageNet-127 at 32x32 not found', 'small_imagenet_127_32/val_data', 'README')


def test_imagenet_labels_out_of_range(capsys, tmp_path):
    fake_data.write_small_imagenet(tmp_path, 1000, 32, 1, 1)
    (tmp_path / 'small_imagenet_1k_32').rename(tmp_path / 'small_imagenet_127_32')
    code, err = run_main(capsys, '--dataset', 'smallimagenet', '--data-dir', tmp_path)
    assert_one_line(code, err, 'labels outside 1..127')


@pytest.mark.parametrize('flag', ['--imb-ratio-label', '--imb-ratio-unlabel'])
def test_ratio_below_one(capsys, small_cifar10_root, flag):
    code, err = run_main(capsys, '--data-dir', small_cifar10_root, flag, 0.5)
    assert_one_line(code, err, f'{flag} must be >= 1', '0.5')


def test_max_count_too_small_for_ratio(capsys, small_cifar10_root):
    code, err = run_main(capsys, '--data-dir', small_cifar10_root, '--num-max', 10, '--imb-ratio-label', 20)
    assert_one_line(code, err, '--num-max 10 with --imb-ratio-label 20', 'int(10/20) = 0', '--num-max >= 20')


@pytest.mark.parametrize('dataset,size,allowed', [('smallimagenet', 48, '32 or 64'), ('smallimagenet_1k', 128, '32 or 64'),
                                                  ('cifar10', 64, 'use 32')])
def test_image_size(capsys, tmp_path, dataset, size, allowed):
    code, err = run_main(capsys, '--dataset', dataset, '--data-dir', tmp_path, '--img-size', size)
    assert_one_line(code, err, f'--img-size {size} is not available for {dataset}', allowed)


def test_short_class_error_and_opt_in(capsys, tmp_path):
    per_class = [60] * 10
    per_class[3] = 12
    fake_data.write_cifar(tmp_path, 10, per_class, 2)
    args = ['--data-dir', tmp_path, '--num-max', 20, '--num-max-u', 40, '--imb-ratio-label', 2]
    code, err = run_main(capsys, *args)
    assert_one_line(code, err, 'class 3 has 12 images but the split asks for 55 (15 labeled + 40 unlabeled)',
                    '--allow-short-classes')
    code = train.main([*map(str, args), '--allow-short-classes', '--dry-run'])
    out, err = capsys.readouterr()
    assert code == 0 and 'warning: taking fewer images than asked: class 3 has 12 images' in err
    import json
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary['labeled_per_class'][3] == 12 and summary['unlabeled_per_class'][3] == 0
