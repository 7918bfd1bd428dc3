"""sh/ACR.sh and sh/DASO.sh: every row of the tables with each method's hyper-parameters from its
official configs (Gank0078/ACR train.py, ytaek-oh/daso configs/), DASO's row-dependent T_dist, overrides, bad input
and 40-step runs on a fake CIFAR-10."""
import json

import pytest

import test_launchers
from test_launchers import ROWS, SMALL_RUN, assert_row, launch, launched_args

echo_python = test_launchers.echo_python  # the fixture: a python that prints its arguments

SCRIPTS = ('ACR.sh', 'DASO.sh')


def recipe(args, script):
    if script == 'ACR.sh':
        return (args.lr, args.total_steps, args.batch_size, args.mu, args.tau1, args.tau12, args.tau2,
                args.threshold, args.ema_u, args.est_epoch, args.bn_momentum)
    return (args.lr, args.total_steps, args.batch_size, args.mu, args.threshold, args.lr_schedule, args.wdecay_all,
            args.ema_warmup, args.bn_momentum, args.proto_temp, args.pretrain_steps, args.pl_dist_update_period,
            args.psa_loss_weight, args.queue_max_size)


EXPECTED = {'ACR.sh': (0.03, 250000, 64, 1, 2, 2, 2, 0.95, 0.99, 5, None),
            'DASO.sh': (0.03, 250000, 64, 2, 0.95, 'constant', True, True, 0.1, 0.05, 5000, 100, 1.0, 256)}
DIGITS = {'ACR.sh': (0.1, 1200, 8, 6, 2, 2, 2, 0.95, 0.99, 5, 0.1),
          'DASO.sh': (0.1, 1200, 8, 6, 0.95, 'cosine', False, False, 0.1, 0.05, 240, 40, 1.0, 256)}


def expected_dist_temp(dataset, gamma_l, gamma_u, mode):
    """DASO's configs: 1.5 for CIFAR-10 with the unlabeled distribution equal to the labeled one."""
    return 1.5 if dataset == 'cifar10' and mode == 0 and gamma_l == gamma_u else 0.3


@pytest.mark.parametrize('dataset', list(ROWS))
def test_every_row_of_the_baseline_launchers(echo_python, dataset):
    for index, (n, m, gl, gu, mode, size) in enumerate(ROWS[dataset]):
        for script in SCRIPTS:
            args = launched_args(echo_python, script, dataset, index)
            assert_row(args, script, dataset, n, m, gl, gu, mode, size)
            assert recipe(args, script) == (DIGITS if dataset == 'digits' else EXPECTED)[script]
            if script == 'DASO.sh':
                assert args.dist_temp == expected_dist_temp(dataset, gl, gu, mode), (dataset, index)


def test_dist_temp_is_1_5_only_on_the_consistent_cifar10_rows(echo_python):
    temps = [launched_args(echo_python, 'DASO.sh', 'cifar10', i).dist_temp for i in range(len(ROWS['cifar10']))]
    consistent = [i for i, (_, _, gl, gu, mode, _) in enumerate(ROWS['cifar10']) if mode == 0 and gl == gu]
    assert consistent == [0, 5] and [i for i, t in enumerate(temps) if t == 1.5] == consistent
    assert launched_args(echo_python, 'DASO.sh', 'cifar10', 0, '--dist-temp', 0.7).dist_temp == 0.7  # overridden


@pytest.mark.parametrize('script', SCRIPTS)
def test_bad_dataset_and_index_of_the_baseline_launchers(script):
    result = launch(script, 'mnist', 0)
    assert result.returncode != 0 and "unknown dataset 'mnist'" in result.stderr
    result = launch(script, 'cifar100', 23)
    assert result.returncode != 0 and "index '23' is not a row of cifar100" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize('script,extra', [
    ('ACR.sh', ('--est-epoch', 0, '--threshold', 0.2)),  # confident enough after 20 steps to estimate
    ('DASO.sh', ('--pretrain-steps', 10, '--pl-dist-update-period', 10, '--queue-max-size', 16))])
def test_baseline_short_run_writes_metrics_and_checkpoints(cifar10_launcher_root, tmp_path, script, extra):
    """40 steps of the consistent CIFAR-10 row (index 0): ACR's tau1 and DASO's blending both act."""
    out = tmp_path / 'run'
    result = launch(script, 'cifar10', 0, '--data-dir', cifar10_launcher_root, '--total-steps', 40, '--eval-step', 20,
                    *SMALL_RUN, '--out', out, *extra)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in records] == [20, 40] and [r['epoch'] for r in records] == [1, 2]
    for r in records:
        assert abs(sum(r['pi_u']) - 1) < 1e-5 and r['kl_pi_u'] is not None and r['evaluated'] == 200
    if script == 'ACR.sh':
        assert records[0]['tau1'] == pytest.approx(2 / 3) and records[1]['tau1'] != records[0]['tau1']
        assert set(records[1]['kl_anchors']) == {'consistent', 'uniform', 'reversed'}
    else:
        assert records[0]['loss_align'] > 0 and 'loss_align' in records[1]
    assert (out / 'checkpoint.pt').is_file() and (out / 'best.pt').is_file()
    assert json.loads((out / 'args.json').read_text())['version'] == script[:-3]
