"""A small self-contained HTML report of a :class:`~forgetlab.user.Diagnosis`.

``write_report(diagnosis, directory)`` writes ``report.html`` (figures embedded as
base64 PNGs, no external file needed), the figures as PNG and SVG
(``similarity``, ``weight_change``, ``reset``) and ``diagnosis.json``; the page and
figures come from :mod:`forgetlab.report.diagnose`.

Example:
    >>> import tempfile
    >>> from forgetlab.user.diagnosis import BlockDiagnosis, Diagnosis, ResetResult
    >>> d = Diagnosis({"old": 0.9, "new": 0.2}, None,
    ...     [BlockDiagnosis("fc1", 0.5, 0.8, 0.85, 0.7, 3, 0.3, None)], [ResetResult("block", ("fc1",), 0.3, None)], 100, 3)
    >>> path = write_report(d, tempfile.mkdtemp())
    >>> path.name, "<img" in path.read_text()
    ('report.html', True)
"""

from __future__ import annotations

from pathlib import Path

from forgetlab.report.diagnose import diagnosis_report
from forgetlab.user.diagnosis import Diagnosis

__all__ = ["write_report"]


def write_report(diagnosis: Diagnosis, directory: str | Path, title: str = "forgetlab diagnose") -> Path:
    """Write the report files into ``directory``; return the path of ``report.html``."""
    return diagnosis_report(diagnosis.to_dict(), directory, title)
