"""Reports: matplotlib figures (PNG + SVG) and one self-contained HTML file per reproduction.

Example:
    >>> from forgetlab.report import build_report, software_versions
    >>> "torch" in software_versions()
    True
"""

from forgetlab.report.figures import PLOTS, mean_std
from forgetlab.report.html import analysis_table, build_report, software_versions

__all__ = ["PLOTS", "analysis_table", "build_report", "mean_std", "software_versions"]
