"""Imports flow one way: the layer order of DESIGN.md ("Layout and layers"), checked.

Every ``import`` in the package counts, wherever it stands (inside a function too: a
lazy import is still an arrow). A part may import any part of a LOWER layer, never one
of a higher layer, and never another part of its own layer; within one part anything
goes. A module that fits no part fails the test until it is given a place here (and in
the README's layout section).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "forgetlab"

# Top to bottom. Parts in one row must not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("__main__",),
    ("cli", "__init__"),  # the command and the Python facade (forgetlab.run, the configs)
    ("experiments",),
    ("user",),
    ("api",),
    ("resolve",),
    ("report",),
    ("engine",),
    ("strategies",),
    ("analysis",),
    ("store",),
    ("models", "data"),
    ("metrics",),
    ("config",),
    ("hyperparams",),  # every method's hyperparameter dataclasses: config checks method.* keys against them
    ("errors", "_version"),
]
# Arrows the layer order allows but the design forbids (DESIGN.md: report reads the store
# and analysis results, never the engine or the api).
FORBIDDEN = {("report", "engine"), ("report", "strategies")}

RANK = {part: rank for rank, row in enumerate(LAYERS) for part in row}


def part_of(module: str) -> str:
    """``forgetlab.analysis.cka`` -> ``analysis``; ``forgetlab.api`` -> ``api``; ``forgetlab`` -> ``__init__``."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def module_name(path: Path, package: Path) -> str:
    relative = path.relative_to(package.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, package: Path) -> set[str]:
    """The forgetlab modules one file imports (absolute and relative), wherever the statement is."""
    name = module_name(path, package)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    root = package.name
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == root)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != root:
                continue
            if target == root:  # `from forgetlab import x`: x may be a part
                found.update(f"{root}.{a.name}" for a in node.names)
            else:
                found.add(target)
    return found


def arrows(package: Path) -> dict[tuple[str, str], set[str]]:
    """(importing part, imported part) -> the files that make that arrow."""
    found: dict[tuple[str, str], set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        source = part_of(module_name(path, package))
        for target in imports_of(path, package):
            target_part = part_of(target)
            if target_part != source:
                found.setdefault((source, target_part), set()).add(str(path.relative_to(package.parent)))
    return found


def violations(package: Path) -> list[str]:
    problems = []
    modules = {part_of(module_name(p, package)) for p in package.rglob("*.py")}
    for part in sorted(modules - RANK.keys()):
        problems.append(f"part {part!r} has no place in the layer order (tests/test_layers.py LAYERS)")
    for (source, target), files in sorted(arrows(package).items()):
        if source not in RANK or target not in RANK:
            continue
        if RANK[target] < RANK[source]:
            problems.append(f"{source} -> {target} goes UP the layers ({', '.join(sorted(files))})")
        elif RANK[target] == RANK[source]:
            problems.append(f"{source} -> {target} joins two parts of one layer ({', '.join(sorted(files))})")
        elif (source, target) in FORBIDDEN:
            problems.append(f"{source} -> {target} is forbidden by DESIGN.md ({', '.join(sorted(files))})")
    return problems


def test_imports_flow_one_way():
    problems = violations(PACKAGE)
    assert not problems, "\n".join(problems)


def make_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "forgetlab"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # A circle: config (bottom) imports data lazily, data imports config.
        ({"config.py": "def resolve():\n    from forgetlab.data.streams import x\n",
          "data/__init__.py": "", "data/streams.py": "from forgetlab.config import StreamConfig\n"},
         "config -> data goes UP"),
        # A relative import counts too.
        ({"engine/__init__.py": "", "engine/checkpoint.py": "from ..api import build_model_for\n", "api.py": ""},
         "engine -> api goes UP"),
        # Two parts of one layer.
        ({"models/__init__.py": "from forgetlab import data\n", "data/__init__.py": ""}, "models -> data joins"),
        ({"report/__init__.py": "import forgetlab.engine.train\n", "engine/__init__.py": "", "engine/train.py": ""},
         "report -> engine is forbidden"),
        ({"newpart.py": ""}, "part 'newpart' has no place"),
    ],
)
def test_the_check_fails_on_a_bad_arrow(tmp_path, files, expected):
    problems = violations(make_package(tmp_path, files))
    assert any(expected in p for p in problems), problems


def test_the_check_accepts_a_downward_arrow(tmp_path):
    package = make_package(tmp_path, {
        "api.py": "from forgetlab.engine.train import train_stream\nfrom . import config\n",
        "engine/__init__.py": "", "engine/train.py": "from .checkpoint import save\nfrom forgetlab.errors import E\n",
        "engine/checkpoint.py": "", "config.py": "", "errors.py": "",
    })
    assert violations(package) == []
