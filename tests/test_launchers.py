"""sh/SimPro.sh and sh/ACR_d.sh: the tables of the paper (sh/tables.sh), overrides, bad input, real runs."""
import json
import subprocess

import pytest

from conftest import ROOT
from test_dry_run import CIFAR10_ROWS, CIFAR100_ROWS
from core.command_line import get_args_parser
from dataset.data import DATASETS

SIMPRO = {  # LeapLabTHU/SimPro sh/SimPro.sh: lr, steps, batch, mu, tau, threshold, ema_u
    'cifar10': (0.17, 43000, 64, 8, 2.0, 0.95, 0.9), 'cifar100': (0.17, 43000, 64, 8, 1.0, 0.2, 0.9),
    'stl10': (0.17, 43000, 64, 16, 2.0, 0.95, 0.9), 'smallimagenet': (0.01, 250000, 32, 2, 1.0, 0.2, 0.9),
    'smallimagenet_1k': (0.01, 250000, 32, 2, 1.0, 0.2, 0.9)}
ROWS = {  # dataset -> [(N, M, gamma_l, gamma_u, mode, image size)]
    'cifar10': [(500, 4000, gl, gu, md, None) for gl, gu, md in CIFAR10_ROWS],  # None: the dataset's size, 32
    'cifar100': [(50, 400, gl, gu, md, None) for gl, gu, md in CIFAR100_ROWS],
    'stl10': [(450, 100000, 10, 1, 0, None), (450, 100000, 20, 1, 0, None)],
    'smallimagenet': [(28000, 250000, 286, 286, 0, 32), (28000, 250000, 286, 286, 0, 64)],
    'smallimagenet_1k': [(256, 1024, 256, 256, 0, 32), (256, 1024, 256, 256, 0, 64)],
    'digits': [(20, 120, 20, gu, mode, None) for gu, mode in ((20, 0), (1, 0), (20, 1), (20, 3), (20, 4))]}  # 16
SCRIPTS = ('SimPro.sh', 'ACR_d.sh', 'FixMatch.sh')


@pytest.fixture(scope='module')
def echo_python(tmp_path_factory):
    """A stand-in for python that prints the arguments it was given, one per line."""
    path = tmp_path_factory.mktemp('bin') / 'echo-python'
    path.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    path.chmod(0o755)
    return path


def launch(script, *argv, python=None, **environment):
    import os
    env = {**os.environ, **environment}
    if python:
        env['PYTHON'] = str(python)
    return subprocess.run(['bash', f'sh/{script}', *map(str, argv)], cwd=ROOT, capture_output=True, text=True,
                          env=env)


def launched_args(echo_python, script, *argv):
    result = launch(script, *argv, python=echo_python)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith('+ ') and lines[1] == 'train.py'
    return get_args_parser().parse_args(lines[2:])


def recipe(args, script):
    """The hyper-parameters a launcher passed, in the original launcher's order."""
    if script == 'SimPro.sh':
        return args.lr, args.total_steps, args.batch_size, args.mu, args.tau, args.threshold, args.ema_u
    if script == 'ACR_d.sh':
        return (args.lr, args.total_steps, args.batch_size, args.mu, args.tau1, args.tau12, args.tau2,
                args.threshold, args.ema_u, args.est_epoch)
    return args.lr, args.total_steps, args.batch_size, args.mu, args.threshold


SPLIT = ('num_max', 'num_max_u', 'imb_ratio_label', 'imb_ratio_unlabel', 'flag_reverse_LT')
# a launcher run of a few seconds: small batches, no loader processes, a WRN-10-1
SMALL_RUN = ('--batch-size', 4, '--mu', 2, '--num-workers', 0, '--depth', 10, '--widen-factor', 1)


def row_split(dataset, *values):
    """The values of SPLIT a launcher gives for a row of `dataset` (`values` in SPLIT's order): the
    split settings the dataset does not use are not passed (train.py refuses them), so they keep
    their defaults."""
    defaults = vars(get_args_parser().parse_args([]))
    return tuple(defaults[k] if k in DATASETS[dataset].unused else v for k, v in zip(SPLIT, values))


def assert_row(args, script, dataset, n, m, gamma_l, gamma_u, mode, size):
    """A launcher passed the table row's split (what the dataset reads of it), seed 0 and its own method."""
    assert (args.dataset, *(getattr(args, k) for k in SPLIT), args.img_size, args.seed) == \
        (dataset, *row_split(dataset, n, m, gamma_l, gamma_u, mode), size, 0)
    assert args.version == script[:-3]


EXPECTED = {'ACR_d.sh': (0.03, 250000, 64, 1, 2, 2, 2, 0.95, 0.99, 5)}
DIGITS = {'SimPro.sh': (0.1, 1200, 8, 6, 2.0, 0.95, 0.9), 'ACR_d.sh': (0.1, 1200, 8, 6, 2, 2, 2, 0.95, 0.99, 5),
          'FixMatch.sh': (0.1, 1200, 8, 6, 0.95)}


@pytest.mark.parametrize('dataset', list(ROWS))
def test_every_row_of_every_launcher(echo_python, dataset):
    for index, (n, m, gl, gu, mode, size) in enumerate(ROWS[dataset]):
        for script in SCRIPTS:
            args = launched_args(echo_python, script, dataset, index)
            assert_row(args, script, dataset, n, m, gl, gu, mode, size)
            if dataset == 'digits':  # one short CPU recipe for every method
                assert recipe(args, script) == DIGITS[script]
                assert (args.depth, args.widen_factor, args.bn_momentum, args.eval_step, args.ema_decay,
                        args.num_workers) == (10, 1, 0.1, 40, 0.99, 0)
            elif script == 'FixMatch.sh' and dataset in ('cifar10', 'cifar100', 'stl10'):  # DASO's FixMatch
                assert recipe(args, script) == (0.03, 250000, 64, 2, 0.95)
                assert (args.lr_schedule, args.wdecay_all, args.ema_warmup, args.bn_momentum, args.eval_step,
                        args.ema_decay) == ('constant', True, True, 0.1, 500, 0.999)
            elif script == 'FixMatch.sh':  # ImageNet: CoSSL's FixMatch
                assert recipe(args, script) == (0.002, 250000, 64, 1, 0.95)
                assert (args.optimizer, args.lr_schedule, args.eval_step, args.ema_decay) == ('adam', 'constant', 500,
                                                                                              0.999)
            else:
                assert recipe(args, script) == (SIMPRO[dataset] if script == 'SimPro.sh' else EXPECTED[script])
                assert (args.depth, args.bn_momentum, args.eval_step, args.ema_decay) == (None, None, 500, 0.999)
                assert (args.lr_schedule, args.wdecay_all, args.ema_warmup) == ('cosine', False, False)


def test_torchrun_only_when_asked(echo_python):
    result = launch('SimPro.sh', 'cifar10', 0, python=echo_python, NPROC='4', NNODES='2', NODE_RANK='1',
                    MASTER_ADDR='10.1.2.3', MASTER_PORT='1234')
    lines = result.stdout.splitlines()[1:]
    assert lines[:13] == ['-m', 'torch.distributed.run', '--nproc_per_node', '4', '--nnodes', '2', '--node_rank', '1',
                          '--master_addr', '10.1.2.3', '--master_port', '1234', 'train.py']
    assert get_args_parser().parse_args(lines[13:]).version == 'SimPro'
    plain = launch('SimPro.sh', 'cifar10', 0, python=echo_python, NPROC='1').stdout.splitlines()
    assert plain[1] == 'train.py'


def test_extra_arguments_override_the_table(echo_python):
    args = launched_args(echo_python, 'SimPro.sh', 'cifar10', 2, '--lr', 0.5, '--seed', 2, '--mu', 3)
    assert (args.lr, args.seed, args.mu, args.flag_reverse_LT) == (0.5, 2, 3, 1)


@pytest.mark.parametrize('script', SCRIPTS)
def test_bad_dataset_and_index(script):
    result = launch(script, 'mnist', 0)
    assert result.returncode != 0 and "unknown dataset 'mnist'" in result.stderr and 'cifar100' in result.stderr
    result = launch(script, 'cifar100', 23)
    assert result.returncode != 0 and "index '23' is not a row of cifar100" in result.stderr
    assert '10: gamma_l=20 gamma_u=20 shuffled' in result.stderr
    assert '13: USB protocol: N1=150 M1=300, gamma_l=15 gamma_u=15 consistent' in result.stderr
    assert '22: CPG protocol: N1=50 M1=450, gamma_l=20 gamma_u=20 seed-shuffled (its random)' in result.stderr
    result = launch(script, 'smallimagenet')
    assert result.returncode != 0 and '1: 64x64' in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize('script', ['SimPro.sh', 'ACR_d.sh'])
def test_short_run_writes_metrics_and_checkpoints(cifar10_launcher_root, tmp_path, script):
    out = tmp_path / 'run'
    result = launch(script, 'cifar10', 3, '--data-dir', cifar10_launcher_root, '--total-steps', 40,
                    '--eval-step', 20, '--batch-size', 4, '--mu', 2, '--num-workers', 0, '--depth', 10,
                    '--widen-factor', 1, '--out', out)  # (a WRN-10-1: the run's outputs are the point here)
    assert result.returncode == 0, result.stderr
    assert f'output {out}' in result.stdout
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in records] == [20, 40] and [r['epoch'] for r in records] == [1, 2]
    keys = {'step', 'epoch', 'top1', 'top5', 'best_top1', 'mean20_top1', 'per_class_acc', 'group_acc', 'pi_u',
            'kl_pi_u', 'mask_ratio', 'pseudo_label_acc', 'lr', 'loss', 'loss_x', 'loss_u', 'seconds'}
    for r in records:
        assert keys <= set(r)
        assert abs(sum(r['pi_u']) - 1) < 1e-5 and len(r['per_class_acc']) == 10
        assert set(r['group_acc']) == {'many', 'medium', 'few'} and r['evaluated'] == 200
        assert r['kl_pi_u'] is not None and r['kl_pi_u'] >= 0
    assert records[1]['best_top1'] == max(r['top1'] for r in records)
    assert (out / 'checkpoint.pt').is_file() and (out / 'best.pt').is_file()
    assert json.loads((out / 'args.json').read_text())['version'] == script[:-3]
    assert 'epoch 2 step 40' in (out / 'log.txt').read_text()


@pytest.mark.parametrize('script', [*SCRIPTS, 'ACR.sh', 'DASO.sh', 'CReST+.sh'])
@pytest.mark.parametrize('dataset,index', [(d, 0) for d in ROWS] + [('cifar10', 2), ('cifar10', 10)])
def test_launchers_run_the_recipes_the_report_and_log_compare_with(echo_python, script, dataset, index):
    """core/recipes.py (what tools.report and a run's first log line compare with) equals the launchers."""
    from core.recipes import off_recipe, recipe
    args = launched_args(echo_python, script, dataset, index)
    expected = recipe(vars(args), get_args_parser())
    assert expected.where == f'sh/{script} {dataset} {index}' and off_recipe(vars(args), expected) == []
    args.lr, args.depth = args.lr * 2, 16
    assert off_recipe(vars(args), expected) == [f'--depth 16 (recipe: {10 if dataset == "digits" else "default"})',
                                      f'--lr {args.lr} (recipe: {args.lr / 2})']


def test_a_row_added_on_one_line_runs_by_its_index(tmp_path, echo_python):
    """README, "Add a setting": one appended line in sh/tables.sh is a new row."""
    import shutil
    shutil.copytree(ROOT / 'sh', tmp_path / 'sh')
    tables = tmp_path / 'sh' / 'tables.sh'
    text = tables.read_text()
    anchor = '      cpg_row 200 5 400 4600   # 37: CPG, random, gamma 200\n'
    assert anchor in text
    tables.write_text(text.replace(anchor, anchor + '      row 200 50 1    # 38: reversed, gamma_l 200, gamma_u 50\n'))
    result = subprocess.run(['bash', str(tmp_path / 'sh' / 'SimPro.sh'), 'cifar10', '38'], capture_output=True,
                            text=True, env={'PYTHON': str(echo_python), 'PATH': '/usr/bin:/bin'})
    args = get_args_parser().parse_args(result.stdout.splitlines()[2:])
    assert (args.imb_ratio_label, args.imb_ratio_unlabel, args.flag_reverse_LT, args.lr) == (200, 50, 1, 0.17)
    listing = subprocess.run(['bash', str(tmp_path / 'sh' / 'SimPro.sh'), 'cifar10', '39'], capture_output=True,
                             text=True).stderr
    assert '38: gamma_l=200 gamma_u=50 reversed' in listing and '1: gamma_l=150 gamma_u=1 uniform' in listing


def test_a_machine_without_python_is_told_to_set_python():
    """On a machine with only python3 the launchers said 'exec: python: not found': now one line
    that names PYTHON, exit 2."""
    import shutil
    result = subprocess.run([shutil.which('bash'), 'sh/SimPro.sh', 'digits', '0'], cwd=ROOT, capture_output=True,
                            text=True, env={'PATH': '/usr/bin:/bin', 'PYTHON': 'no-such-python'})
    assert result.returncode == 2 and result.stderr.count('\n') == 1 and result.stdout == ''
    assert "no 'no-such-python' to run train.py with; set PYTHON" in result.stderr
