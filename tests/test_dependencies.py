"""Every package the code imports is declared, and every module imports.

Two checks, because one is not enough: importing every module catches a missing package
imported at module level, and reading every ``import`` statement (also those inside
functions, such as matplotlib's) catches one imported lazily.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import pkgutil
import re
import sys
from pathlib import Path

import pytest

import forgetlab

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "forgetlab"

# Packages a clearly optional feature needs, with the extra that installs them.
OPTIONAL = {"ray": "ray", "pyarrow": "parquet", "transformers": "hf", "peft": "hf"}


def all_modules() -> list[str]:
    return sorted(
        info.name for info in pkgutil.walk_packages(forgetlab.__path__, prefix="forgetlab.")
    )


def test_the_walk_finds_the_package():
    names = all_modules()
    assert len(names) == len(list(PACKAGE.rglob("*.py"))) - 1  # all but forgetlab/__init__.py
    assert "forgetlab.cli" in names and "forgetlab.analysis.cka" in names


@pytest.mark.parametrize("name", all_modules())
def test_every_module_imports(name):
    importlib.import_module(name)


def imported_top_level_names(path: Path) -> set[str]:
    """Top-level names of absolute imports in one file, wherever the import statement is."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def third_party_imports() -> dict[str, set[str]]:
    """Top-level import name -> files of the package that import it (stdlib and our own left out)."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for name in imported_top_level_names(path):
            if name in sys.stdlib_module_names or name in ("forgetlab", "__future__"):
                continue
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {requirement_name(r) for r in project["dependencies"]}
    extras = {extra: {requirement_name(r) for r in reqs} for extra, reqs in project["optional-dependencies"].items()}
    return runtime, extras


def distributions_of(import_name: str) -> set[str]:
    mapping = importlib.metadata.packages_distributions()
    return {d.lower().replace("_", "-") for d in mapping.get(import_name, [])}


def test_every_imported_package_is_declared():
    runtime, extras = declared()
    problems = []
    for name, files in sorted(third_party_imports().items()):
        # A package not installed here (tomli, on Python >= 3.11) is looked up by its import name.
        dists = distributions_of(name) or {name.lower()}
        if name in OPTIONAL:
            if not dists & extras.get(OPTIONAL[name], set()):
                problems.append(f"{name} must be in the '{OPTIONAL[name]}' extra")
        elif not dists & runtime:
            problems.append(f"{name} (from {sorted(dists)}; imported by {sorted(files)}) is not in [project] dependencies")
    assert not problems, "\n".join(problems)


def test_the_check_sees_lazy_imports(tmp_path):
    # The check must see an import inside a function (matplotlib's was, and went undeclared).
    source = tmp_path / "lazy.py"
    source.write_text("def plot():\n    import matplotlib.pyplot as plt\n    from PIL import Image\n")
    assert imported_top_level_names(source) == {"matplotlib", "PIL"}
    assert "matplotlib" in third_party_imports() and "PIL" in third_party_imports()
