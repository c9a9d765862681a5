"""The examples/ scripts run offline and show what they claim (CI runs them here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def _run(script: str, out_dir: Path) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), str(out_dir)], capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_finetune_example_keeps_the_old_skill(tmp_path):
    out = _run("finetune_digits.py", tmp_path)
    after = {m: float(old) for m, old in re.findall(r"^\s+(naive|pseudo-rehearsal|ewc)\s+([\d.]+)% /", out, re.M)}
    assert set(after) == {"naive", "pseudo-rehearsal", "ewc"}, out
    assert after["naive"] < 20 and after["pseudo-rehearsal"] > 80 and after["ewc"] > after["naive"] + 20, out
    assert (tmp_path / "finetuned-pseudo-rehearsal.pt").is_file()


def test_diagnose_example_writes_the_report(tmp_path):
    out = _run("diagnose_digits.py", tmp_path)
    assert "old acc if reset" in out and "res1" in out
    assert (tmp_path / "report" / "report.html").is_file()
    old_new = re.search(r"old-task accuracy .*OLD ([\d.]+)%\s+NEW ([\d.]+)%", out)
    assert old_new and float(old_new.group(1)) > 90 > float(old_new.group(2)) + 50, out


pytestmark = pytest.mark.filterwarnings("ignore")
