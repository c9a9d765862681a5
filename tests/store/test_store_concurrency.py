"""Two processes writing one result store at the same time."""

from __future__ import annotations

import multiprocessing
import sqlite3

import forgetlab
from forgetlab.config import RunConfig, StreamConfig, TrainConfig
from forgetlab.store import ResultStore


def _train(store: str, seed: int) -> str:
    import torch

    torch.set_num_threads(1)
    config = RunConfig(stream=StreamConfig(train_per_task=100), train=TrainConfig(epochs=1, seed=seed))
    return forgetlab.run(config, store=store).run_id


def test_two_processes_share_one_store(tmp_path):
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        run_ids = pool.starmap(_train, [(str(tmp_path), seed) for seed in (0, 1, 2, 3)])
    assert len(set(run_ids)) == 4
    store = ResultStore(tmp_path)
    assert sorted(store.list_runs()) == sorted((run_id, "finished") for run_id in run_ids)
    for run_id in run_ids:
        stored = store.get(run_id)
        assert stored.accuracy_matrix is not None and set(stored.metrics) == {"acc", "bwt", "forgetting"}
    db = sqlite3.connect(tmp_path / "forgetlab.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
