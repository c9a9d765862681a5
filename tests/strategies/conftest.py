"""Fixtures for the strategy tests: tiny digits streams."""

from __future__ import annotations

import pytest

from forgetlab.config import StreamConfig
from forgetlab.data.streams import TaskStream, build_stream


@pytest.fixture(scope="session")
def tiny_streams(digits_data) -> dict[str, TaskStream]:
    """Two-task digits streams (5 + 5 classes, 100 training examples per task), by head mode."""
    return {
        head: build_stream(StreamConfig(n_tasks=2, head=head, train_per_task=100), digits_data, seed=0)
        for head in ("multi", "single")
    }


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """The models here are tiny: one torch thread (tests/conftest.py)."""
