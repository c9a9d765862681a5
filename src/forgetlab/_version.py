"""The package version, written once: pyproject.toml reads it, and so does the report
(without importing the package root and everything it pulls in)."""

__version__ = "0.1.0"
