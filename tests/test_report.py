"""tools/report.py: tables and plots from run directories (synthetic runs with known numbers,
and one real, very short training run on the digits)."""
import contextlib
import csv
import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import train
from conftest import HANG_LIMIT, ROOT
from dataset.splits import long_tail_counts, order_unlabeled
from methods import default_arch, symmetric_kl
from tools import report
from core.command_line import get_args_parser

EVALUATIONS = 4  # per finished run, evenly spread over its steps

# (method, setting, extra arguments) -> {seed: top-1 at each evaluation}; a shorter list: unfinished.
# Every run follows its method's paper recipe (its launcher, sh/<method>.sh) but for the extra arguments.
SETTINGS = {'consistent': 0, 'uniform': 1, 'reversed': 2}  # their rows of sh/tables.sh (gamma_l 150)
RUNS = {
    ('SimPro', 'consistent', ('--lr', '0.17')): {0: [50, 70, 76, 75], 1: [52, 68, 73, 74], 2: [48, 71, 72, 73.6]},
    ('SimPro', 'reversed', ('--lr', '0.17')): {0: [60, 80, 85, 84], 1: [58, 79, 80, 82], 2: [61, 95]},
    ('SimPro', 'uniform', ('--lr', '0.17')): {0: [70, 85, 92, 93]},
    ('SimPro', 'consistent', ('--lr', '0.03')): {0: [30, 40, 50, 60]},
    ('ACR_d', 'consistent', ('--lr', '0.03')): {0: [40, 60, 70, 71], 1: [42, 61, 69, 70], 2: [41, 59, 71, 72]},
    ('ACR_d', 'reversed', ('--lr', '0.03')): {0: [50, 70, 80, 84], 1: [51, 71, 82, 83], 2: [49, 72, 81, 82]},
    ('FixMatch', 'reversed', ('--lr', '0.03')): {0: [30, 50, 60, 61]},
}


def run_args(method, setting, extra, seed, out):
    """The arguments of the method's launcher on the setting's cifar10 row, with the extra ones."""
    from core.recipes import launcher, launcher_rows
    row = launcher_rows(str(launcher(method)), 'cifar10')[SETTINGS[setting]]
    argv = [*row, '--seed', str(seed), '--out', str(out), *extra]
    if seed == 1:
        argv += ['--device', 'cpu', '--num-workers', '0']  # run-only: must not split the group
    args = vars(get_args_parser().parse_args(argv))
    args.update(arch=default_arch(method, 'cifar10'), img_size=32, aug='cpu', channels_last=False, amp=False)
    return args


def true_prior(args):
    counts = order_unlabeled(long_tail_counts(args['num_max_u'], 10, args['imb_ratio_unlabel']),
                             args['flag_reverse_LT'], args['seed'])
    return np.asarray(counts, np.float64) / sum(counts)


def write_run(directory, args, top1s):
    """args.json and metrics.jsonl as train.py writes them, with the given top-1 trajectory."""
    directory.mkdir(parents=True)
    (directory / 'args.json').write_text(json.dumps(args, indent=2) + '\n')
    truth, lines = true_prior(args), []
    for i, top1 in enumerate(top1s):
        step = (i + 1) * args['total_steps'] // EVALUATIONS
        history = top1s[:i + 1]
        pi_u = kl = None
        if args['version'] != 'FixMatch':
            share = 0.8 * step / args['total_steps']  # the estimate moves from uniform toward the truth
            pi_u = ((1 - share) * np.full(10, 0.1) + share * truth).astype(np.float32)
            kl = symmetric_kl(torch.from_numpy(pi_u), torch.as_tensor(truth))
            pi_u = pi_u.tolist()
        lines.append(json.dumps({
            'step': step, 'epoch': step // args['eval_step'], 'top1': top1, 'top5': 99.0, 'best_top1': max(history),
            'mean20_top1': sum(history[-20:]) / len(history[-20:]),
            'per_class_acc': np.clip(np.linspace(top1 + 15, top1 - 15, 10), 0, 100).tolist(),
            'group_acc': {'many': top1 + 10, 'medium': top1, 'few': top1 - 10}, 'pi_u': pi_u, 'kl_pi_u': kl,
            'loss': 1.0, 'loss_x': 0.5, 'loss_u': 0.5, 'mask_ratio': 0.5, 'pseudo_label_acc': 80.0,
            'lr': 0.01, 'evaluated': 10000, 'seconds': 1.0}))
    (directory / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')


def run_report(argv):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = report.main(argv)
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    """14 synthetic runs under runs/ and the report written from them into out/."""
    root = tmp_path_factory.mktemp('report')
    for (method, setting, extra), seeds in RUNS.items():
        for seed, top1s in seeds.items():
            directory = root / 'runs' / f'{method}_{setting}_lr{extra[1]}' / f'seed{seed}'
            write_run(directory, run_args(method, setting, extra, seed, directory), top1s)
    code, out, err = run_report([str(root / 'runs'), '--out', str(root / 'out')])
    assert code == 0, err
    with open(root / 'out' / 'results.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    return root / 'out', rows, out


def find_row(rows, method, setting, variant=''):
    found = [r for r in rows if (r['method'], r['setting'], r['variant']) == (method, setting, variant)]
    assert len(found) == 1, (method, setting, variant, rows)
    return found[0]


@pytest.mark.slow
def test_results_csv_holds_the_numbers_computed_by_hand(synthetic):
    _, rows, _ = synthetic
    assert list(rows[0]) == list(report.CSV_COLUMNS)
    row = find_row(rows, 'SimPro', 'consistent', 'lr=0.17')
    assert (row['dataset'], row['gamma_l'], row['gamma_u'], row['n_finished'], row['n_unfinished']) == \
        ('cifar10', '150.0', '150.0', '3', '0')
    # final 75, 74, 73.6; best 76, 74, 73.6; last-20 means 67.75, 66.75, 66.15
    final_mean, best_mean, mean20_mean = (75 + 74 + 73.6) / 3, (76 + 74 + 73.6) / 3, (67.75 + 66.75 + 66.15) / 3
    expected = {
        'final_top1_mean': final_mean,
        'final_top1_std': math.sqrt(((75 - final_mean) ** 2 + (74 - final_mean) ** 2 + (73.6 - final_mean) ** 2) / 2),
        'best_top1_mean': best_mean,
        'best_top1_std': math.sqrt(((76 - best_mean) ** 2 + (74 - best_mean) ** 2 + (73.6 - best_mean) ** 2) / 2),
        'mean20_top1_mean': mean20_mean,
        'mean20_top1_std': math.sqrt(((67.75 - mean20_mean) ** 2 + (66.75 - mean20_mean) ** 2
                                      + (66.15 - mean20_mean) ** 2) / 2),
        'paper_top1': 74.2, 'paper_top1_std': 0.9, 'diff_vs_paper': mean20_mean - 74.2}  # the paper's summary
    assert {k: float(row[k]) for k in expected} == {k: round(v, 4) for k, v in expected.items()}
    assert float(row['final_top1_std']) == 0.7211 and float(row['best_top1_mean']) == 74.5333
    assert row['paper_recipe'] == 'True'

    acr = find_row(rows, 'ACR_d', 'reversed')  # ACR_d's groups share their lr: no variant
    # last-20 means 71, 71.75, 71 -> 71.25
    assert (acr['n_finished'], acr['mean20_top1_mean'], acr['final_top1_mean'], acr['final_top1_std'],
            acr['paper_top1'], acr['diff_vs_paper']) == ('3', '71.25', '83.0', '1.0', '83.2', '-11.95')
    assert float(find_row(rows, 'ACR_d', 'consistent')['diff_vs_paper']) == -10.4  # (60.25 + 60.5 + 60.75) / 3 - 70.9

    uniform = find_row(rows, 'SimPro', 'uniform', 'lr=0.17')  # one seed: no std; last-20 mean 85
    assert (uniform['gamma_u'], uniform['n_finished'], uniform['mean20_top1_mean'], uniform['mean20_top1_std'],
            uniform['paper_top1'], uniform['diff_vs_paper']) == ('1.0', '1', '85.0', '', '93.6', '-8.6')
    fixmatch = find_row(rows, 'FixMatch', 'reversed')  # last-20 mean 50.25
    assert (fixmatch['paper_top1'], fixmatch['diff_vs_paper']) == ('59.9', '-9.65')


def test_paper_number_only_beside_runs_of_the_papers_recipe(synthetic):
    _, rows, _ = synthetic
    other_lr = find_row(rows, 'SimPro', 'consistent', 'lr=0.03')  # the paper's split, not its recipe
    assert (other_lr['paper_recipe'], other_lr['paper_top1'], other_lr['diff_vs_paper']) == ('False', '', '')


def test_unfinished_run_is_counted_and_not_averaged(synthetic):
    _, rows, _ = synthetic
    row = find_row(rows, 'SimPro', 'reversed', 'lr=0.17')
    assert (row['n_finished'], row['n_unfinished']) == ('2', '1')
    # seeds 0 and 1 only (final 84 and 82; best 85 and 82; last-20 means 77.25, 74.75): the unfinished
    # seed's 95 is left out
    assert (row['final_top1_mean'], row['final_top1_std']) == ('83.0', str(round(math.sqrt(2), 4)))
    assert (row['best_top1_mean'], row['mean20_top1_mean'], row['paper_top1'], row['diff_vs_paper']) == \
        ('83.5', '76.0', '83.5', '-7.5')


def test_seeds_are_grouped_and_a_different_lr_is_not(synthetic):
    _, rows, _ = synthetic
    assert len(rows) == len(RUNS)  # 15 run directories, 7 groups
    other_lr = find_row(rows, 'SimPro', 'consistent', 'lr=0.03')
    assert (other_lr['n_finished'], other_lr['final_top1_mean']) == ('1', '60.0')
    assert [(r['method'], r['variant'], r['setting']) for r in rows] == [  # the paper's order
        ('FixMatch', '', 'reversed'), ('ACR_d', '', 'consistent'), ('ACR_d', '', 'reversed'),
        ('SimPro', 'lr=0.03', 'consistent'), ('SimPro', 'lr=0.17', 'consistent'), ('SimPro', 'lr=0.17', 'uniform'),
        ('SimPro', 'lr=0.17', 'reversed')]


def test_markdown_has_the_paper_columns_and_cells(synthetic):
    out, _, _ = synthetic
    text = (out / 'results.md').read_text()
    assert '## cifar10, gamma_l = 150' in text
    header = ('| method | consistent (gamma_l=150, gamma_u=150) | uniform (gamma_l=150, gamma_u=1) '
              '| reversed (gamma_l=150, gamma_u=150) |')
    assert text.count(header) == 3  # mean of the last 20 (against the paper), best, final
    assert text.index("### mean top-1 of the last 20 evaluations (the SimPro paper's convention), against the paper") \
        < text.index('### best top-1') \
        < text.index('### final top-1')
    # last-20 means: consistent 67.75, 66.75, 66.15; uniform 85; reversed 77.25, 74.75 (seed 2 unfinished)
    assert ('| SimPro (lr=0.17) | 66.9 ± 0.81 (n=3) [paper 74.2, -7.3] | 85.0 (n=1) [paper 93.6, -8.6] '
            '| 76.0 ± 1.77 (n=2) [paper 83.5, -7.5]; incomplete: 2 of 3 seeds finished |') in text
    assert '| SimPro (lr=0.03) | 45.0 (n=1) [off-recipe] |  |  |' in text
    assert '| SimPro (lr=0.17) | 74.5 ± 1.29 (n=3) |' in text  # best top-1
    assert '| SimPro (lr=0.17) | 74.2 ± 0.72 (n=3) |' in text  # final top-1
    assert 'seed 2: step 21500 of 43000' in text  # the unfinished run is listed


def test_plots_are_real_images(synthetic):
    out, _, stdout = synthetic
    names = sorted(p.name for p in out.glob('*.png'))
    for setting in ('consistent_gl150_gu150', 'reversed_gl150_gu150', 'uniform_gl150_gu1'):
        for kind in ('top1_vs_step', 'kl_vs_step', 'per_class'):
            assert f'{kind}_cifar10_{setting}.png' in names
    priors = [n for n in names if n.startswith('prior_')]
    assert len(priors) == 14  # every run with an estimate pi_u (not FixMatch), the unfinished one too
    assert 'prior_cifar10_SimPro_lr-0.17_reversed_gl150_gu150_seed2.png' in priors
    assert len(names) == 9 + 14
    for name in names:
        assert all(c.isalnum() or c in '._-' for c in name), name
        with Image.open(out / name) as image:
            assert 200 <= image.width <= 3000 and 200 <= image.height <= 3000, (name, image.size)
            colours = image.convert('RGB').getcolors(maxcolors=1 << 20)
            assert len(colours) > 20, name
    last = stdout.strip().splitlines()[-1]
    assert str(out / 'results.csv') in last and str(out / 'results.md') in last and '23 plots' in last
    assert '15 runs in 7 groups, 1 unfinished' in last


@pytest.mark.slow
def test_a_path_without_runs_is_a_one_line_error(tmp_path):
    (tmp_path / 'empty').mkdir()
    result = subprocess.run([sys.executable, '-m', 'tools.report', str(tmp_path / 'empty'), '--out',
                             str(tmp_path / 'out')], cwd=ROOT, capture_output=True, text=True, timeout=HANG_LIMIT)
    assert result.returncode == 2
    assert result.stderr == f'error: no runs (args.json + metrics.jsonl) under {tmp_path / "empty"}\n'
    assert result.stdout == '' and not (tmp_path / 'out').exists()
    code, _, err = run_report([str(tmp_path / 'missing')])
    assert code == 2 and err == f'error: {tmp_path / "missing"} does not exist\n'  # (issue 19)


def test_paper_numbers_apply_only_to_the_paper_split():
    def paper(dataset, method='SimPro', **changes):
        args = {'dataset': dataset, 'num_max': 500, 'num_max_u': 4000, 'imb_ratio_label': 150.0,
                'imb_ratio_unlabel': 150.0, 'flag_reverse_LT': 1, 'img_size': 32, **changes}
        return report.paper_top1(args, method, report.setting_of(args))

    assert paper('cifar10') == (83.5, 0.95) and paper('cifar10', 'FixMatch') == (59.9, 0.82)
    assert paper('cifar10', num_max_u=3000) is None and paper('cifar10', imb_ratio_unlabel=100.0) is None
    assert paper('cifar10', imb_ratio_label=100.0, imb_ratio_unlabel=1.0, flag_reverse_LT=0) == (93.8, 0.10)
    assert paper('cifar100', 'ACR_d', num_max=50, num_max_u=400, imb_ratio_label=20.0, imb_ratio_unlabel=20.0,
                 flag_reverse_LT=4) == (41.1, 0.09)
    assert paper('cifar100', 'FixMatch', num_max=50, num_max_u=400, imb_ratio_label=20.0,
                 imb_ratio_unlabel=20.0) == (36.2, 0.63)  # Table 2, reversed
    assert paper('cifar100', 'DASO', num_max=50, num_max_u=400, imb_ratio_label=20.0, imb_ratio_unlabel=1.0,
                 flag_reverse_LT=0) == (49.4, 0.93)
    assert paper('cifar10', 'CReST+', flag_reverse_LT=3) == (58.5, 0.68) and paper('cifar10', 'ACR') is None
    assert paper('stl10', num_max=450, imb_ratio_label=20.0, imb_ratio_unlabel=1.0, flag_reverse_LT=0) == (82.5, 0.25)
    # STL-10's and ImageNet's "ACR" rows are the full ACR, not ACR-dagger
    assert paper('stl10', 'ACR', num_max=450, imb_ratio_label=10.0) == (83.0, 0.32)
    assert paper('stl10', 'ACR_d', num_max=450, imb_ratio_label=10.0) is None
    assert paper('smallimagenet', 'ACR_d', img_size=64) == (56.1, None)
    assert paper('smallimagenet', 'ACR', img_size=32) == (50.6, None)
    assert paper('smallimagenet', 'CReST+', img_size=32) is None  # only on an imbalanced test set
    assert paper('smallimagenet_1k', num_max=256, num_max_u=1024, imb_ratio_label=256.0, img_size=32) == (19.7, None)
    assert report.setting_of({'dataset': 'stl10', 'imb_ratio_label': 10.0}).label == 'natural (gamma_l=10)'


def test_report_on_a_real_run(tmp_path):
    """A 4-step SimPro run on the digits, reported as train.py left it (reversed: prior known)."""
    out = tmp_path / 'runs' / 'digits_simpro'
    with contextlib.redirect_stdout(io.StringIO()):
        code = train.main(['--dataset', 'digits', '--num-max', '20', '--num-max-u', '120', '--imb-ratio-label', '20',
                           '--imb-ratio-unlabel', '20', '--flag-reverse-LT', '1', '--depth', '10', '--widen-factor',
                           '1', '--total-steps', '4', '--eval-step', '2', '--batch-size', '8', '--mu', '2',
                           '--num-workers', '0', '--device', 'cpu', '--no-progress', '--out', str(out)])
    assert code == 0
    code, stdout, err = run_report([str(tmp_path / 'runs'), '--out', str(tmp_path / 'report')])
    assert code == 0, err
    with open(tmp_path / 'report' / 'results.csv', newline='') as f:
        (row,) = csv.DictReader(f)
    final = json.loads((out / 'metrics.jsonl').read_text().splitlines()[-1])
    assert (row['dataset'], row['method'], row['setting'], row['n_finished'], row['n_unfinished']) == \
        ('digits', 'SimPro', 'reversed', '1', '0')
    assert float(row['final_top1_mean']) == round(final['top1'], 4) and row['paper_top1'] == ''
    # the prior derived from the arguments is the split's: its KL is the one train.py logged
    truth = report.true_unlabeled_prior(json.loads((out / 'args.json').read_text()))
    assert report.symmetric_kl(final['pi_u'], truth) == pytest.approx(final['kl_pi_u'], abs=1e-9)
    names = {p.name for p in (tmp_path / 'report').glob('*.png')}
    assert 'prior_digits_SimPro_reversed_gl20_gu20_seed0.png' in names
    assert {'top1_vs_step_digits_reversed_gl20_gu20.png', 'kl_vs_step_digits_reversed_gl20_gu20.png',
            'per_class_digits_reversed_gl20_gu20.png'} <= names
    assert stdout.strip().splitlines()[-1].startswith('wrote ')


AFTER_THE_PAPER = ('CCL', 'BOAT', 'CPE', 'MetaExpert', 'CPG', 'BaCon')


def test_a_method_after_the_paper_is_marked_not_reported(tmp_path):
    """The methods after the SimPro paper have no number in its tables: their cells say so, each in its
    own row beside the paper's rows; SimPro's beside them has one."""
    for method in (*AFTER_THE_PAPER, 'SimPro'):
        directory = tmp_path / 'runs' / method
        write_run(directory, run_args(method, 'consistent', (), 0, directory), [50.0 + i for i in range(EVALUATIONS)])
    code, _, err = run_report([str(tmp_path / 'runs'), '--out', str(tmp_path / 'out')])
    assert code == 0, err
    text = (tmp_path / 'out' / 'results.md').read_text()
    last20 = text[text.index('against the paper'):text.index('### best top-1')]
    for method in AFTER_THE_PAPER:
        assert f'| {method} | ' in last20 and '[paper: not reported]' in \
            last20.split(f'| {method} | ')[1].splitlines()[0], method
    assert '[paper 74.2,' in last20.split('| SimPro | ')[1].splitlines()[0]
    assert text.count('[paper: not reported]') == len(AFTER_THE_PAPER)  # only beside the paper's own columns


def test_imagenet127_has_a_column_per_test_set_beside_table_3(tmp_path):
    """A run on ImageNet-127 logs its balanced test set at the top level and every val image under
    'imbalanced_test' (every 10 epochs and in the last 20): the report makes one column of each,
    each beside Table 3's block of its test set (SimPro 32x32: 55.7 balanced, 59.1 gamma_t~286)."""
    from core.recipes import launcher, launcher_rows
    directory = tmp_path / 'runs' / 'SimPro_imagenet'
    row = launcher_rows(str(launcher('SimPro')), 'smallimagenet')[0]
    args = vars(get_args_parser().parse_args([*row, '--seed', '0', '--out', str(directory)]))
    args.update(arch='resnet50', aug='cpu', channels_last=False, amp=False)
    directory.mkdir(parents=True)
    (directory / 'args.json').write_text(json.dumps(args))
    epochs = args['total_steps'] // args['eval_step']
    lines, balanced, every = [], [], []
    for epoch in range(1, epochs + 1):
        balanced.append(40 + epoch / epochs * 15)
        record = {'step': epoch * args['eval_step'], 'epoch': epoch, 'top1': balanced[-1], 'top5': 90.0,
                  'best_top1': max(balanced), 'mean20_top1': float(np.mean(balanced[-20:])),
                  'per_class_acc': [50.0] * 127,
                  'pi_u': None, 'kl_pi_u': None, 'loss': 1.0, 'mask_ratio': 0.5}
        if epoch % 10 == 0 or epoch > epochs - 20:
            every.append(45 + epoch / epochs * 15)
            record['imbalanced_test'] = {'top1': every[-1], 'top5': 90.0, 'best_top1': max(every),
                                         'mean20_top1': float(np.mean(every[-20:])), 'per_class_acc': [50.0] * 127,
                                         'group_acc': {}, 'evaluated': 50000}
        lines.append(json.dumps(record))
    (directory / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')
    code, _, err = run_report([str(tmp_path / 'runs'), '--out', str(tmp_path / 'out')])
    assert code == 0, err
    with open(tmp_path / 'out' / 'results.csv', newline='') as f:
        rows = {r['test_set']: r for r in csv.DictReader(f)}
    assert set(rows) == {'', 'imbalanced_test'}
    assert float(rows['']['mean20_top1_mean']) == pytest.approx(np.mean(balanced[-20:]), abs=1e-4)
    assert float(rows['imbalanced_test']['mean20_top1_mean']) == pytest.approx(np.mean(every[-20:]), abs=1e-4)
    assert (rows['']['paper_top1'], rows['imbalanced_test']['paper_top1']) == ('55.7', '59.1')
    assert float(rows['imbalanced_test']['final_top1_mean']) == pytest.approx(every[-1], abs=1e-4)
    text = (tmp_path / 'out' / 'results.md').read_text()
    header = next(line for line in text.splitlines() if line.startswith('| method |'))
    assert header == '| method | natural (img_size=32, test: every val image, gamma_t~286) | natural (img_size=32) |'


def test_usb_protocol_runs_are_compared_with_usbs_table_by_their_best(tmp_path):
    """A run of FixMatch's USB protocol row (CIFAR-10 N1 1500, gamma 100, reversed: USB's gamma_u -100)
    stands beside USB's published 69.95 in the best-over-training table and beside nothing in the
    SimPro paper's; one of the same split trained otherwise is [off-recipe] there; results.csv holds
    both conventions."""
    from core.recipes import launcher, launcher_rows
    row = launcher_rows(str(launcher('FixMatch')), 'cifar10')[21]
    assert '--randaugment' in row and 'usb' in row  # (the row of USB's protocol)
    best = 73.45
    for name, extra in (('usb', ()), ('other', ('--lr', '0.05'))):
        directory = tmp_path / 'runs' / name
        args = vars(get_args_parser().parse_args([*row, '--seed', '0', '--out', str(directory), *extra]))
        args.update(img_size=32, aug='cpu', channels_last=False, amp=False)
        write_run(directory, args, [50.0, best, 70.0, 71.0])
    code, _, err = run_report([str(tmp_path / 'runs'), '--out', str(tmp_path / 'out')])
    assert code == 0, err
    text = (tmp_path / 'out' / 'results.md').read_text()
    best_table = text[text.index("### best top-1 over training (USB's convention)"):text.index('### final top-1')]
    assert f'{best:.1f} (n=1) [USB 70.0, {report._signed(best - 69.95)}]' in best_table
    assert best_table.count('[off-recipe]') == 1 and '[USB 70' not in text[:text.index('### best top-1')]
    with open(tmp_path / 'out' / 'results.csv', newline='') as f:
        rows = {r['variant']: r for r in csv.DictReader(f)}
    usb = next(r for r in rows.values() if r['usb_recipe'] == 'True')
    assert (float(usb['usb_top1']), float(usb['usb_top1_std'])) == (69.95, 1.18)
    assert float(usb['best_diff_vs_usb']) == pytest.approx(best - 69.95, abs=1e-4) and usb['paper_top1'] == ''
    assert float(usb['mean20_top1_mean']) == pytest.approx(np.mean([50.0, best, 70.0, 71.0]), abs=1e-4)


def test_an_unwritable_home_gives_no_matplotlib_warning(tmp_path):
    """With HOME where nothing can be written (here a file), drawing a plot through tools.report prints
    nothing on stderr (matplotlib used to warn in two lines that it made a temporary cache)."""
    import os
    import subprocess
    import sys
    from conftest import ROOT
    home = tmp_path / 'home'
    home.write_text('')
    env = {k: v for k, v in os.environ.items() if k not in ('MPLCONFIGDIR', 'XDG_CONFIG_HOME', 'XDG_CACHE_HOME')}
    code = f'import tools.report as r; r.plt.plot([0, 1]); r.plt.savefig({str(tmp_path / "p.png")!r})'
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                            env={**env, 'HOME': str(home)})
    assert (result.returncode, result.stderr) == (0, '') and (tmp_path / 'p.png').exists()
    control = subprocess.run([sys.executable, '-c', 'import matplotlib.pyplot'], capture_output=True, text=True,
                             env={**env, 'HOME': str(home)})
    assert 'matplotlib' in control.stderr.lower()  # (what the test guards against, without tools.report)


def test_an_out_that_is_a_file_is_one_line_before_the_runs_are_read(tmp_path):
    (tmp_path / 'taken').write_text('kept\n')
    code, out, err = run_report([str(tmp_path / 'no-runs-here'), '--out', str(tmp_path / 'taken')])
    assert (code, out, err) == (2, '', f'error: --out {tmp_path / "taken"} is a file; choose a folder\n')
    assert (tmp_path / 'taken').read_text() == 'kept\n'


def test_a_cpe_run_of_a_usb_row_stands_beside_its_released_runs(tmp_path):
    """CPE is not in USB's table; its own released runs of the protocol are (N1 500, gamma 100 consistent: the
    mean best of its three logs, 80.65 ± 0.99): a run of that row stands beside them."""
    from core.recipes import launcher, launcher_rows
    row = launcher_rows(str(launcher('CPE')), 'cifar10')[23]
    directory = tmp_path / 'runs' / 'cpe'
    args = vars(get_args_parser().parse_args([*row, '--seed', '0', '--out', str(directory)]))
    args.update(arch=default_arch('CPE', 'cifar10'), img_size=32, aug='cpu', channels_last=False, amp=False)
    write_run(directory, args, [50.0, 81.0, 70.0, 71.0])
    code, _, err = run_report([str(tmp_path / 'runs'), '--out', str(tmp_path / 'out')])
    assert code == 0, err
    with open(tmp_path / 'out' / 'results.csv', newline='') as f:
        (result,) = csv.DictReader(f)
    assert (result['method'], float(result['usb_top1']), float(result['usb_top1_std'])) == ('CPE', 80.65, 0.99)
    assert '81.0 (n=1) [USB 80.7, +0.3]' in (tmp_path / 'out' / 'results.md').read_text()  # (81.0 - 80.65)
