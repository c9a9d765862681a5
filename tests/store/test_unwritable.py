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


def test_a_read_only_store_still_serves_stored_results_and_reports(tmp_path, capsys, monkeypatch):
    import sqlite3
    import stat

    tiny = ["--set", "train.steps=2", "--set", "stream.train_per_task=60", "--set", "model.width=32", "--quiet"]
    store = tmp_path / "store"
    assert main(["run", "--store", str(store), *tiny]) == 0
    database = (store / "forgetlab.sqlite").read_bytes()
    capsys.readouterr()
    if os.geteuid() != 0:  # make the store read-only for real
        for path in [store, *store.rglob("*")]:
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    else:  # root writes anyway: let SQLite open the database only with mode=ro, as a read-only disk would
        real_connect = sqlite3.connect

        def read_only_connect(database, *args, **kwargs):
            if not (kwargs.get("uri") and "mode=ro" in str(database)):
                raise sqlite3.OperationalError("unable to open database file")
            return real_connect(database, *args, **kwargs)

        monkeypatch.setattr(sqlite3, "connect", read_only_connect)
    try:
        assert main(["run", "--store", str(store), *tiny]) == 0, capsys.readouterr().err
        assert "read from the store" in capsys.readouterr().out
        assert main(["report", "--store", str(store), "--out", str(tmp_path / "report")]) == 0, capsys.readouterr().err
        assert main(["run", "--store", str(store), *tiny, "--seed", "1"]) == 2  # a new run needs writing
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("read-only" in err or "Cannot" in err)
    finally:
        for path in [store, *store.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert (store / "forgetlab.sqlite").read_bytes() == database
