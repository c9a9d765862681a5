"""The docs keep up with the code: every config key is documented."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from forgetlab.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_key_is_in_usage_doc():
    text = (ROOT / "docs" / "USAGE.md").read_text()
    for section in dataclasses.fields(RunConfig):
        if section.name == "method":
            continue  # per-method hyperparameters are documented in docs/METHODS.md
        for field in dataclasses.fields(section.type if isinstance(section.type, type) else getattr(RunConfig(), section.name)):
            key = f"`{section.name}.{field.name}`"
            assert key in text, f"{key} is not documented in docs/USAGE.md"


def test_readme_opens_with_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0].strip().splitlines()
    assert block == ['python -m pip install -e ".[test]" -c constraints.txt', "python -m pytest"]
    ci = (ROOT / ".ci" / "run").read_text()
    for command in block:
        assert command in ci
