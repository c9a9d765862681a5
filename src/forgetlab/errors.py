"""Errors raised for user mistakes.

Every message names the parameter (or file), the rule and the value, and where it
can, the fix. The CLI prints these as one line; anything else is a bug.
"""

from __future__ import annotations

import difflib
import errno
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



DISK_FULL_TEXTS = ("No space left on device", "database or disk is full", "unexpected pos", "Disk quota exceeded")


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` says the disk is full: ENOSPC or a quota, SQLite's "database or
    disk is full", or ``torch.save``'s short write ("unexpected pos")."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(text in str(exc) for text in DISK_FULL_TEXTS)


def disk_full_error(what: str, path: object, exc: BaseException, fix: str) -> StoreError:
    """The one-line error for a write of ``what`` at ``path`` that a full disk stopped (:func:`is_disk_full`).

    Example:
        >>> torch_says = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        >>> str(disk_full_error("checkpoint", "/s/task-1.pt", torch_says, "Free space."))
        "No space left on device: cannot write checkpoint '/s/task-1.pt' ([enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0). Free space."
    """
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc).splitlines() or [""])[0]
    detail = "" if reason in ("", "No space left on device") else f" ({reason})"
    return StoreError(f"No space left on device: cannot write {what} {str(path)!r}{detail}. {fix}")
