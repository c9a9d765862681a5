"""Errors raised for user mistakes.

Every message names the parameter (or file), the rule and the value, and where it
can, the fix. The CLI prints these as one line; anything else is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ForgetlabError(Exception):
    """Base class of every error forgetlab raises on purpose."""


class ConfigError(ForgetlabError, ValueError):
    """A configuration value breaks a rule (bad name, out of range, unknown key)."""


class DataError(ForgetlabError, ValueError):
    """A dataset file is missing, corrupt, or in the wrong format."""


class IncompatibleError(ForgetlabError, ValueError):
    """Two objects do not fit together (checkpoint vs model, shapes, devices)."""


class StoreError(ForgetlabError, RuntimeError):
    """The result store or a run folder cannot be read or written."""


class DivergedError(ForgetlabError, RuntimeError):
    """The training loss became NaN or infinite."""


class NumericalError(ForgetlabError, ValueError):
    """A computation received or produced a non-finite or out-of-range value.

    Similarities are never clamped into their range: a value outside it by more than
    ``1e-6`` means a bug or invalid input (e.g. a matrix that is not PSD), and raises this.
    """


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest choice, or '' if none is close."""
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown_name(kind: str, value: str, choices: Iterable[str]) -> ConfigError:
    """A ConfigError for a name that is not in a registry, listing the valid ones."""
    choices = sorted(choices)
    return ConfigError(
        f"Unknown {kind} {value!r}.{did_you_mean(value, choices)} "
        f"Valid {kind}s: {', '.join(choices)}."
    )
