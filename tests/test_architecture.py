"""The package's import directions (docs/design/architecture.md).

Arrows point down: ``tools`` -> ``apis`` -> (``efficiency``, ``results``)
-> ``engine`` -> ``compat`` -> ``checkpoints`` -> (``models``,
``visualization``) -> (``selection``, ``complexity``, ``datasets``).  A
package may import its own modules and those of lower layers, never a
higher one.  The maths (``selection``, ``models/utils``) imports no
MMEngine runner code, and nothing in the package imports ``tools``.
"""
import ast
import os
import os.path as osp
import re
import sys
from typing import Dict, Iterator, List, Set, Tuple

import pytest
from conftest import REPO

PACKAGE = osp.join(REPO, 'mmtrpts')
#: Lowest first.  The package root (``mmtrpts/__init__.py``) may import all.
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ('utils', ),
    ('selection', 'complexity', 'datasets'),
    ('models', 'visualization'),
    ('checkpoints', ),
    ('compat', ),
    ('engine', ),
    ('efficiency', 'results'),
    ('apis', ),
)
LAYER_OF = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
#: Folders whose modules are pure maths: no runner, hook or registry code.
PURE = ('selection', osp.join('models', 'utils'))
RUNNER_MODULES = ('mmengine.runner', 'mmengine.hooks', 'mmengine.model',
                  'mmengine.optim', 'mmengine.registry', 'mmengine.dist',
                  'mmpretrain')


def _modules() -> Iterator[str]:
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith('.py'):
                yield osp.join(folder, name)


def _imports(path: str) -> List[Tuple[str, int]]:
    """Absolute dotted names imported by a module, with line numbers."""
    rel = osp.relpath(path, REPO)[:-3].split(os.sep)
    package = rel[:-1]
    tree = ast.parse(open(path).read(), path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = '.'.join(base +
                                  ([node.module] if node.module else []))
            else:
                module = node.module
            names.append((module, node.lineno))
    return names


def _subpackage(path: str) -> str:
    parts = osp.relpath(path, PACKAGE).split(os.sep)
    return parts[0] if len(parts) > 1 else ''


def _violations() -> Dict[str, Set[str]]:
    found: Dict[str, Set[str]] = {}
    for path in _modules():
        own = _subpackage(path)
        if not own:
            continue  # the package root wires everything up
        for module, line in _imports(path):
            parts = module.split('.')
            if parts[0] == 'tools':
                found.setdefault(path, set()).add(f'{line}: {module}')
            if parts[0] != 'mmtrpts' or len(parts) < 2:
                continue
            target = parts[1]
            if target not in LAYER_OF or target == own:
                continue
            if LAYER_OF[target] >= LAYER_OF[own]:
                found.setdefault(path, set()).add(f'{line}: {module}')
    return found


def test_every_subpackage_has_a_layer():
    folders = {
        name
        for name in os.listdir(PACKAGE)
        if osp.isfile(osp.join(PACKAGE, name, '__init__.py'))
    }
    assert folders == set(LAYER_OF)


def test_imports_point_down():
    violations = {
        osp.relpath(p, REPO): sorted(v)
        for p, v in _violations().items()
    }
    assert violations == {}


@pytest.mark.parametrize('folder', PURE)
def test_maths_imports_no_runner_code(folder):
    bad = []
    for path in _modules():
        if not osp.relpath(path, PACKAGE).startswith(folder + os.sep):
            continue
        for module, line in _imports(path):
            if module.startswith(RUNNER_MODULES) or (
                    module.startswith('mmtrpts.')
                    and module.split('.')[1] not in ('selection', 'models', 'utils')):
                bad.append(f'{osp.relpath(path, REPO)}:{line}: {module}')
    assert bad == []


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The test above can fail: a planted upward import is reported."""
    fake = tmp_path / 'mmtrpts'
    (fake / 'selection').mkdir(parents=True)
    (fake / 'engine').mkdir()
    for pkg in ('selection', 'engine'):
        (fake / pkg / '__init__.py').write_text('')
    (fake / 'selection' / 'bad.py').write_text(
        'from ..engine import ParameterSelection\nimport tools.train\n')
    monkeypatch.setattr(sys.modules[__name__], 'PACKAGE', str(fake))
    monkeypatch.setattr(sys.modules[__name__], 'REPO', str(tmp_path))
    found = _violations()
    assert {osp.relpath(p, str(tmp_path))
            for p in found} == {osp.join('mmtrpts', 'selection', 'bad.py')}
    assert sorted(next(iter(
        found.values()))) == ['1: mmtrpts.engine', '2: tools.train']


def test_readme_layout_names_every_subpackage():
    with open(osp.join(REPO, 'README.md')) as f:
        readme = f.read()
    layout = readme[readme.index('## Layout'):readme.index('## Development')]
    listed = set(re.findall(r'^mmtrpts/(\w+)', layout, flags=re.M))
    assert listed == set(LAYER_OF)
    for folder in re.findall(r'^(configs/\w[\w-]*|docs|tools)/?\s', layout,
                             flags=re.M):
        assert osp.isdir(osp.join(REPO, folder)), folder


def test_readme_support_matrix_cites_existing_tests():
    """Every cell of the README's backbone support matrix names tests that
    exist (a parametrised id must name a parameter of that test)."""
    with open(osp.join(REPO, 'README.md')) as f:
        readme = f.read()
    section = readme[readme.index('## Backbone support'):]
    section = section[:section.index('\n## ')]
    table = [line for line in section.splitlines() if line.startswith('| ')]
    cited = re.findall(r'`(test_\w+\.py)::(test_\w+)(?:\[([^\]]+)\])?`',
                       section)
    assert len(table) >= 8 and len(cited) >= 30
    for row in table[1:]:
        for cell in row.strip('|').split('|')[1:]:
            assert 'untested' in cell or '::test_' in cell, (row, cell)
    for module, name, param in cited:
        with open(osp.join(REPO, 'tests', module)) as f:
            source = f.read()
        assert re.search(rf'^def {name}\(', source, flags=re.M), \
            f'{module}::{name} does not exist'
        for part in (param.split('-') if param else ()):
            assert part in source, f'{module}::{name}[{param}]: no {part!r}'
