"""`forgetlab --version` and the package's version agree with the installed metadata."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import forgetlab


def test_version_flag_prints_the_installed_version():
    done = subprocess.run([sys.executable, "-m", "forgetlab", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # The metadata comes from pyproject.toml at install time: an independent reading.
    assert done.stdout.strip() == f"forgetlab {importlib.metadata.version('forgetlab')}"
    assert forgetlab.__version__ == importlib.metadata.version("forgetlab")
