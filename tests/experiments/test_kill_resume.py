"""kill -9 a sweep at random points and resume: nothing finished is recomputed or lost."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from forgetlab.api import train_run
from forgetlab.config import RunConfig, apply_overrides
from forgetlab.engine.checkpoint import read_checkpoint
from forgetlab.experiments import expand
from forgetlab.resolve import resolve
from forgetlab.strategies import STRATEGIES

BASE = ["stream.n_tasks=5", "train.epochs=3", "stream.train_per_task=120"]
GRID = {"method.name": ["naive", "ewc", "si"], "train.seed": [0, 1]}
SWEEP = f"""
import sys
import torch
from forgetlab.config import RunConfig, apply_overrides
from forgetlab.experiments import ExecutorConfig, execute, expand
from forgetlab.store import ResultStore

if __name__ == "__main__":
    torch.set_num_threads(1)
    configs = expand(apply_overrides(RunConfig(), {BASE!r}), {GRID!r})
    execute(configs, ResultStore(sys.argv[1]), executor=ExecutorConfig(workers=int(sys.argv[2]), threads=1))
"""


def _configs() -> list[RunConfig]:
    return expand(apply_overrides(RunConfig(), BASE), GRID)


def _start(store: Path, workers: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SWEEP, str(store), str(workers)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _rows(store: Path) -> dict[str, tuple[str, float | None, str | None]]:
    if not (store / "forgetlab.sqlite").exists():
        return {}
    with sqlite3.connect(store / "forgetlab.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT run_id, status, finished, accuracy_matrix FROM runs").fetchall()
    return {run_id: (status, finished, matrix) for run_id, status, finished, matrix in rows}


def _checkpoints(store: Path) -> int:
    return len(list(store.glob("runs/*/checkpoints/task-*.pt")))


@pytest.mark.parametrize("workers", [1, 2], ids=["inprocess", "two-workers"])
def test_kill_9_at_random_points_then_resume(tmp_path, workers):
    rng = random.Random(8 + workers)
    reference = tmp_path / "reference"
    process = _start(reference, workers)
    assert process.wait(timeout=600) == 0, process.stderr.read().decode()
    expected = {run_id: row[2] for run_id, row in _rows(reference).items()}
    assert {resolve(c).run_id() for c in _configs()} <= set(expected)

    total = _checkpoints(reference)
    store = tmp_path / "killed"
    finished_once: dict[str, float] = {}
    kills = 0
    for _ in range(3):
        before = _checkpoints(store)
        # Kill somewhere inside training: after a random number of new checkpoints (at most
        # half of those left, so later attempts still find work), plus a random delay of up
        # to one task's length. Counting checkpoints, not seconds, holds on fast and slow machines.
        target = before + rng.randint(1, max(1, (total - before) // 2))
        process = _start(store, workers)
        deadline = time.monotonic() + 300
        while process.poll() is None and _checkpoints(store) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.03))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.wait(timeout=60)
        for run_id, (status, finished, _) in _rows(store).items():  # integrity_check inside
            if status == "finished":
                assert finished_once.setdefault(run_id, finished) == finished, f"{run_id} was recomputed"
    assert kills >= 2, "the sweep finished before it could be killed: make it longer"

    time.sleep(1.0)  # orphaned workers notice their parent is gone and exit
    process = _start(store, workers)
    assert process.wait(timeout=600) == 0, process.stderr.read().decode()
    rows = _rows(store)
    for run_id, matrix in expected.items():
        status, finished, ours = rows[run_id]
        assert status == "finished"
        assert json.loads(ours) == json.loads(matrix), f"{run_id}: resumed result differs"
        if run_id in finished_once:
            assert finished == finished_once[run_id], f"{run_id} was recomputed"
    assert not list(store.glob("runs/*/checkpoints/*.tmp"))  # a kill mid-write leaves one; a resume removes it


@pytest.mark.parametrize("method", sorted(STRATEGIES))
def test_every_method_resumes_from_a_late_boundary(method, tmp_path, one_torch_thread):
    """Killed after task 2 of 3 (the state a kill leaves: task-1.pt and task-2.pt), the run
    resumes to the straight run's R and weights, for every registered method (freeze's
    optimizer holds only the unfrozen parameters at that boundary)."""
    extra = ["method.n_blocks=1"] if method == "freeze" else []
    config = resolve(apply_overrides(RunConfig(), [
        "stream.n_tasks=3", "stream.train_per_task=40", "train.steps=2", "model.width=32", f"method.name={method}",
        *extra,
    ]))
    folder = tmp_path / "run"
    straight = train_run(config, folder, device=torch.device("cpu"))
    last = folder / "checkpoints" / "task-3.pt"
    weights = read_checkpoint(last)["model_state"]
    last.unlink()
    resumed = train_run(config, folder, device=torch.device("cpu"))
    assert resumed.accuracy_matrix == straight.accuracy_matrix
    for key, value in read_checkpoint(last)["model_state"].items():
        assert torch.equal(value, weights[key]), key


def test_a_reused_prefix_is_still_recorded_after_a_kill(tmp_path, one_torch_thread):
    """A run that adopted another run's task-1 checkpoint, killed later and resumed from its
    own checkpoint, still reports the reuse (the store's reuse row was lost before)."""
    tiny = ["stream.n_tasks=3", "stream.train_per_task=40", "train.steps=2", "model.width=32"]
    naive = resolve(apply_overrides(RunConfig(), tiny))
    ewc = resolve(apply_overrides(RunConfig(), [*tiny, "method.name=ewc"]))
    train_run(naive, tmp_path / "naive", device=torch.device("cpu"))
    source = tmp_path / "naive" / "checkpoints" / "task-1.pt"
    first = train_run(ewc, tmp_path / "ewc", device=torch.device("cpu"), start_from=source)
    assert first.reused == (str(source), 1)
    (tmp_path / "ewc" / "checkpoints" / "task-3.pt").unlink()  # killed during task 3
    resumed = train_run(ewc, tmp_path / "ewc", device=torch.device("cpu"))  # a resume passes no source
    assert resumed.reused == first.reused
    assert resumed.accuracy_matrix == first.accuracy_matrix
