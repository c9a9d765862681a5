"""An unwritable or full run folder or database gives a one-line error naming the path, never a
traceback, and leaves no run claiming to be running where the store can still be written."""

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
    assert "No space left on device: cannot write checkpoint" in err and "\n" not in err
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


def test_torch_s_short_write_on_a_full_disk_is_our_no_space_error(tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):  # what torch.save raises when the disk fills up mid-file
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5376 vs 5264")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    assert main([*ARGS, "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    path = tmp_path / "runs" / CONFIG.run_id() / "checkpoints" / "task-1.pt"
    assert err.startswith(f"forgetlab: error: No space left on device: cannot write checkpoint {str(path)!r}"), err
    assert err.count("\n") == 1
    stored = ResultStore(tmp_path).get(CONFIG.run_id())
    assert stored.status == "failed" and stored.error.startswith("No space left on device")
    assert not list(tmp_path.glob("runs/*/checkpoints/*"))


def _database_full(self, *args, **kwargs):
    import sqlite3

    with self._connect():  # what SQLite raises when the disk under the database is full
        raise sqlite3.OperationalError("database or disk is full")


def test_a_full_disk_under_the_database_leaves_no_run_running(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ResultStore, "finish", _database_full)
    assert main([*ARGS, "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    database = str(tmp_path / "forgetlab.sqlite")
    assert err == f"forgetlab: error: No space left on device: cannot write the result store {database!r} (database or disk is full). Free space, or choose another store with --store or FORGETLAB_STORE.\n"
    stored = ResultStore(tmp_path).get(CONFIG.run_id())
    assert stored.status == "failed" and stored.error.startswith("No space left on device")

    monkeypatch.setattr(ResultStore, "fail", _database_full)  # nothing can be written: it stays 'running' ...
    assert main([*ARGS, "--store", str(tmp_path)]) == 2
    assert capsys.readouterr().err == err  # ... and the error is the full disk, not the failed mark
    assert ResultStore(tmp_path).get(CONFIG.run_id()).status == "running"
    monkeypatch.undo()
    assert main([*ARGS, "--store", str(tmp_path)]) == 0  # space again: the next run finishes it
    assert ResultStore(tmp_path).get(CONFIG.run_id()).status == "finished"


def test_a_full_disk_under_the_database_in_a_sweep(tmp_path, monkeypatch):
    from forgetlab.errors import StoreError
    from forgetlab.experiments import execute, expand

    monkeypatch.setattr(ResultStore, "finish", _database_full)
    store = ResultStore(tmp_path)
    configs = expand(CONFIG, {"train.seed": [0, 1]})
    with pytest.raises(StoreError, match="No space left on device: cannot write the result store"):
        execute(configs, store)
    for config in configs:  # the run being recorded and the one queued behind it
        stored = store.get(resolve(config).run_id())
        assert stored.status == "failed" and stored.error.startswith("No space left on device"), stored
