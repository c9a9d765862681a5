"""The docs keep up with the code: every config key is documented."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from forgetlab.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_key_is_in_usage_doc():
    text = (ROOT / "docs" / "USAGE.md").read_text()
    for section in dataclasses.fields(RunConfig):
        if section.name == "inputs":
            continue  # not a section: content fingerprints filled by resolution
        if section.name == "method":
            continue  # per-method hyperparameters are documented in docs/METHODS.md
        for field in dataclasses.fields(section.type if isinstance(section.type, type) else getattr(RunConfig(), section.name)):
            key = f"`{section.name}.{field.name}`"
            assert key in text, f"{key} is not documented in docs/USAGE.md"


def test_readme_opens_with_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0].strip().splitlines()
    assert block == ['python -m pip install -e ".[test,ray,parquet,hf]" -c constraints.txt', "python -m pytest"]
    ci = (ROOT / ".ci" / "run").read_text()
    for command in block:
        assert command in ci


def test_the_sweep_example_in_usage_runs(tmp_path):
    import subprocess
    import sys

    text = (ROOT / "docs" / "USAGE.md").read_text()
    section = text.split("## Sweeps and executors", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    accuracies = eval(done.stdout.strip())  # noqa: S307 - the example prints a list of floats
    assert len(accuracies) == 4 and all(0.5 < a <= 1 for a in accuracies)
    assert (tmp_path / "sweep-store" / "forgetlab.sqlite").exists()


def test_the_usage_config_example_is_the_shipped_file():
    text = (ROOT / "docs" / "USAGE.md").read_text()
    block = text.split("```toml\n# examples/run.toml\n", 1)[1].split("```", 1)[0]
    shipped = (ROOT / "examples" / "run.toml").read_text()
    assert shipped.split("\n", 1)[1] == block


def test_the_readme_python_example_runs(tmp_path):
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text()
    code = text.split("From Python:", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert "'acc'" in lines[-2] and "'bwt'" in lines[-2]  # print(result.metrics)
    accuracies = eval(lines[-1])  # noqa: S307 - print(result.curves[-1].accuracies): a tuple of 5 floats
    assert len(accuracies) == 5 and all(0 <= a <= 1 for a in accuracies)
