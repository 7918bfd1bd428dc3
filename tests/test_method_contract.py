"""The method contract as the loop uses it (methods/base.py): the loop names no method and asks no
method what it has; a flag belongs to the methods that read it; a run stores, compares and resumes
the settings it reads; a launcher without a recipe for a dataset says so."""
import ast
import json
import re
import shutil
import subprocess

import pytest
import torch

import methods
import train
from conftest import ROOT
from core.recipes import recipe
from methods.base import Method
from models import NetworkOutput
from test_errors import assert_one_line
from test_resume import Interrupted, crash_after_checkpoint, final_state, run
from core.command_line import get_args_parser


def test_the_loop_names_no_method_and_asks_none_what_it_has():
    source = (ROOT / 'train.py').read_text()
    calls = [node.func.id for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)]
    assert 'getattr' not in calls and 'hasattr' not in calls
    named = [name for name in methods.METHODS if re.search(rf'(?<![\w-]){re.escape(name)}(?![\w+])', source)]
    assert named == []


def test_every_method_is_a_method_and_every_member_has_a_default():
    assert all(issubclass(m, Method) for m in methods.METHODS.values())
    base = Method(None, None)
    assert base.unlabeled_prior() is None and base.metrics() == {} and base.generation_starts == ()
    logits = torch.zeros(2, 3)
    assert base.eval_logits(NetworkOutput(logits, torch.ones(2, 3))) is logits and base.training_data('data') == 'data'
    assert base.stage_starts == () and base.eval_network('network') == 'network'
    assert base.view_kinds() == (('weak',), ('weak', 'strong'))
    with pytest.raises(NotImplementedError):
        base.loss(None)


@pytest.mark.parametrize('dest', sorted(methods.flag_readers()))
def test_a_flag_of_other_methods_is_one_line(capsys, tmp_path, dest):
    flag, readers = methods.flag_readers()[dest]
    others = [name for name in methods.METHODS if name not in readers]
    if not others:
        pytest.skip(f'{flag.name} is read by every method')
    switch = 'nargs' not in flag.options and flag.options.get('action') is not None  # (a flag without value)
    argv = [flag.name] if switch else [flag.name, str(flag.options.get('choices', ['1'])[0])]
    code = train.main(['--version', others[0], *argv, '--data-dir', str(tmp_path / 'nothing')])
    owner = f'a {readers[0]} flag' if len(readers) == 1 else f'a flag of {", ".join(readers[:-1])} and {readers[-1]}'
    assert_one_line(code, capsys.readouterr().err, f'{flag.name} is {owner}; --version {others[0]} does not read it')


def test_a_run_stores_only_what_it_reads(small_cifar10_root, tmp_path):
    assert run(small_cifar10_root, tmp_path, '--total-steps', 2) == 0
    stored = json.loads((tmp_path / 'args.json').read_text())
    assert {'tau', 'ema_u', 'threshold', 'lr'} <= set(stored)
    assert not set(stored) & {'dist_temp', 'tau1', 'generations', 'anchor_estimate'}
    assert torch.load(tmp_path / 'checkpoint.pt', weights_only=False)['args'] == stored


def forget(out, dest):
    """Make the run in `out` look written before the flag `dest` existed."""
    for name in ('checkpoint.pt', 'checkpoint.prev.pt'):
        if (out / name).exists():
            state = torch.load(out / name, weights_only=False)
            del state['args'][dest]
            torch.save(state, out / name)
    stored = json.loads((out / 'args.json').read_text())
    del stored[dest]
    (out / 'args.json').write_text(json.dumps(stored))


def test_a_checkpoint_older_than_a_flag_resumes_with_its_default(small_cifar10_root, tmp_path, monkeypatch, capsys):
    assert run(small_cifar10_root, tmp_path / 'whole') == 0
    crash_after_checkpoint(monkeypatch, step=2)
    with pytest.raises(Interrupted):
        run(small_cifar10_root, tmp_path / 'split')
    monkeypatch.undo()
    forget(tmp_path / 'split', 'tau')
    assert run(small_cifar10_root, tmp_path / 'split', '--resume', 'auto', '--tau', 2) == 2
    assert_one_line(2, capsys.readouterr().err, '--tau 2.0 (the checkpoint predates this flag; its run had the '
                                                'default, 1.0)')
    assert run(small_cifar10_root, tmp_path / 'split', '--resume', 'auto') == 0
    log = (tmp_path / 'split' / 'log.txt').read_text()
    assert log.count('note: --tau: the checkpoint predates this flag; it resumes with its default, 1.0') == 1
    assert final_state(tmp_path / 'split')[0] == final_state(tmp_path / 'whole')[0]


def test_a_launcher_without_a_recipe_for_a_dataset_refuses_it(tmp_path):
    """A dataset of sh/tables.sh that a launcher's case lacks never runs train.py's defaults."""
    shutil.copytree(ROOT / 'sh', tmp_path / 'sh')
    tables = tmp_path / 'sh' / 'tables.sh'
    tables.write_text(tables.read_text().replace('    digits)  #', '    digits|digits2)  #'))
    result = subprocess.run(['bash', str(tmp_path / 'sh' / 'SimPro.sh'), 'digits2', '0'], capture_output=True,
                            text=True, env={'PYTHON': 'false', 'PATH': '/usr/bin:/bin'})
    assert result.returncode == 2 and result.stdout == ''
    assert result.stderr == 'error: SimPro.sh has no recipe for digits2; add one to its case\n'


def test_no_recipe_is_known_where_the_launcher_has_none(monkeypatch):
    from seventh_method.fixmatch_da import FixMatchDA
    monkeypatch.setitem(methods.METHODS, 'FixMatchDA', FixMatchDA)
    parser = get_args_parser()
    settings = vars(parser.parse_args(['--version', 'FixMatchDA', '--dataset', 'stl10']))
    assert recipe(settings, parser) is None
    settings = vars(parser.parse_args(['--version', 'FixMatchDA', '--dataset', 'digits', '--num-max', '20',
                                       '--num-max-u', '120', '--imb-ratio-label', '20', '--imb-ratio-unlabel', '20']))
    assert recipe(settings, parser).where == 'tests/seventh_method/FixMatchDA.sh digits 0'


def test_every_methods_views_have_names_a_step_can_carry():
    """A view's name is an identifier that no attribute of a step's side already has, its kind one
    the batches can make; a view read by a name the method did not list is an error naming the views."""
    from dataset.augment import VIEW_KINDS
    from methods.base import Views
    reserved = set(vars(Views(('weak',), None, 0, 1))) | {'every'}
    for name, method in methods.METHODS.items():
        for views in (method.labeled_views, method.unlabeled_views):
            assert all(view.isidentifier() and view not in reserved for view in views), name
            assert set(views.values()) <= set(VIEW_KINDS), name
    side = Views(('weak', 'strong'), torch.arange(6), 2, 2)
    assert side.strong.tolist() == [4, 5] and side.every.tolist() == [2, 3, 4, 5]
    with pytest.raises(AttributeError, match="no view 'strong2'; the views are weak, strong"):
        side.strong2
