"""A seventh method in one file of its own (tests/seventh_method/fixmatch_da.py, with its launcher),
registered with one line: its flag in its own --help group, a bad value in one line, its recipe in
the off-recipe note, a 20-step run that checkpoints and resumes exactly, and tools.report's table.
Nothing else in the project knows of it."""
import json

import pytest
import torch

import train
from methods import METHODS
from seventh_method.fixmatch_da import FixMatchDA
from test_resume import Interrupted, crash_after_checkpoint, final_state
from tools import report
from core.command_line import get_args_parser

ROW = ['--dataset', 'cifar10', '--num-max', 500, '--num-max-u', 4000, '--imb-ratio-label', 150,
       '--imb-ratio-unlabel', 150, '--flag-reverse-LT', 1]  # sh/tables.sh's cifar10 row 2
RECIPE = ['--lr', 0.03, '--total-steps', 250000, '--batch-size', 64, '--mu', 7, '--threshold', 0.95,
          '--da-momentum', 0.999]  # its launcher's cifar10 recipe
SHORT = ['--total-steps', 20, '--eval-step', 5, '--batch-size', 8, '--mu', 2, '--threshold', 0.3, '--depth', 10,
         '--widen-factor', 1, '--num-workers', 0, '--device', 'cpu', '--no-progress']


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(METHODS, 'FixMatchDA', FixMatchDA)  # the one line a new method adds to METHODS


def main(*argv):
    return train.main([str(a) for a in argv])


def test_its_flag_is_in_its_own_help_group(registered, capsys):
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(['--help'])
    help_text = capsys.readouterr().out
    groups = help_text[help_text.index('\noptions:\n'):]  # (after the usage lines)
    group = groups[groups.index('\nFixMatchDA:\n'):]
    assert group.startswith('\nFixMatchDA:\n  read with --version FixMatchDA only\n\n  --da-momentum DA_MOMENTUM')
    assert groups.count('--da-momentum') == 1


def test_a_bad_value_of_its_flag_is_one_line(registered, tmp_path, capsys):
    assert main('--version', 'FixMatchDA', '--da-momentum', 1.5, '--data-dir', tmp_path) == 2
    assert capsys.readouterr().err == 'error: --da-momentum 1.5 is not allowed; use a number in [0, 1)\n'
    assert main('--version', 'SimPro', '--da-momentum', 0.9, '--data-dir', tmp_path) == 2
    assert capsys.readouterr().err == 'error: --da-momentum is a FixMatchDA flag; --version SimPro does not read it\n'


@pytest.mark.slow
def test_it_trains_checkpoints_resumes_exactly_and_its_recipe_drives_the_note(registered, cifar10_launcher_root,
                                                                             tmp_path):
    argv = ['--version', 'FixMatchDA', *ROW, *RECIPE, '--data-dir', cifar10_launcher_root, *SHORT]
    assert main(*argv, '--out', tmp_path / 'whole') == 0
    with pytest.MonkeyPatch.context() as crashing:
        crash_after_checkpoint(crashing, step=10)
        with pytest.raises(Interrupted):
            main(*argv, '--out', tmp_path / 'split')
    assert main(*argv, '--out', tmp_path / 'split', '--resume', 'auto') == 0

    whole, whole_ckpt = final_state(tmp_path / 'whole')
    split, split_ckpt = final_state(tmp_path / 'split')
    assert [r['step'] for r in whole] == [5, 10, 15, 20] and split == whole
    for key in ('model', 'ema', 'method'):
        for name, tensor in whole_ckpt[key].items():
            assert torch.equal(tensor, split_ckpt[key][name]), (key, name)
    assert not torch.equal(whole_ckpt['method']['p_model'], torch.full((10,), 0.1))  # the alignment ran
    assert whole_ckpt['args']['da_momentum'] == 0.999 and 'tau' not in whole_ckpt['args']  # its flags, not others'

    note = (tmp_path / 'whole' / 'log.txt').read_text().splitlines()[0]
    assert note.endswith('note: FixMatchDA on cifar10 runs off its paper recipe (tests/seventh_method/FixMatchDA.sh '
                         'cifar10 2): --depth 10 (recipe: default), --widen-factor 1 (recipe: default), '
                         '--threshold 0.3 (recipe: 0.95), --total-steps 20 (recipe: 250000), '
                         '--eval-step 5 (recipe: 500), '
                         '--batch-size 8 (recipe: 64), --mu 2 (recipe: 7)')

    assert report.main([str(tmp_path / 'whole'), '--out', str(tmp_path / 'report')]) == 0
    rows = (tmp_path / 'report' / 'results.md').read_text()
    assert '| FixMatchDA |' in rows and 'reversed (gamma_l=150, gamma_u=150)' in rows
    assert json.loads((tmp_path / 'whole' / 'args.json').read_text())['version'] == 'FixMatchDA'
