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
