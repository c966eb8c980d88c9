"""The house rules a reader relies on: the layers import downwards only, every module says what it
is, and no module or function grows past a size one can read in one go."""

from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("engine", "pipelines", "api", "cli")
# Each layer may import the ones before it, never the ones after: engine <- pipelines <- api <- cli.
LAYERS = {"engine": (), "pipelines": ("engine",), "api": ("engine", "pipelines"), "cli": PACKAGES[:3]}
MAX_MODULE_LINES = 450  # issue 17: a module one reads top to bottom
MAX_FUNCTION_LINES = 80  # a function one sees on a screen; longer ones become named steps


def modules(package: str) -> list[str]:
    """Repository-relative paths of a package's Python modules."""
    found = []
    for folder, _, files in os.walk(os.path.join(REPO, package)):
        found += [os.path.relpath(os.path.join(folder, f), REPO) for f in files if f.endswith(".py")]
    return sorted(found)


def parse(path: str) -> ast.Module:
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def imported_packages(tree: ast.Module) -> set[str]:
    """The top-level packages a module imports, anywhere in it (function-level imports too)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


ALL = [path for package in PACKAGES for path in modules(package)]


@pytest.mark.parametrize("package", PACKAGES)
def test_layers_import_downwards_only(package):
    """Nothing in engine imports pipelines, api or the CLI; pipelines imports neither api nor the
    CLI; api does not import the CLI (it runs ``python -m cli`` as a separate process)."""
    above = set(PACKAGES) - set(LAYERS[package]) - {package}
    wrong = {path: sorted(imported_packages(parse(path)) & above) for path in modules(package)}
    assert {path: names for path, names in wrong.items() if names} == {}


@pytest.mark.parametrize("path", ALL)
def test_every_module_has_a_docstring(path):
    docstring = ast.get_docstring(parse(path))
    assert docstring and len(docstring.split()) >= 5, f"{path}: say what the module owns"


def test_no_module_is_too_long():
    lengths = {}
    for path in ALL:
        with open(os.path.join(REPO, path), encoding="utf-8") as f:
            lengths[path] = sum(1 for _ in f)
    assert {p: n for p, n in lengths.items() if n > MAX_MODULE_LINES} == {}


def test_no_function_is_too_long():
    long = {}
    for path in ALL:
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path}:{node.lineno} {node.name}"] = lines
    assert long == {}
