"""An optional feature whose package is missing fails before any work, in one line that
names the extra to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_ray_executor_without_ray_is_one_line_naming_the_extra(tmp_path):
    # A `ray` package that cannot be imported stands in for Ray not being installed.
    fake = tmp_path / "site"
    (fake / "ray").mkdir(parents=True)
    (fake / "ray" / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]))
    store = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, "-m", "forgetlab", "sweep", "--executor", "ray", "--grid", "train.seed=0,1",
         "--store", str(store)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "pip install 'forgetlab[ray]'" in lines[0]
    assert "Traceback" not in done.stderr
    # Nothing was trained: no run folder holds a checkpoint.
    assert not list(Path(store).rglob("*.pt"))


def test_a_model_folder_without_transformers_is_one_line_naming_the_extra(tmp_path):
    # A `transformers` package that cannot be imported stands in for the hf extra not being installed.
    fake = tmp_path / "site"
    (fake / "transformers").mkdir(parents=True)
    (fake / "transformers" / "__init__.py").write_text("raise ImportError(\"No module named 'transformers'\")\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]))
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    (tmp_path / "old.csv").write_text("text,label\na cat,0\n")
    commands = (
        ["diagnose", str(tmp_path / "old"), str(tmp_path / "new"), "--data", str(tmp_path / "old.csv")],
        ["finetune", str(tmp_path / "old"), "--new-data", str(tmp_path / "old.csv"), "--out", str(tmp_path / "out")],
    )
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "forgetlab", *command], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and 'pip install -e ".[hf]"' in lines[0] and "'hf' extra" in lines[0], done.stderr
    assert not (tmp_path / "out").exists()
