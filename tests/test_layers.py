"""One layer order, no arrow back up (README, "Layout"): every import of every module, read with ast
(those inside functions too), goes to its own layer or one below."""
import ast
from pathlib import Path

import pytest

from conftest import ROOT

# bottom to top: what every layer may use, data and networks, the methods, the loop's library,
# the loop itself, the command-line tools
LAYERS = {'utils': 0, 'dataset': 1, 'models': 1, 'methods': 2, 'core': 3, 'train': 4, 'tools': 5}


def imports(source: str, package: str):
    """(line, top-level package) of every import in `source`, a module of `package`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name.split('.')[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, package if node.level else node.module.split('.')[0]


def upward_imports(source: str, package: str) -> list:
    """'line: package' for each import of a layer above `package`'s."""
    return [f'{line}: {name}' for line, name in imports(source, package)
            if name in LAYERS and LAYERS[name] > LAYERS[package]]


def modules():
    for package in LAYERS:
        path = ROOT / f'{package}.py'
        yield from ([path] if path.is_file() else sorted((ROOT / package).rglob('*.py')))


@pytest.mark.parametrize('path', list(modules()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_layer_above_its_own(path: Path):
    package = path.relative_to(ROOT).parts[0].removesuffix('.py')
    assert upward_imports(path.read_text(), package) == []


def test_the_check_sees_every_kind_of_import():
    """An import back up is caught at module level, inside a function, as `from` and relative."""
    source = 'import torch\nfrom utils import errors\n\ndef f():\n    from methods import METHODS\n    import train\n'
    assert upward_imports(source, 'dataset') == ['5: methods', '6: train']
    assert upward_imports('from .x import y\n', 'models') == []
    assert upward_imports('import tools.report as r\n', 'core') == ['1: tools']


def test_every_package_of_the_project_has_a_layer():
    packages = {p.name for p in ROOT.iterdir() if (p / '__init__.py').is_file()}
    assert packages == set(LAYERS) - {'train'}


def train_attributes(source: str) -> list:
    """'line: name' of every `train.<name>` read and `from train import <name>` in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == 'train':
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.ImportFrom) and node.module == 'train':
            found.extend((node.lineno, alias.name) for alias in node.names)
    return [f'{line}: {name}' for line, name in sorted(found)]


def test_tools_and_tests_take_from_train_only_what_train_defines():
    """train.py is the command line and the loop: a piece it imports from a layer below (the parser,
    the batches, Training) is imported from that layer, never through train."""
    tree = ast.parse((ROOT / 'train.py').read_text())
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assert {'main', 'train', 'learn', 'train_step'} <= defined
    for path in sorted([*(ROOT / 'tools').rglob('*.py'), *(ROOT / 'tests').rglob('*.py')]):
        used = train_attributes(path.read_text())
        assert [u for u in used if u.split(': ')[1] not in defined] == [], path.relative_to(ROOT)


def test_the_train_check_sees_reads_and_imports():
    source = 'import train\ntrain.main([])\nx = train.get_args_parser\nfrom train import make_batches\n'
    assert train_attributes(source) == ['2: main', '3: get_args_parser', '4: make_batches']
