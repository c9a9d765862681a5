"""Every figure and HTML page: matplotlib figures (PNG + SVG, one saver) and self-contained
HTML reports (one writer): the Anatomy reproduction and ``forgetlab diagnose``.

Reads stored results and analysis results only (never the engine or the api).

Example:
    >>> from forgetlab.report import build_report, software_versions
    >>> "torch" in software_versions()
    True
"""

from forgetlab.report.diagnose import diagnosis_report
from forgetlab.report.figures import PLOTS, mean_std, new_figure, plot_block_similarity, save_figure
from forgetlab.report.html import analysis_table, build_report, html_figure, html_page, html_table, software_versions

__all__ = [
    "PLOTS", "analysis_table", "build_report", "diagnosis_report", "html_figure", "html_page", "html_table",
    "mean_std", "new_figure", "plot_block_similarity", "save_figure", "software_versions",
]
