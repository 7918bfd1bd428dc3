"""Bad input: one line on stderr naming the problem and the fix, exit status 2, no traceback."""
import shutil
import subprocess
import sys

import pytest

import methods
import train
from conftest import ROOT
from tools import fake_data


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
    assert_one_line(code, err, str(path), 'dtype int64 and shape (1, 3)', 'expected uint8 rows of shape (N, 3072)')


def test_cifar_labels_out_of_range_name_the_file(capsys, cifar_copy):
    import pickle
    path = cifar_copy / 'cifar-10' / 'cifar-10-batches-py' / 'data_batch_3'
    content = pickle.loads(path.read_bytes(), encoding='latin1')
    content['labels'] = [label + 10 for label in content['labels']]  # a 20-class file's labels
    path.write_bytes(pickle.dumps(content))
    code, err = run_main(capsys, '--data-dir', cifar_copy, '--num-max', 20, '--num-max-u', 30)
    assert_one_line(code, err, f'{path} has labels outside 0..9', 'a 10-class file')


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
    assert_one_line(code, err, f'{flag} 0.5 is not allowed', 'a finite number >= 1')


def test_max_count_too_small_for_ratio(capsys, small_cifar10_root):
    code, err = run_main(capsys, '--data-dir', small_cifar10_root, '--num-max', 10, '--imb-ratio-label', 20)
    assert_one_line(code, err, '--num-max 10 with --imb-ratio-label 20', 'int(10/20) = 0', '--num-max >= 20')


@pytest.mark.parametrize('dataset,size,allowed', [('smallimagenet', 48, '32 or 64'),
                                                  ('smallimagenet_1k', 128, '32 or 64'),
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


# ---------------------------------------------------------------- every numeric flag, checked where it is parsed

BAD_VALUES = [  # (flag, value, what the line must say is allowed)
    ('--batch-size', -2, 'an integer >= 1'), ('--batch-size', 0, 'an integer >= 1'), ('--mu', 0, 'an integer >= 1'),
    ('--eval-step', 0, 'an integer >= 1'), ('--eval-step', -2, 'an integer >= 1'),
    ('--total-steps', 0, 'an integer >= 1'), ('--num-max', 0, 'an integer >= 1'),
    ('--num-max-u', -5, 'an integer >= 1'),
    ('--imb-ratio-label', 'inf', 'a finite number >= 1'), ('--imb-ratio-label', 'nan', 'a finite number >= 1'),
    ('--imb-ratio-unlabel', 'inf', 'a finite number >= 1'), ('--threshold', 1.5, 'a number in [0, 1]'),
    ('--threshold', 'nan', 'a number in [0, 1]'), ('--lr', 0, 'a finite number > 0'),
    ('--lr', 'inf', 'a finite number > 0'), ('--wdecay', -1, 'a finite number >= 0'),
    ('--ema-decay', 2, 'a number in [0, 1]'), ('--ema-u', 3, 'a number in [0, 1]'),
    ('--bn-momentum', -0.1, 'a number in [0, 1]'), ('--tau', 'inf', 'a finite number'),
    ('--tau1', 'nan', 'a finite number'), ('--tau12', '-inf', 'a finite number'), ('--tau2', 'nan', 'a finite number'),
    ('--est-epoch', -1, 'an integer >= 0'), ('--num-workers', -1, 'an integer >= 0'),
    ('--seed', -1, 'an integer in 0..2**32-1'), ('--seed', 2 ** 32, 'an integer in 0..2**32-1'),
    ('--depth', 0, 'an integer >= 1'), ('--widen-factor', 0, 'an integer >= 1'),
]


@pytest.mark.parametrize('flag,value,allowed', BAD_VALUES)
def test_bad_value_is_one_line_before_anything_is_read_or_written(capsys, tmp_path, flag, value, allowed):
    out = tmp_path / 'run'
    readers = methods.flag_readers().get(flag[2:].replace('-', '_'))
    version = readers[1][0] if readers else 'SimPro'  # (a method flag: with a method that reads it)
    code = train.main(['--data-dir', str(tmp_path / 'no-data'), '--out', str(out), '--version', version,
                       f'{flag}={value}'])
    _, err = capsys.readouterr()
    shown = value if isinstance(value, (str, int)) else f'{value:g}'  # (an integer as typed: issue 19)
    assert_one_line(code, err, f'{flag} {shown} is not allowed', allowed)
    assert not out.exists()


@pytest.mark.parametrize('argv,fragments', [
    (['--depth', 12], ['--arch wideresnet --depth 12', '6n+4']),
    (['--arch', 'resnext', '--depth', 5], ['--arch resnext --depth 5', '>= 11']),
    (['--arch', 'resnet50', '--widen-factor', 2], ['--arch resnet50 --widen-factor 2', 'fixed depth and width']),
    (['--device', 'meta'], ['--device meta is not a device to train on', 'cpu, cuda']),
    (['--device', 'gpu0'], ['--device gpu0 is not a device to train on']),
])
def test_bad_network_or_device_is_one_line_before_the_data_is_read(capsys, tmp_path, argv, fragments):
    out = tmp_path / 'run'
    code = train.main(['--data-dir', str(tmp_path / 'no-data'), '--out', str(out), *map(str, argv)])
    _, err = capsys.readouterr()
    assert_one_line(code, err, *fragments)  # not "CIFAR-10 not found": checked before the data
    assert not out.exists()


def test_batch_larger_than_the_labeled_set(capsys, small_cifar10_root, tmp_path):
    out = tmp_path / 'run'
    code = train.main(['--data-dir', str(small_cifar10_root), '--num-max', '20', '--num-max-u', '30',
                       '--batch-size', '5000', '--out', str(out), '--device', 'cpu'])
    _, err = capsys.readouterr()
    assert_one_line(code, err, 'the labeled set has', 'fewer than one batch of 5000', '--batch-size')
    assert not out.exists()


def test_arguments_from_the_shell_never_trace_back(tmp_path):
    result = run_cli('--data-dir', tmp_path, '--batch-size', '-2', '--out', tmp_path / 'run')
    assert result.returncode == 2 and 'Traceback' not in result.stderr and result.stdout == ''
    assert result.stderr.strip() == 'error: --batch-size -2 is not allowed; use an integer >= 1'
    assert not (tmp_path / 'run').exists()


# ---------------------------------------------------------------- files that are not in the official format

def _rewrite(path, change):
    import pickle
    with open(path, 'rb') as f:
        content = pickle.load(f, encoding='latin1')
    change(content)
    path.write_bytes(pickle.dumps(content))


@pytest.mark.parametrize('change,fragments', [
    (lambda c: c.update(labels=[str(v) for v in c['labels']]), ['"labels" as <U1 values', 'integer labels']),
    (lambda c: c.update(labels=[v + 0.5 for v in c['labels']]), ['"labels" as float64 values', 'integer labels']),
    (lambda c: c.update(data=c['data'].astype('float32')), ['dtype float32 and shape (120, 3072)', 'expected uint8']),
    (lambda c: c.update(data=c['data'].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)),
     ['dtype uint8 and shape (120, 32, 32, 3)', 'expected uint8 rows of shape (N, 3072)']),
])
def test_cifar_pickle_not_in_the_official_format(capsys, cifar_copy, change, fragments):
    path = cifar_copy / 'cifar-10' / 'cifar-10-batches-py' / 'data_batch_2'
    _rewrite(path, change)
    before = path.read_bytes()
    code, err = run_main(capsys, '--data-dir', cifar_copy, '--num-max', 20, '--num-max-u', 30)
    assert_one_line(code, err, str(path), *fragments)
    assert path.read_bytes() == before


def test_imagenet_pickle_not_in_the_official_format(capsys, tmp_path):
    fake_data.write_small_imagenet(tmp_path, 127, 32, 3, 1)
    path = tmp_path / 'small_imagenet_127_32' / 'train_data_batch_4'
    _rewrite(path, lambda c: c.update(data=c['data'].astype('float64') / 255))
    code, err = run_main(capsys, '--dataset', 'smallimagenet', '--data-dir', tmp_path)
    assert_one_line(code, err, str(path), 'dtype float64', 'expected uint8 rows of shape (N, 3072)')
    _rewrite(path, lambda c: c.update(data=(c['data'] * 255).astype('uint8').reshape(-1, 3, 32, 32)))
    code, err = run_main(capsys, '--dataset', 'smallimagenet', '--data-dir', tmp_path)
    assert_one_line(code, err, str(path), 'shape (', ', 3, 32, 32)', 'expected uint8 rows of shape (N, 3072)')


@pytest.mark.parametrize('argv', [['--lr', '0'], ['--help'], ['--version', 'SimPro', '--dist-temp', '2']])
def test_a_mistake_is_refused_before_the_compiler_or_torchvision_is_imported(argv):
    """Checking the command line imports torch and the project, not torch.compile's machinery or
    torchvision's model zoo (seconds each): they are imported when a run needs them."""
    probe = ('import sys, train\ntry:\n    code = train.main(sys.argv[1:])\nexcept SystemExit as e:\n'
             '    code = e.code\nprint([m for m in ("torch._dynamo", "torchvision") if m in sys.modules], code)')
    result = subprocess.run([sys.executable, '-c', probe, *argv], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.splitlines()[-1] == f'[] {0 if argv == ["--help"] else 2}', result.stdout + result.stderr


def number_flags():
    """(flag, a --version that reads it) for every float flag of train.py, the methods' included."""
    from core.command_line import get_args_parser
    readers = methods.flag_readers()
    for action in get_args_parser()._actions:
        if action.type is float:
            yield action.option_strings[0], readers[action.dest][1][0] if action.dest in readers else 'SimPro'


@pytest.mark.parametrize('flag,version', list(number_flags()))
def test_no_number_flag_takes_an_infinite_or_undefined_value(capsys, flag, version):
    """inf, -inf and nan are refused for every float flag: by its own rule, else by the one check
    of every number flag (CReST+'s --crest-alpha inf used to train)."""
    for value in ('inf', '-inf', 'nan'):
        code, err = run_main(capsys, '--version', version, f'{flag}={value}')
        assert_one_line(code, err, f'{flag} {float(value):g} is not allowed; use ')


def test_every_entry_point_parses_with_the_one_line_parser():
    """No command builds a plain argparse parser (whose mistakes print a usage block): each uses
    utils.cli.OneLineParser, read from the source of every module."""
    plain = [f'{path.relative_to(ROOT)}:{number}' for path in sorted(ROOT.rglob('*.py'))
             if 'tests' not in path.parts and path.name != 'cli.py'
             for number, line in enumerate(path.read_text().splitlines(), 1) if 'argparse.ArgumentParser(' in line]
    assert plain == []


@pytest.mark.parametrize('command', [['tools.report'], ['dataset.prepare_imagenet127'],
                                     ['dataset.prepare_imagenet127', '--img-size', '48']])
def test_a_command_without_its_arguments_answers_in_one_line(command):
    result = subprocess.run([sys.executable, '-m', *command], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == '' and result.stderr.count('\n') == 1, result.stderr
    assert result.stderr.startswith(f'python -m {command[0]}: error: ')


def test_a_refused_value_left_at_its_default_is_named_as_the_default(capsys):
    """CReST+'s 5 generations do not fit a 2-step run: the line says that 5 is the default and which
    flag changes it; given on the command line, the value is the user's own."""
    code, err = run_main(capsys, '--version', 'CReST+', '--total-steps', '2')
    assert_one_line(code, err, '--generations 5 (its default; pass --generations to change it) is not allowed')
    code, err = run_main(capsys, '--version', 'CReST+', '--total-steps', '2', '--generations', '5')
    assert_one_line(code, err, '--generations 5 is not allowed')
    assert 'default' not in err


@pytest.mark.parametrize('kind', ['fifo', 'folder'])
def test_a_batch_file_that_is_no_regular_file_is_named_so(capsys, cifar_copy, kind):
    """A FIFO (or a folder) where a CIFAR batch file belongs exists: it is reported as no regular
    file, not as missing, and left as it is (a FIFO is never opened: reading it would hang)."""
    import os
    path = cifar_copy / 'cifar-10' / 'cifar-10-batches-py' / 'data_batch_2'
    path.unlink()
    os.mkfifo(path) if kind == 'fifo' else path.mkdir()
    code, err = run_main(capsys, '--data-dir', cifar_copy, '--num-max', 20, '--num-max-u', 30)
    assert_one_line(code, err, f'{path} is not a regular file', 'put the CIFAR-10')
    assert 'not found' not in err and path.exists()


def unread_cases():
    """(configuration flags, a flag the configuration leaves unread) for every setting that
    core.settings.unread_settings names in each kind of configuration: each dataset's unused split
    settings, Adam for every method that has --optimizer, no weight EMA for every method, CReST+'s
    single generation and its alignment turned off."""
    from core.command_line import get_args_parser
    from core.settings import unread_settings
    from dataset.data import DATASETS
    configurations = [['--dataset', name] for name in DATASETS]
    configurations += [['--version', name, '--optimizer', 'adam'] for name, method in methods.METHODS.items()
                       if any(flag.name == '--optimizer' for flag in method.flags)]
    configurations += [['--version', name, '--no-use-ema'] for name in methods.METHODS]
    configurations += [['--version', 'CReST+', '--generations', '1'], ['--version', 'CReST+', '--no-dist-align']]
    for configuration in configurations:
        args = get_args_parser().parse_args(configuration)
        for dest in unread_settings(vars(args)):
            yield configuration, dest


UNREAD_VALUES = {'num_max': '20', 'num_max_u': '30', 'imb_ratio_label': '2', 'imb_ratio_unlabel': '2',
                 'flag_reverse_LT': '1', 'wdecay': '0.001', 'ema_decay': '0.99', 'crest_alpha': '2',
                 'da_t_min': '0.3'}
BOOLEAN_UNREAD = {'nesterov': '--no-nesterov', 'wdecay_all': '--wdecay-all', 'ema_warmup': '--ema-warmup',
                  'download': '--download'}


@pytest.mark.parametrize('configuration,dest', list(unread_cases()))
def test_a_setting_the_run_never_reads_is_refused(capsys, tmp_path, configuration, dest):
    """Given on the command line, a setting that the run's dataset or configuration never reads is
    one line naming it and why, before any data is read (it used to change nothing, silently)."""
    flag = BOOLEAN_UNREAD.get(dest) or f'--{dest.replace("_", "-")}'
    value = [] if dest in BOOLEAN_UNREAD else [UNREAD_VALUES[dest]]
    code, err = run_main(capsys, *configuration, flag, *value, '--data-dir', tmp_path / 'none')
    assert_one_line(code, err, f'error: {flag} is not read: ', '; drop it')


def test_the_kinds_of_unread_settings():
    """What each kind of configuration leaves unread, and what it reads: CoSSL's classifier keeps its
    own weight EMA at --ema-decay without the network's; --ema-warmup, --nesterov are read by default."""
    from core.command_line import get_args_parser
    from core.settings import unread_settings
    unread = lambda *argv: set(unread_settings(vars(get_args_parser().parse_args(list(argv)))))  # noqa: E731
    assert unread('--dataset', 'cifar10') == set()
    assert unread('--dataset', 'stl10') == {'num_max_u', 'imb_ratio_unlabel', 'flag_reverse_LT'}
    assert unread('--dataset', 'smallimagenet') == {'num_max', 'num_max_u', 'imb_ratio_label', 'imb_ratio_unlabel',
                                                    'flag_reverse_LT', 'download'}
    assert unread('--dataset', 'digits') == {'download'}  # (bundled with scikit-learn)
    assert unread('--version', 'FixMatch', '--optimizer', 'adam') == {'wdecay', 'nesterov', 'wdecay_all'}
    assert unread('--version', 'FixMatch', '--optimizer', 'sgd') == set()
    assert unread('--version', 'SimPro', '--no-use-ema') == {'ema_decay', 'ema_warmup'}
    assert unread('--version', 'CoSSL', '--optimizer', 'sgd', '--no-use-ema') == {'ema_warmup'}
    assert unread('--version', 'CoSSL') == {'wdecay', 'nesterov', 'wdecay_all'}  # (its Adam by default)
    assert unread('--version', 'CReST+', '--generations', '1') == {'crest_alpha', 'da_t_min'}
    assert unread('--version', 'CReST+', '--no-dist-align') == {'da_t_min'}


def test_a_setting_the_run_never_reads_is_not_off_its_recipe():
    """FixMatch's CIFAR-10 recipe (SGD, weight decay on every parameter) run with Adam: the run is
    off its recipe by --optimizer only, not by --wdecay-all, which Adam never reads."""
    from core.command_line import get_args_parser
    from core.recipes import off_recipe, recipe
    parser = get_args_parser()
    argv = ['--version', 'FixMatch', '--dataset', 'cifar10', '--imb-ratio-label', '150', '--imb-ratio-unlabel', '150',
            '--lr', '0.03', '--total-steps', '250000', '--batch-size', '64', '--mu', '2', '--lr-schedule', 'constant',
            '--ema-warmup', '--bn-momentum', '0.1', '--threshold', '0.95']
    sgd = vars(parser.parse_args(argv))
    assert off_recipe(sgd, recipe(sgd, parser)) == ['--wdecay-all False (recipe: True)']
    adam = vars(parser.parse_args(argv + ['--optimizer', 'adam']))
    assert off_recipe(adam, recipe(adam, parser)) == ['--optimizer adam (recipe: sgd)']


def test_a_dry_run_names_the_training_flags_it_does_not_read(capsys, small_cifar10_root, tmp_path):
    code = train.main(['--data-dir', str(small_cifar10_root), '--num-max', '20', '--num-max-u', '30', '--dry-run',
                       '--compile', '--out', str(tmp_path / 'out'), '--num-workers', '0'])
    out = capsys.readouterr().out
    assert code == 0 and '  note: --dry-run trains nothing: --num-workers, --out, --compile not read\n' in out
    assert not (tmp_path / 'out').exists()
    assert train.main(['--data-dir', str(small_cifar10_root), '--num-max', '20', '--num-max-u', '30',
                       '--dry-run']) == 0
    assert 'trains nothing' not in capsys.readouterr().out
