"""The rows of USB's long-tailed protocol (sh/tables.sh: usb_row; microsoft/Semi-supervised-learning
config/classic_cv_imb/): every launcher runs them with USB's network, augmentation and budget, their
splits have the per-class counts of USB's make_imbalance_data, and every method dry-runs every row."""
import pytest

from methods import METHODS
from test_dry_run import dry_run
from test_launchers import SPLIT, echo_python, launch, launched_args, row_split  # noqa: F401 (echo_python: a fixture)
from tools import fake_data

# dataset -> [(index, N1, M1, gamma_l, gamma_u, reversed)]: USB's configs, 'ulb_imb_ratio -100' as reversed
USB_ROWS = {'cifar10': [(20, 1500, 3000, 100, 100, 0), (21, 1500, 3000, 100, 100, 1), (22, 1500, 3000, 150, 150, 0),
                        (23, 500, 4000, 100, 100, 0), (24, 500, 4000, 100, 100, 1), (25, 500, 4000, 150, 150, 0)],
            'cifar100': [(11, 150, 300, 10, 10, 0), (12, 150, 300, 10, 10, 1), (13, 150, 300, 15, 15, 0)],
            'stl10': [(2, 150, 100000, 10, 1, 0), (3, 150, 100000, 20, 1, 0)]}
# the per-class counts of USB's make_imbalance_data (semilearn/datasets/utils.py): int(N1 * mu**c), the
# last int(N1 / gamma), reversed for a negative ratio
USB_COUNTS = {(1500, 100): [1500, 899, 539, 323, 193, 116, 69, 41, 25, 15],
              (3000, 100): [3000, 1798, 1078, 646, 387, 232, 139, 83, 50, 30],
              (500, 150): [500, 286, 164, 94, 53, 30, 17, 10, 5, 3],
              (4000, 150): [4000, 2292, 1313, 752, 431, 247, 141, 81, 46, 26],
              (150, 20): [150, 107, 77, 55, 39, 28, 20, 14, 10, 7]}


MU = {'CPG': 7}  # a method's own mu in its USB configs (YaxinHou/CPG config/), else USB's 2
EVALUATION = {'BaCon': 1000}  # a method's own evaluation period (its configs' num_eval_iter), else USB's 1024
NO_RECIPE = {('CPG', 'stl10')}  # (its code has no update schedule there: sh/CPG.sh says so)


@pytest.mark.parametrize('method', list(METHODS))
def test_every_launcher_runs_usbs_protocol_on_its_rows(echo_python, method):  # noqa: F811
    for dataset, rows in USB_ROWS.items():
        for index, n, m, gamma_l, gamma_u, reversed_ in rows:
            if (method, dataset) in NO_RECIPE:
                assert launch(f'{method}.sh', dataset, index).returncode == 2
                continue
            args = launched_args(echo_python, f'{method}.sh', dataset, index)
            assert (args.version, args.dataset, *(getattr(args, k) for k in SPLIT)) == \
                (method, dataset, *row_split(dataset, n, m, gamma_l, gamma_u, reversed_)), (method, dataset, index)
            expected = ('wideresnet_usb', 'usb', EVALUATION.get(method, 1024), 64, MU.get(method, 2), 0.999, 5e-4)
            assert (args.arch, args.randaugment, args.eval_step, args.batch_size, args.mu, args.ema_decay,
                    args.wdecay) == expected, (method, dataset, index)
            assert args.bn_momentum is None and not args.ema_warmup, (method, dataset, index)  # USB's network's own


@pytest.mark.slow
def test_every_method_dry_runs_every_usb_row(capsys, cifar10_launcher_root, cifar100_root, tmp_path, echo_python):  # noqa: F811
    """Each method's launcher arguments of each USB row build their split and network on fake data in
    the official formats, with USB's per-class counts. (A method's network and pool do not change with
    the row: the methods whose unlabeled pool holds the labeled images, and FixMatch, run every row; the
    others their first row of each dataset, whose arguments test_every_launcher_runs_usbs_protocol_on_its_rows
    checks on every row.)"""
    roots = {'cifar10': cifar10_launcher_root, 'cifar100': cifar100_root,
             'stl10': fake_data.write_stl10(tmp_path, train_per_class=150, test_per_class=4, unlabeled=50)}
    for method in METHODS:
        every_row = method == 'FixMatch' or METHODS[method].labeled_in_pool
        for dataset, rows in USB_ROWS.items():
            rows = rows if every_row else rows[:1]
            for index, n, m, gamma_l, gamma_u, reversed_ in rows if (method, dataset) not in NO_RECIPE else ():
                argv = launch(f'{method}.sh', dataset, index, python=echo_python).stdout.splitlines()[2:]
                code, summary, _, err = dry_run(capsys, *argv, '--data-dir', roots[dataset])
                assert code == 0, (method, dataset, index, err)
                assert summary['model'] == 'wideresnet_usb' and summary['config']['randaugment'] == 'usb'
                if (n, gamma_l) in USB_COUNTS:
                    assert summary['labeled_per_class'] == USB_COUNTS[n, gamma_l], (method, dataset, index)
                if dataset != 'stl10' and (m, gamma_u) in USB_COUNTS:
                    counts = USB_COUNTS[m, gamma_u]
                    assert summary['unlabeled_per_class'] == (counts[::-1] if reversed_ else counts)
