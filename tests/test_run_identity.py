"""A run's identity includes the content of every input file it reads: a changed custom
task file (or revision file) is a new run, never a stale stored result (issue 20)."""

from __future__ import annotations

import numpy as np
import pytest


from forgetlab.api import run
from forgetlab.config import ModelConfig, RunConfig, StreamConfig, TrainConfig, apply_overrides

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _task_file(path, seed: int, n: int = 24):
    rng = np.random.default_rng(seed)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n, 1, 6, 6), dtype=np.uint8), y_train=np.arange(n) % 2,
        x_test=rng.integers(0, 256, (n // 2, 1, 6, 6), dtype=np.uint8), y_test=np.arange(n // 2) % 2,
    )
    return str(path)


def test_changed_custom_task_file_is_a_new_run(tmp_path):
    paths = (_task_file(tmp_path / "one.npz", 0), _task_file(tmp_path / "two.npz", 1))
    config = RunConfig(
        stream=StreamConfig(dataset="custom", stream="custom", custom_paths=paths),
        model=ModelConfig(width=16),
        train=TrainConfig(epochs=1, batch_size=8),
    )
    store = tmp_path / "store"
    first = run(config, device="cpu", store=store)
    again = run(config, device="cpu", store=store)
    assert not first.from_store and again.from_store and again.run_id == first.run_id
    with np.load(paths[1]) as arrays:
        changed = dict(arrays)
    rng = np.random.default_rng(2)
    changed["y_train"] = rng.permutation(changed["y_train"])  # task 2's labels randomised, same file name
    changed["y_test"] = rng.permutation(changed["y_test"])
    np.savez(paths[1], **changed)
    third = run(config, device="cpu", store=store)
    assert not third.from_store and third.run_id != first.run_id
    fourth = run(config, device="cpu", store=store)  # unchanged again: read back
    assert fourth.from_store and fourth.run_id == third.run_id


def test_changed_revision_file_is_a_new_run(tmp_path):
    paths = (_task_file(tmp_path / "one.npz", 0), _task_file(tmp_path / "two.npz", 1))
    revision = tmp_path / "revision.npz"
    np.savez(revision, x=np.zeros((6, 1, 6, 6), np.uint8))
    base = RunConfig(
        stream=StreamConfig(dataset="custom", stream="custom", custom_paths=paths),
        model=ModelConfig(width=16),
        train=TrainConfig(epochs=1, batch_size=8),
    )
    config = apply_overrides(
        base, ["method.name=pseudo-rehearsal", "method.revision_source=user", f"method.revision_path={revision}"]
    )
    store = tmp_path / "store"
    first = run(config, device="cpu", store=store)
    assert run(config, device="cpu", store=store).from_store
    np.savez(revision, x=np.full((6, 1, 6, 6), 255, np.uint8))  # same name and shape, other inputs
    again = run(config, device="cpu", store=store)
    assert not again.from_store and again.run_id != first.run_id
