"""What a new user meets first: the defaults and --help, the paper's setting names everywhere, the
output folder names, the note of a run off its recipe, and a small fake dataset for trials."""
import subprocess
import sys

import pytest

import train
from conftest import HANG_LIMIT, ROOT
from dataset.splits import setting_name
from tools import fake_data, report
from core.recipes import off_recipe, recipe
from core.run_folder import default_out_dir as out_dir
from dataset.data import DATASETS
from core.command_line import get_args_parser


def parse(*argv):
    args = get_args_parser().parse_args(list(map(str, argv)))
    args.arch = args.arch or DATASETS[args.dataset].arch
    args.img_size = args.img_size or 32
    return args


def default_out_dir(args):
    """The folder train.py gives a run without --out."""
    expected = recipe(vars(args), get_args_parser())
    return out_dir(args, on_recipe=expected is not None and off_recipe(vars(args), expected) == [])


def test_defaults_are_the_original_parsers():
    args = get_args_parser().parse_args([])
    assert (args.tau, args.ema_u) == (1.0, 0.9)                   # SimPro/train.py's parser
    assert (args.lr, args.total_steps, args.mu, args.batch_size, args.threshold) == (0.03, 250000, 1, 64, 0.95)


def test_help_says_the_recipes_are_the_launchers_and_shows_useful_defaults_only():
    text = get_args_parser().format_help()
    assert "The paper's recipes are the launchers: bash sh/SimPro.sh <dataset> <row>" in ' '.join(text.split())
    assert '(default: None)' not in text and '(default: False)' not in text
    assert '(default: 0.03)' in text                              # --lr
    assert "folder to write results.csv" in ' '.join(report.get_args_parser().format_help().split())
    assert 'default: ./report' in ' '.join(report.get_args_parser().format_help().split())


@pytest.mark.parametrize('gamma_u,mode,name', [(150, 0, 'consistent'), (1, 0, 'uniform'), (1, 1, 'uniform'),
                                               (150, 1, 'reversed'), (150, 2, 'shuffled'), (150, 3, 'middle'),
                                               (150, 4, 'head-tail')])
def test_the_papers_setting_names(gamma_u, mode, name):
    assert setting_name(gamma_u, mode) == name
    args = {'dataset': 'cifar10', 'imb_ratio_label': 150, 'imb_ratio_unlabel': gamma_u, 'flag_reverse_LT': mode}
    assert report.setting_of(args).name == name


def test_dry_run_names_the_uniform_setting(capsys, small_cifar10_root):
    code = train.main(['--data-dir', str(small_cifar10_root), '--num-max', '20', '--num-max-u', '30',
                       '--imb-ratio-label', '2', '--imb-ratio-unlabel', '1', '--dry-run'])
    out = capsys.readouterr().out
    assert code == 0 and 'unlabeled uniform;' in out and '"unlabeled_mode": "uniform"' in out


def test_output_folders_are_short_unique_and_named_by_the_setting():
    recipe = ['--num-max', 500, '--num-max-u', 4000, '--imb-ratio-label', 150, '--lr', 0.17, '--total-steps', 43000,
              '--mu', 8, '--tau', 2, '--ema-u', 0.9]
    paper_run = parse(*recipe, '--imb-ratio-unlabel', 150, '--flag-reverse-LT', 1)
    assert str(default_out_dir(paper_run)) == 'result/cifar10/reversed_gl150/SimPro_seed0'
    assert str(default_out_dir(parse(*recipe, '--imb-ratio-unlabel', 1, '--seed', 2))) == \
        'result/cifar10/uniform_gl150/SimPro_seed2'
    assert str(default_out_dir(parse(*recipe, '--imb-ratio-unlabel', 120))) == \
        'result/cifar10/consistent_gl150_gu120/SimPro_seed0'
    # off the recipe: a digest of the settings keeps different runs apart
    other_lr, other_wd = (default_out_dir(parse(*recipe, '--imb-ratio-unlabel', 150, '--flag-reverse-LT', 1, flag, v))
                          for flag, v in (('--lr', 0.1), ('--wdecay', 1e-4)))
    assert other_lr.parent == other_wd.parent == default_out_dir(paper_run).parent
    assert other_lr.name.startswith('SimPro-') and other_lr.name.endswith('_seed0') and other_lr != other_wd
    assert len(str(other_lr)) <= 60  # was about 150 characters
    # arguments that do not change what is learned do not change the folder
    assert default_out_dir(parse(*recipe, '--num-workers', 0, '--device', 'cpu')) == default_out_dir(parse(*recipe))
    assert str(default_out_dir(parse('--dataset', 'smallimagenet', '--img-size', 64, '--lr', 0.01,
                                     '--total-steps', 250000, '--batch-size', 32, '--mu', 2, '--threshold', 0.2))) \
        == 'result/smallimagenet/64px/SimPro_seed0'


def test_fake_data_small_writes_a_small_test_set_that_the_loaders_read(capsys, tmp_path):
    fake_data.main([str(tmp_path), 'cifar10', '--small'])
    capsys.readouterr()
    code = train.main(['--data-dir', str(tmp_path), '--num-max', '500', '--num-max-u', '4000',
                       '--imb-ratio-label', '150', '--imb-ratio-unlabel', '150', '--dry-run'])
    out = capsys.readouterr().out
    assert code == 0 and '"num_test": 200' in out and '"test_per_class": [20, 20, 20' in out


@pytest.mark.slow
def test_a_run_off_its_recipe_says_so_first(tmp_path, small_cifar10_root):
    out = tmp_path / 'run'
    result = subprocess.run([sys.executable, 'train.py', '--data-dir', str(small_cifar10_root), '--num-max', '20',
                             '--num-max-u', '30', '--depth', '10', '--widen-factor', '1', '--total-steps', '2',
                             '--eval-step', '2', '--batch-size', '4', '--mu', '1', '--num-workers', '0',
                             '--device', 'cpu', '--no-progress', '--out', str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=HANG_LIMIT)
    assert result.returncode == 0, result.stderr
    first = (out / 'log.txt').read_text().splitlines()[0]
    assert 'note: SimPro on cifar10 runs off its paper recipe (sh/SimPro.sh): ' in first
    assert '--lr 0.03 (recipe: 0.17)' in first and '--total-steps 2 (recipe: 43000)' in first
    assert '--num-max 20 (recipe: 500)' in first and '--tau' in first
