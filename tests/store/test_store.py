"""Result store: reuse of finished runs, WAL mode, failures, unwritable folders."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

import forgetlab
import forgetlab.api
from forgetlab.config import RunConfig, StreamConfig, TrainConfig
from forgetlab.errors import StoreError
from forgetlab.store import ResultStore

SMALL = RunConfig(stream=StreamConfig(train_per_task=200), train=TrainConfig(epochs=2))


def test_finished_run_is_returned_from_the_store(tmp_path, monkeypatch):
    first = forgetlab.run(SMALL, store=tmp_path)
    assert not first.from_store
    assert (first.run_dir / "checkpoints" / "task-2.pt").is_file()
    assert (first.run_dir / "config.json").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(forgetlab.api, "train_stream", no_training)
    second = forgetlab.run(SMALL, store=tmp_path)
    assert second.from_store and second.run_id == first.run_id
    np.testing.assert_array_equal(second.accuracy_matrix, first.accuracy_matrix)
    assert second.metrics == pytest.approx(first.metrics)
    np.testing.assert_allclose([c.accuracies for c in second.curves], [c.accuracies for c in first.curves], rtol=1e-12)
    with pytest.raises(AssertionError, match="trained again"):
        forgetlab.run(SMALL, store=tmp_path, rerun=True)


def test_database_is_wal_and_records_everything(tmp_path):
    result = forgetlab.run(SMALL, store=tmp_path)
    db = sqlite3.connect(tmp_path / "forgetlab.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    status, device, wall, peak = db.execute(
        "SELECT status, device, wall_seconds, peak_memory_bytes FROM runs WHERE run_id=?", (result.run_id,)
    ).fetchone()
    assert status == "finished" and device == "cpu" and wall > 0 and peak > 0
    names = {row[0] for row in db.execute("SELECT name FROM metrics WHERE run_id=?", (result.run_id,))}
    assert names == {"acc", "bwt", "forgetting"}
    n_points = db.execute("SELECT COUNT(*) FROM curves WHERE run_id=?", (result.run_id,)).fetchone()[0]
    assert n_points == len(result.curves) * 2


def test_failed_runs_keep_their_reason(tmp_path):
    store = ResultStore(tmp_path)
    store.begin("abc", {"x": 1}, "0")
    store.fail("abc", "diverged")
    stored = store.get("abc")
    assert stored.status == "failed" and stored.error == "diverged"
    assert store.list_runs() == [("abc", "failed")]


def test_store_path_that_is_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="Cannot create the result store folder"):
        ResultStore(blocker)


def test_broken_rows_an_emptied_database_and_store_check(tmp_path, capsys):
    import sqlite3

    import forgetlab
    from forgetlab.cli import main
    from forgetlab.config import RunConfig, apply_overrides

    tiny = apply_overrides(RunConfig(), ["train.steps=2", "stream.train_per_task=60", "model.width=32"])
    result = forgetlab.run(tiny, store=tmp_path / "s")
    assert main(["store", "check", "--store", str(tmp_path / "s")]) == 0
    capsys.readouterr()
    checkpoint = result.run_dir / "checkpoints" / "task-2.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:-1] + b"x")  # garbled
    (tmp_path / "s" / "runs" / "0123456789abcdef").mkdir()  # a folder without a row
    with sqlite3.connect(tmp_path / "s" / "forgetlab.sqlite") as db:
        db.execute("UPDATE metrics SET value = 0.5 WHERE name = 'acc'")
    assert main(["store", "check", "--store", str(tmp_path / "s")]) == 1
    out = capsys.readouterr().out
    assert "stored acc 0.5 differs from its R's" in out
    assert "task-2.pt' differs from the hash recorded in task-2.pt.sha256" in out
    assert "task-2.pt' differs from the hash recorded in the database" in out
    assert "0123456789abcdef' has no row" in out

    with sqlite3.connect(tmp_path / "s" / "forgetlab.sqlite") as db:
        db.execute("UPDATE runs SET accuracy_matrix = '[[0.5, ' WHERE run_id = ?", (result.run_id,))
    with pytest.raises(StoreError, match=f"run {result.run_id}'s accuracy_matrix is not valid JSON"):
        forgetlab.run(tiny, store=tmp_path / "s")
    assert main(["run", "--store", str(tmp_path / "s"), "--set", "train.steps=2", "--set", "stream.train_per_task=60",
                 "--set", "model.width=32", "--quiet"]) == 2
    assert capsys.readouterr().err.count("\n") == 1

    (tmp_path / "s" / "forgetlab.sqlite").write_bytes(b"")  # emptied
    for extra in ("-wal", "-shm"):
        (tmp_path / "s" / f"forgetlab.sqlite{extra}").unlink(missing_ok=True)
    with pytest.raises(StoreError, match="is empty, but the store holds run folders"):
        ResultStore(tmp_path / "s")
