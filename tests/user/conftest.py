"""Tiny models: one torch thread is much faster on a loaded machine (restored afterwards)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Tiny models: one torch thread (tests/conftest.py)."""
