"""The engine's structure (issue 19, docs/architecture.md): no import cycles, the layers import-linter enforces
are the ones the docs draw, and imports sit at the top of modules but for the documented exceptions."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
ENGINE = REPO / "core" / "vera"

# The imports that stay inside functions, and why (docs/architecture.md, "Imports").
INNER_IMPORTS = {
    # the CLI's lazy dispatch: a subcommand's handler module is imported when that subcommand runs
    ("cli/__init__.py", "later"): [],  # through importlib.import_module, not an import statement
    # a spec naming a GPU asks torch whether that GPU is here, and only then
    ("shot.py", "validate"): ["vera.model.bundle"],
    # optional packages of the paper's metrics (LPIPS), refused with one line when missing
    ("train/paper_metrics.py", "Lpips.__init__"): ["lpips", "torch", "torchvision"],
}


def _cycles(graph, modules) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), over direct imports."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10_000)

    def visit(module):
        index[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for target in graph.find_modules_directly_imported_by(module) & modules:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("vera", "vera_nuke")


def test_the_engine_has_no_import_cycle(graph):
    """Function-level imports count: grimp reads every import statement."""
    assert _cycles(graph, graph.find_descendants("vera") | {"vera"}) == []


def test_the_nuke_side_has_no_import_cycle(graph):
    assert _cycles(graph, graph.find_descendants("vera_nuke") | {"vera_nuke"}) == []


def test_the_cycle_finder_sees_a_cycle():
    graph = grimp.ImportGraph()
    for module in ("a", "a.b", "a.c", "a.d"):
        graph.add_module(module)
    graph.add_import(importer="a.b", imported="a.c")
    graph.add_import(importer="a.c", imported="a.b")
    graph.add_import(importer="a.c", imported="a.d")
    assert _cycles(graph, {"a.b", "a.c", "a.d"}) == [["a.b", "a.c"]]


def _contract_layers() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    [layers] = [c for c in config["contracts"] if c["type"] == "layers"]
    return layers["layers"]


def _drawn_layers() -> list[str]:
    text = (REPO / "docs" / "architecture.md").read_text()
    match = re.search(r"^## Layers\n.*?^```text\n(.*?)^```", text, re.S | re.M)
    assert match, "docs/architecture.md has no '## Layers' section with a ```text diagram"
    return [line.split("#")[0].strip() for line in match.group(1).splitlines() if line.split("#")[0].strip()]


def test_the_layer_diagram_is_the_contract():
    """docs/architecture.md draws the layers import-linter enforces, top to bottom, in the same words."""
    assert _drawn_layers() == _contract_layers()


def test_every_engine_module_sits_in_a_layer(graph):
    named = {name.strip() for layer in _contract_layers() for name in re.split(r"[|:]", layer)}
    top = {module.split(".")[1] for module in graph.find_descendants("vera")}
    assert top - named == {"__main__"} or top - named == set()


@pytest.mark.skipif(shutil.which("lint-imports") is None and not Path(sys.executable).with_name("lint-imports").exists(),
                    reason="import-linter is in the dev extra")
def test_lint_imports_keeps_every_contract():
    tool = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    done = subprocess.run([tool], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


def _inner_imports(root: Path = ENGINE) -> dict[tuple[str, str], list[str]]:
    found = {}

    def walk(node, where, path):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                walk(child, f"{where}.{child.name}" if where else child.name, path)
            elif isinstance(child, (ast.Import, ast.ImportFrom)) and where:
                names = [a.name for a in child.names] if isinstance(child, ast.Import) else [child.module]
                found.setdefault((path, where), []).extend(names)
            else:
                walk(child, where, path)

    for file in sorted(root.rglob("*.py")):
        rel = file.relative_to(root).as_posix()
        walk(ast.parse(file.read_text()), "", rel)
    return found


def test_imports_sit_at_the_top_of_modules():
    expected = {key: names for key, names in INNER_IMPORTS.items() if names}
    assert _inner_imports() == expected


def test_the_inner_import_finder_sees_them(tmp_path):
    (tmp_path / "m.py").write_text("import os\n\n\nclass A:\n    def f(self):\n        if os:\n"
                                   "            from json import dumps\n\n\ndef g():\n    import json\n")
    assert _inner_imports(tmp_path) == {("m.py", "A.f"): ["json"], ("m.py", "g"): ["json"]}
