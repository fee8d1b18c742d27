"""The import contracts between the package's folders, checked on the source with ``ast``.

The layers (each may import only the ones listed in ``MAY_IMPORT``)::

    core ─┬─ kernels ── models ──┬─ consolidation ─┬─ experiments ─┐
          ├─ tasks ──────────────┘                 └─ redundancy ──┤
          └─ psych_data ── fitting ── apps ────────────────────────┴── CLI (cram.cli, cram.commands)

``cram`` itself (``cram/__init__.py``) is a lazy facade for users and notebooks (readers from
core and psych_data, and ``cram.train`` from consolidation); only the CLI may import it inside the
package (``cram.__version__`` counts as core). ``cram.testing`` writes synthetic run folders for
tests and scripts. Every import counts, also one inside a function (a lazy import is still a
dependency), one under ``TYPE_CHECKING``, and a module named in a string (``importlib``, a lazy
facade's table): any string constant that is a dotted ``cram.*`` module path. Two more rules hold
between files: no module imports another module's private name (``_name``), and no import cycle
joins two files (a submodule importing its own package's ``__init__`` does not count).

The checker runs on the real tree and on small synthetic trees with planted violations, so that
a checker that finds nothing cannot pass.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]

#: component → the project components it may import (itself always allowed).
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "kernels": {"core"},
    "models": {"core", "kernels"},
    "tasks": {"core"},  # token tasks (issue 14): beside models, read by consolidation and the CLI
    "consolidation": {"core", "kernels", "models", "tasks"},
    "redundancy": {"core", "kernels", "models", "consolidation"},
    "experiments": {"core", "kernels", "models", "tasks", "consolidation"},  # above training
    "psych_data": {"core"},
    "fitting": {"core", "psych_data"},
    "apps": {"core", "psych_data", "fitting"},
    "facade": {"core", "psych_data", "consolidation"},  # cram.train; only the CLI imports it
    "testing": {"core"},
    "cli": {"core", "kernels", "models", "tasks", "consolidation", "experiments", "redundancy",
            "psych_data", "fitting", "apps", "facade", "testing"},
}

#: module prefix → component; the longest matching prefix wins.
COMPONENT_OF_PREFIX = {
    "cram": "facade",
    "cram.__version__": "core",  # a constant in cram/__init__.py, which every import runs anyway
    "cram.core": "core",
    "cram.cli": "cli",
    "cram.__main__": "cli",
    "cram.commands": "cli",
    "cram.testing": "testing",
    "cram.kernels": "kernels",
    "cram.models": "models",
    "cram.tasks": "tasks",
    "cram.consolidation": "consolidation",
    "cram.experiments": "experiments",
    "cram.redundancy": "redundancy",
    "cram.psych_data": "psych_data",
    "cram.fitting": "fitting",
    "cram.apps": "apps",
}

#: (importing components, forbidden module prefixes, why): the contracts named in issue 12.
NEVER: list[tuple[set[str], tuple[str, ...], str]] = [
    ({"fitting", "psych_data", "apps"}, ("torch", "cram.models", "cram.kernels"),
     "fitting, psych_data and apps never import torch, models or kernels"),
    ({"kernels"}, ("cram.models",), "kernels import no model"),
    ({"models"}, ("cram.consolidation",), "models import nothing from consolidation"),
    (set(MAY_IMPORT) - {"cli"}, ("cram.cli", "cram.commands", "cram.__main__"),
     "nothing imports the CLI"),
    ({"core"}, ("torch",), "cram.core never imports torch"),
]


@dataclass(frozen=True)
class Import:
    """One import statement: who imports what, and where."""

    module: str  # importing module, e.g. cram.fitting.pipeline
    target: str  # imported module (or module.name), e.g. cram.fitting.forms.get_form
    file: Path
    line: int

    def where(self) -> str:
        """``file:line`` for messages."""
        return f"{self.file}:{self.line}"


def package_dirs(root: Path) -> dict[str, Path]:
    """``[tool.setuptools] package-dir`` of ``root/pyproject.toml``: package → folder."""
    with open(root / "pyproject.toml", "rb") as fh:
        cfg = tomllib.load(fh)
    mapping = cfg["tool"]["setuptools"]["package-dir"]
    return {pkg: root / folder for pkg, folder in mapping.items()}


def _modules(pkg: str, folder: Path, mapped: set[Path]):
    """``(module name, file)`` for every ``.py`` under ``folder`` (not into other mapped roots)."""
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(folder)
        if any(folder / p in mapped for p in rel.parents if str(p) != "."):
            continue  # a sub-folder that is another package's root
        parts = [pkg, *rel.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


#: a string constant that names a project module (``importlib.import_module("cram.x.y")``)
_DOTTED = re.compile(r"^cram(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring constants of a module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _string_imports(module: str, path: Path, tree: ast.AST) -> list[Import]:
    """Project modules named by string constants (not docstrings): imports all the same."""
    docs = _docstrings(tree)
    return [Import(module, node.value, path, node.lineno) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docs and _DOTTED.match(node.value)]


def _imports_of(module: str, path: Path) -> list[Import]:
    """Every import in ``path``: relative ones resolved against the package, strings too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [Import(module, a.name, path, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out += [Import(module, f"{base}.{a.name}", path, node.lineno) for a in node.names]
    return out + _string_imports(module, path, tree)


def component(module: str) -> str | None:
    """The project component of ``module``, or None for a third-party module."""
    best = None
    for prefix in COMPONENT_OF_PREFIX:
        if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > len(best)):
            best = prefix
    return COMPONENT_OF_PREFIX[best] if best else None


def _matches(target: str, prefixes: tuple[str, ...]) -> bool:
    return any(target == p or target.startswith(p + ".") for p in prefixes)


def collect_imports(root: Path) -> list[Import]:
    """All imports of the packages ``root/pyproject.toml`` maps."""
    dirs = package_dirs(root)
    mapped = set(dirs.values())
    out = []
    for pkg, folder in dirs.items():
        for module, path in _modules(pkg, folder, mapped):
            out += _imports_of(module, path)
    return out


def find_cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Simple cycles of the component graph (each reported once, from its smallest node)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        if a != b:
            graph.setdefault(a, set()).add(b)
    cycles = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                cycles.append([*path, start])
            elif nxt not in path and nxt > start:
                walk(start, nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return cycles


def check(root: Path) -> list[str]:
    """Every broken contract of the tree at ``root``, one line each (empty when all hold)."""
    problems, edges = [], set()
    for imp in collect_imports(root):
        src, dst = component(imp.module), component(imp.target)
        if src is None:
            continue
        for importers, forbidden, why in NEVER:
            if src in importers and _matches(imp.target, forbidden):
                problems.append(f"{imp.where()}: {imp.module} imports {imp.target} ({why})")
        if dst is None or dst == src:
            continue
        edges.add((src, dst))
        if dst not in MAY_IMPORT[src]:
            problems.append(f"{imp.where()}: {imp.module} imports {imp.target}: layer {src} "
                            f"may import only {sorted(MAY_IMPORT[src]) or 'nothing'}")
    problems += [f"import cycle between folders: {' -> '.join(c)}" for c in find_cycles(edges)]
    return problems + private_imports(root) + file_cycles(root)


def _module_names(root: Path) -> set[str]:
    dirs = package_dirs(root)
    mapped = set(dirs.values())
    return {m for pkg, folder in dirs.items() for m, _ in _modules(pkg, folder, mapped)}


def _owner(target: str, modules: set[str]) -> str | None:
    """The module an import target lives in (``a.b.name`` → ``a.b``), or None if not ours."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in modules:
            return ".".join(parts[:i])
    return None


def private_imports(root: Path) -> list[str]:
    """Imports of another module's private name (``from x import _name``), one line each."""
    modules, found = _module_names(root), []
    for imp in collect_imports(root):
        name = imp.target.rpartition(".")[2]
        owner = _owner(imp.target, modules)
        if (name.startswith("_") and not name.startswith("__") and owner is not None
                and owner != imp.target and owner != imp.module):
            found.append(f"{imp.where()}: {imp.module} imports the private name {name} of "
                         f"{owner} (make it public, or keep it in one module)")
    return found


def file_cycles(root: Path) -> list[str]:
    """Import cycles between files (strongly connected modules), one line each."""
    modules, graph = _module_names(root), {}
    for imp in collect_imports(root):
        dst = _owner(imp.target, modules)
        if dst is None or dst == imp.module or imp.module.startswith(dst + "."):
            continue  # not ours, itself, or its own package's __init__
        graph.setdefault(imp.module, set()).add(dst)
    return [f"import cycle between files: {' <-> '.join(c)}" for c in _components(graph)]


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (iterative Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        top = stack.pop()
                        on.discard(top)
                        comp.append(top)
                        if top == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on:
                low[node] = min(low[node], index[child])
    return sorted(out)


# ---------------------------------------------------------------------------------------------
# the real tree
# ---------------------------------------------------------------------------------------------


def test_every_mapped_folder_has_a_component():
    for pkg in package_dirs(ROOT):
        assert component(pkg) is not None, f"{pkg}: add it to COMPONENT_OF_PREFIX and MAY_IMPORT"


def test_the_checker_sees_the_real_tree():
    imports = collect_imports(ROOT)
    modules = {i.module for i in imports}
    # a checker that parsed nothing would pass vacuously
    assert {"cram.cli", "cram.redundancy.study", "cram.fitting.pipeline",
            "cram.consolidation.train"} <= modules
    assert any(component(i.target) == "fitting" for i in imports if i.module == "cram.cli"
               or i.module.startswith("cram.commands."))


def test_the_real_tree_keeps_its_layers():
    problems = check(ROOT)
    assert not problems, "broken import contracts:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# the checker on synthetic trees
# ---------------------------------------------------------------------------------------------

_PYPROJECT = """[tool.setuptools]
package-dir = { "cram" = "cram", "cram.kernels" = "kernels", "cram.models" = "models", \
"cram.consolidation" = "consolidation", "cram.fitting" = "fitting" }
"""


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "pyproject.toml").write_text(_PYPROJECT)
    base = {"cram/__init__.py": "", "cram/core/__init__.py": "", "cram/core/errors.py": "",
            "cram/cli.py": "import cram.consolidation.train\n", "kernels/__init__.py": "",
            "models/__init__.py": "from cram.kernels import op\n", "kernels/op.py": "",
            "consolidation/__init__.py": "", "consolidation/train.py": "from . import loss\n",
            "consolidation/loss.py": "from cram.models import build\n",
            "fitting/__init__.py": "from cram.core.errors import CramError\n"}
    for rel, text in {**base, **files}.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_clean_synthetic_tree_passes(tmp_path):
    root = _tree(tmp_path, {})
    assert check(root) == []
    imports = {(i.module, i.target) for i in collect_imports(root)}
    assert ("cram.consolidation.train", "cram.consolidation.loss") in imports  # relative import


@pytest.mark.parametrize("rel,text,expected", [
    ("fitting/bad.py", "def f():\n    import torch\n", "never import torch"),
    ("fitting/bad.py", "from cram.models import build\n", "never import torch, models"),
    ("kernels/bad.py", "from cram.models.cram import CRAM\n", "kernels import no model"),
    ("models/bad.py", "from cram.consolidation import loss\n", "nothing from consolidation"),
    ("consolidation/bad.py", "from cram.cli import main\n", "nothing imports the CLI"),
    ("cram/core/bad.py", "import torch\n", "cram.core never imports torch"),
    ("cram/core/bad.py", "from cram import fitting\n", "layer core may import only nothing"),
    ("consolidation/bad.py", "from cram.fitting import x\n", "layer consolidation may import"),
    ("kernels/bad.py", "from ..models import m\n", "kernels import no model"),
])
def test_a_planted_violation_fails(tmp_path, rel, text, expected):
    problems = check(_tree(tmp_path, {rel: text}))
    assert any(expected in p for p in problems), problems
    assert all(rel.split("/")[-1] in p or "cycle" in p for p in problems), problems


@pytest.mark.parametrize("rel,text,expected", [
    ("kernels/bad.py", "import importlib\nm = importlib.import_module('cram.models.x')\n",
     "kernels import no model"),
    ("models/bad.py", "NAME = 'cram.consolidation.loss'\n", "nothing from consolidation"),
])
def test_a_module_named_in_a_string_counts(tmp_path, rel, text, expected):
    problems = check(_tree(tmp_path, {rel: text}))
    assert any(expected in p for p in problems), problems


def test_a_docstring_naming_a_module_is_no_import(tmp_path):
    text = '"""Reads what cram.consolidation.loss writes."""\n'
    assert check(_tree(tmp_path, {"models/ok.py": text})) == []


def test_a_private_name_of_another_module_is_reported(tmp_path):
    files = {"consolidation/loss.py": "from cram.models import build\n\ndef _helper():\n    pass\n",
             "consolidation/other.py": "from .loss import _helper\n"}
    problems = check(_tree(tmp_path, files))
    assert any("private name _helper of cram.consolidation.loss" in p for p in problems), problems


def test_a_cycle_between_two_files_is_reported(tmp_path):
    files = {"consolidation/a.py": "def f():\n    from . import b\n",
             "consolidation/b.py": "from cram.consolidation import a\n"}
    problems = check(_tree(tmp_path, files))
    assert ("import cycle between files: cram.consolidation.a <-> cram.consolidation.b"
            in problems), problems


def test_a_planted_cycle_is_reported(tmp_path):
    # models ↔ kernels both ways: a layer violation and a cycle between the two folders
    problems = check(_tree(tmp_path, {"kernels/op.py": "import cram.models\n"}))
    assert "import cycle between folders: kernels -> models -> kernels" in problems


def test_find_cycles_on_a_small_graph():
    assert find_cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c", "a"]]
    assert find_cycles({("a", "b"), ("b", "c"), ("a", "a")}) == []


# ------------------------------------------------------------------ functions fit on a screen
MAX_FUNCTION_LINES = 80


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``path:line name (n lines)`` for every function of the package longer than ``limit``."""
    found = []
    paths = {p for folder in package_dirs(root).values() for p in folder.rglob("*.py")}
    for path in sorted(paths):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({n})")
    return found


def test_no_package_function_is_longer_than_a_screen():
    assert long_functions(ROOT) == []


def test_the_length_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    root = _tree(tmp_path, {"fitting/long.py": f"def f():\n{body}\n"})
    assert [s.split()[1] for s in long_functions(root)] == ["f"]
