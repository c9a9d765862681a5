"""An unwritable or full run folder gives a one-line error naming the path, never a traceback."""

from __future__ import annotations

import os

import pytest

from forgetlab.cli import main
from forgetlab.config import RunConfig, apply_overrides
from forgetlab.engine import checkpoint
from forgetlab.resolve import resolve
from forgetlab.store import ResultStore

CONFIG = resolve(apply_overrides(RunConfig(), ["train.epochs=1", "stream.train_per_task=100"]))
ARGS = ["run", "--epochs", "1", "--set", "stream.train_per_task=100", "--quiet"]


def test_a_run_folder_that_cannot_be_created(tmp_path, capsys):
    store = ResultStore(tmp_path)
    (store.root / "runs" / CONFIG.run_id()).write_text("a file where the run folder should be")
    assert main([*ARGS, "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("forgetlab: error: Cannot create run folder") and CONFIG.run_id() in err
    assert "\n" not in err


def test_a_full_disk_while_checkpointing(tmp_path, capsys, monkeypatch):
    def mkstemp_on_a_full_device(dir, prefix, suffix):  # noqa: A002 - tempfile's own parameter name
        return os.open("/dev/full", os.O_WRONLY), os.path.join(dir, prefix + suffix)

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", mkstemp_on_a_full_device)
    assert main([*ARGS, "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "Cannot write checkpoint" in err and "No space left on device" in err and "\n" not in err
    stored = ResultStore(tmp_path).get(CONFIG.run_id())
    assert stored.status == "failed" and "No space left on device" in stored.error
    assert not list(tmp_path.glob("runs/*/checkpoints/*"))
