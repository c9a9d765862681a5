"""A small self-contained HTML report of a :class:`~forgetlab.user.Diagnosis`.

``write_report(diagnosis, directory)`` writes ``report.html`` (figures embedded as
base64 PNGs, no external file needed), the figures as PNG and SVG
(``similarity``, ``weight_change``, ``reset``) and ``diagnosis.json``. Matplotlib is
imported only here, through its Agg canvas.

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

import base64
import html
import json
from pathlib import Path
from typing import Any

from forgetlab.analysis import BlockSimilarity, plot_block_similarity
from forgetlab.errors import StoreError
from forgetlab.user.diagnosis import Diagnosis

__all__ = ["write_report"]


def _figure(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save(figure: Any, stem: Path) -> list[Path]:
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")]
    for path in paths:
        figure.savefig(path, dpi=120)
    return paths


def _weight_figure(d: Diagnosis, stem: Path) -> list[Path]:
    names = [b.block for b in d.blocks]
    figure, axes = _figure(max(4.0, 0.8 * len(names) + 2.0), 3.2)
    axes.bar(range(len(names)), [b.weight_change or 0.0 for b in d.blocks], color="tab:orange")
    axes.set_xticks(range(len(names)), names, rotation=30 if len(names) > 6 else 0)
    axes.set_ylabel("relative weight change")
    axes.set_xlabel("block (input side first)")
    axes.grid(alpha=0.3, axis="y")
    return _save(figure, stem)


def _reset_figure(d: Diagnosis, stem: Path) -> list[Path]:
    labels = [r.label for r in d.resets]
    figure, axes = _figure(max(5.0, 0.5 * len(labels) + 3.0), 3.8)
    xs = range(len(labels))
    has_new = d.new_task is not None
    width = 0.4 if has_new else 0.8
    axes.bar([x - (width / 2 if has_new else 0) for x in xs], [r.old_accuracy for r in d.resets], width, label="old task")
    if has_new:
        axes.bar([x + width / 2 for x in xs], [r.new_accuracy or 0.0 for r in d.resets], width, label="new task")
    axes.axhline(d.old_task["old"], color="tab:blue", linestyle="--", linewidth=1, label="OLD on old task")
    axes.axhline(d.old_task["new"], color="tab:gray", linestyle=":", linewidth=1, label="NEW on old task")
    axes.set_xticks(list(xs), labels, rotation=45, ha="right", fontsize="small")
    axes.set_ylabel("accuracy")
    axes.set_ylim(0, 1.02)
    axes.set_title("NEW with these blocks rewound to OLD")
    axes.legend(fontsize="small")
    return _save(figure, stem)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(diagnosis: Diagnosis, directory: str | Path, title: str = "forgetlab diagnose") -> Path:
    """Write the report files into ``directory``; return the path of ``report.html``."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"Cannot create report folder {str(directory)!r}: {exc.strerror or exc}.") from None
    d = diagnosis
    rows = []
    for b in d.blocks:
        rows.append(BlockSimilarity(b.block, "OLD vs NEW", "linear_cka_debiased", b.cka_debiased, d.n_samples, 0))
        rows.append(BlockSimilarity(b.block, "OLD vs NEW", "linear_cka", b.cka, d.n_samples, 0))
    for b in d.blocks:
        if b.subspace_similarity is not None:
            rows.append(BlockSimilarity(b.block, "OLD vs NEW", "subspace_similarity", b.subspace_similarity, d.n_samples, 0, d.k))
    figures = {
        "similarity": plot_block_similarity(rows, directory / "similarity"),
        "weight_change": _weight_figure(d, directory / "weight_change"),
        "reset": _reset_figure(d, directory / "reset"),
    }
    (directory / "diagnosis.json").write_text(json.dumps(d.to_dict(), indent=2) + "\n")
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    num = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    summary = [["old task", pct(d.old_task["old"]), pct(d.old_task["new"])]]
    if d.new_task is not None:
        summary.append(["new task", pct(d.new_task["old"]), pct(d.new_task["new"])])
    block_rows = [
        [b.block, num(b.weight_change), num(b.cka_debiased), num(b.cka),
         num(b.subspace_similarity) + (f" (k={b.subspace_k})" if b.subspace_similarity is not None else ""),
         pct(b.old_accuracy_after_reset), pct(b.new_accuracy_after_reset)]
        for b in d.blocks
    ]
    reset_rows = [[r.kind, ", ".join(r.blocks), pct(r.old_accuracy), pct(r.new_accuracy)] for r in d.resets]
    images = "".join(
        f"<figure><img alt='{name}' src='data:image/png;base64,"
        f"{base64.b64encode(paths[0].read_bytes()).decode()}'/><figcaption>{name}</figcaption></figure>"
        for name, paths in figures.items()
    )
    sources = "; ".join(f"{k}: {html.escape(v)}" for k, v in d.sources.items())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;}} table{{border-collapse:collapse;margin:1em 0;}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right;}} td:first-child{{text-align:left;}}
img{{max-width:100%;}} figure{{display:inline-block;margin:0.5em;}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Data: {sources}. Similarities on {d.n_samples} old-task inputs; subspace dimension k &le; {d.k}.</p>
<h2>Accuracy</h2>{_table(["", "OLD", "NEW"], summary)}
<h2>Per block</h2>
<p>Weight change = ||w_NEW - w_OLD|| / ||w_OLD||. CKA and subspace similarity compare OLD's and NEW's
activations of each block (1 = same representation). "If reset": NEW with that block rewound to OLD.</p>
{_table(["block", "weight change", "CKA debiased", "CKA (biased)", "subspace sim", "old acc if reset", "new acc if reset"], block_rows)}
<h2>Reset analysis</h2>{_table(["kind", "blocks rewound to OLD", "old acc", "new acc"], reset_rows)}
<h2>Figures</h2>{images}
</body></html>
"""
    path = directory / "report.html"
    path.write_text(page)
    return path
