"""Shared test fixtures, and the Hypothesis profiles.

Hypothesis tests (fuzzing of the CLI and config loader, invariances of the analyses) run
a fixed, derandomized set of examples by default, so a CI run cannot fail on an input no
earlier run tried. To search new inputs: ``HYPOTHESIS_PROFILE=explore python -m pytest``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder with the official dataset files: ``$FORGETLAB_DATA``, else
    ``<repo>/../shared/data``; the test is skipped when neither exists."""
    root = Path(os.environ.get("FORGETLAB_DATA") or Path(__file__).parents[1].parent / "shared" / "data")
    if not root.is_dir():
        pytest.skip(f"official dataset files not found under {root} (set FORGETLAB_DATA to run this test)")
    return root


@pytest.fixture(scope="module", autouse=False)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Point the per-user cache (checksum sidecar, default data root) at a temp folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        mp.setenv("LOCALAPPDATA", str(tmp_path_factory.mktemp("localappdata")))
        yield


@pytest.fixture(autouse=True, scope="session")
def _sandbox_environment(tmp_path_factory: pytest.TempPathFactory):
    """No test writes into the user's cache or the working directory's result store."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("session-cache")))
        mp.setenv("FORGETLAB_STORE", str(tmp_path_factory.mktemp("session-store")))
        yield


@pytest.fixture(scope="session")
def digits_data():
    """scikit-learn's digits as ImageData (no files needed)."""
    from forgetlab.data.sources import load_source

    return load_source("digits")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module (tiny models: more threads only add overhead and
    spin-wait on a busy machine); the setting is restored afterwards. Folders with tiny
    models use it through an autouse fixture in their conftest."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
