"""The examples/ scripts run offline and show what they claim (CI runs them here).

The scripts start together (one process each, one torch thread each) to halve the wall time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SCRIPTS = ("finetune_digits.py", "diagnose_digits.py", "add_label_digits.py")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    started = {}
    for script in SCRIPTS:
        out_dir = tmp_path_factory.mktemp(script.split(".")[0])
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / script), str(out_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        started[script] = (process, out_dir)
    results = {}
    try:
        for script, (process, out_dir) in started.items():
            stdout, stderr = process.communicate(timeout=300)
            results[script] = (process.returncode, stdout, stderr, out_dir)
    finally:
        for process, _ in started.values():
            if process.poll() is None:
                process.kill()
    return results


def _output(runs, script):
    code, stdout, stderr, out_dir = runs[script]
    assert code == 0, stderr[-3000:]
    return stdout, out_dir


def test_finetune_example_keeps_the_old_skill(runs):
    out, out_dir = _output(runs, "finetune_digits.py")
    after = {m: float(old) for m, old in re.findall(r"^\s+(naive|pseudo-rehearsal|ewc)\s+([\d.]+)% /", out, re.M)}
    assert set(after) == {"naive", "pseudo-rehearsal", "ewc"}, out
    assert after["naive"] < 20 and after["pseudo-rehearsal"] > 80 and after["ewc"] > after["naive"] + 20, out
    assert (out_dir / "finetuned-pseudo-rehearsal.pt").is_file()


def test_diagnose_example_writes_the_report(runs):
    out, out_dir = _output(runs, "diagnose_digits.py")
    assert "old acc if reset" in out and "res1" in out
    assert (out_dir / "report" / "report.html").is_file()
    old_new = re.search(r"old-task accuracy .*OLD ([\d.]+)%\s+NEW ([\d.]+)%", out)
    assert old_new and float(old_new.group(1)) > 90 > float(old_new.group(2)) + 50, out


def test_add_label_example_learns_new_labels_and_keeps_the_old(runs):
    out, out_dir = _output(runs, "add_label_digits.py")
    rows = re.findall(r"^\s+(naive|pseudo-rehearsal|ewc|replay)\s+([\d.]+)% /\s+([\d.]+)% /\s+([\d.]+)%", out, re.M)
    acc = {m: tuple(map(float, v)) for m, *v in rows}  # (old classes, new classes, all classes)
    assert set(acc) == {"naive", "pseudo-rehearsal", "ewc", "replay"}, out
    assert acc["naive"][0] < 20 and acc["naive"][1] > 80, out
    for method in ("pseudo-rehearsal", "replay"):
        assert acc[method][0] > 80 and acc[method][1] > 70 and acc[method][2] > acc["naive"][2] + 15, out
    assert acc["ewc"][0] > acc["naive"][0] + 30, out
    assert "head grown from 5 to 10 outputs" in out and (out_dir / "added-replay.pt").is_file()


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    out_dir = tmp_path_factory.mktemp("hf_new_label")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "hf_new_label.py"), str(out_dir)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, out_dir


def test_hf_example_learns_a_new_label_and_pseudo_rehearsal_keeps_the_old(hf_run):
    out, out_dir = hf_run
    rows = re.findall(r"^\s+(naive|pseudo-rehearsal)\s+([\d.]+)% /\s+([\d.]+)% /\s+([\d.]+)%", out, re.M)
    acc = {m: tuple(map(float, v)) for m, *v in rows}  # (old labels, new label, all)
    assert set(acc) == {"naive", "pseudo-rehearsal"}, out
    assert acc["naive"][0] < 20 and acc["naive"][1] > 80, out
    assert acc["pseudo-rehearsal"][0] > 80 and acc["pseudo-rehearsal"][1] > 80, out
    assert "head grown from 2 to 3 outputs" in out and (out_dir / "pseudo-rehearsal" / "config.json").is_file()
    # diagnose of OLD vs naive: which layers moved, and the report
    table = re.findall(r"^(distilbert\.\S+|pre_classifier|classifier)\s+([\d.]+)\s+(-?[\d.]+) \(", out, re.M)
    assert [name for name, *_ in table][:3] == ["distilbert.embeddings", "distilbert.transformer.layer.0",
                                                 "distilbert.transformer.layer.1"], out
    assert all(float(change) > 0 for _, change, _ in table), out
    assert (out_dir / "diag" / "report.html").is_file() and (out_dir / "lm" / "config.json").is_file()
