"""The ``forgetlab diagnose`` report, from the plain data of a diagnosis (``Diagnosis.to_dict()``).

:func:`diagnosis_report` writes ``report.html`` (figures embedded as base64 PNGs, no
external file needed), the figures as PNG and SVG (``similarity``, ``weight_change``,
``reset``) and ``diagnosis.json`` into a folder. The page opens with the model files,
the one-paragraph ``conclusion`` and the input normalisation, when the data has them.

Example:
    >>> import tempfile
    >>> data = {"old_task": {"old": 0.9, "new": 0.2}, "new_task": None, "n_samples": 100, "k": 3, "sources": {},
    ...     "blocks": [{"block": "fc1", "weight_change": 0.5, "cka_debiased": 0.8, "cka": 0.85,
    ...                 "subspace_similarity": 0.7, "subspace_k": 3, "old_accuracy_after_reset": 0.3,
    ...                 "new_accuracy_after_reset": None}],
    ...     "resets": [{"kind": "block", "blocks": ["fc1"], "old_accuracy": 0.3, "new_accuracy": None, "label": "fc1"}]}
    >>> path = diagnosis_report(data, tempfile.mkdtemp())
    >>> path.name, path.read_text().count("<img")
    ('report.html', 3)
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from forgetlab.analysis.tables import BlockSimilarity
from forgetlab.errors import StoreError
from forgetlab.report.figures import new_figure, plot_block_similarity, save_figure
from forgetlab.report.html import html_figure, html_page, html_table

__all__ = ["diagnosis_report"]


def _weight_figure(d: Mapping[str, Any], stem: Path) -> list[Path]:
    names = [b["block"] for b in d["blocks"]]
    figure = new_figure(max(4.0, 0.8 * len(names) + 2.0), 3.2)
    axes = figure.subplots()
    axes.bar(range(len(names)), [b["weight_change"] or 0.0 for b in d["blocks"]], color="tab:orange")
    axes.set_xticks(range(len(names)), names, rotation=30 if len(names) > 6 else 0)
    axes.set_ylabel("relative weight change")
    axes.set_xlabel("block (input side first)")
    axes.grid(alpha=0.3, axis="y")
    return save_figure(figure, stem)


def _reset_figure(d: Mapping[str, Any], stem: Path) -> list[Path]:
    resets = d["resets"]
    labels = [r["label"] for r in resets]
    figure = new_figure(max(5.0, 0.5 * len(labels) + 3.0), 3.8)
    axes = figure.subplots()
    xs = range(len(labels))
    has_new = d["new_task"] is not None
    width = 0.4 if has_new else 0.8
    axes.bar([x - (width / 2 if has_new else 0) for x in xs], [r["old_accuracy"] for r in resets], width, label="old task")
    if has_new:
        axes.bar([x + width / 2 for x in xs], [r["new_accuracy"] or 0.0 for r in resets], width, label="new task")
    axes.axhline(d["old_task"]["old"], color="tab:blue", linestyle="--", linewidth=1, label="OLD on old task")
    axes.axhline(d["old_task"]["new"], color="tab:gray", linestyle=":", linewidth=1, label="NEW on old task")
    axes.set_xticks(list(xs), labels, rotation=45, ha="right", fontsize="small")
    loss = d.get("metric") == "loss"
    axes.set_ylabel("loss (nats per token)" if loss else "accuracy")
    if not loss:
        axes.set_ylim(0, 1.02)
    axes.set_title("NEW with these blocks rewound to OLD")
    axes.legend(fontsize="small")
    return save_figure(figure, stem)


def _similarity_rows(d: Mapping[str, Any]) -> list[BlockSimilarity]:
    n, blocks = d["n_samples"], d["blocks"]
    rows = []
    for b in blocks:
        if b["cka_debiased"] is None:  # no CKA for this block (see the notes)
            continue
        rows.append(BlockSimilarity(b["block"], "OLD vs NEW", "linear_cka_debiased", b["cka_debiased"], n, 0))
        rows.append(BlockSimilarity(b["block"], "OLD vs NEW", "linear_cka", b["cka"], n, 0))
    for b in blocks:
        if b["subspace_similarity"] is not None:
            rows.append(BlockSimilarity(b["block"], "OLD vs NEW", "subspace_similarity", b["subspace_similarity"], n, 0, d["k"]))
    return rows


def diagnosis_report(data: Mapping[str, Any], directory: str | Path, title: str = "forgetlab diagnose") -> Path:
    """Write the report files of one diagnosis (``Diagnosis.to_dict()``) into ``directory``;
    return the path of ``report.html``."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"Cannot create report folder {str(directory)!r}: {exc.strerror or exc}.") from None
    d = data
    figures = {
        "similarity": plot_block_similarity(_similarity_rows(d), directory / "similarity"),
        "weight_change": _weight_figure(d, directory / "weight_change"),
        "reset": _reset_figure(d, directory / "reset"),
    }
    (directory / "diagnosis.json").write_text(json.dumps(dict(d), indent=2) + "\n")
    loss = d.get("metric") == "loss"  # a causal LM: mean next-token loss (perplexity)
    if loss:
        pct = lambda v: "-" if v is None or not math.isfinite(v) else f"{v:.3f} (ppl {math.exp(v):.4g})"  # noqa: E731
    else:
        pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    num = lambda v: "-" if v is None or not math.isfinite(v) else f"{v:.3f}"  # noqa: E731
    short = "loss" if loss else "acc"
    n = lambda key: f" (n = {d['n_examples'][key]})" if key in d.get("n_examples", {}) else ""  # noqa: E731
    summary = [[f"old task{n('old_task')}", pct(d["old_task"]["old"]), pct(d["old_task"]["new"])]]
    if d["new_task"] is not None:
        summary.append([f"new task{n('new_task')}", pct(d["new_task"]["old"]), pct(d["new_task"]["new"])])
    block_rows = [
        [b["block"], num(b["weight_change"]), num(b["cka_debiased"]), num(b["cka"]),
         num(b["subspace_similarity"]) + (f" (k={b['subspace_k']})" if b["subspace_similarity"] is not None else ""),
         pct(b["old_accuracy_after_reset"]), pct(b["new_accuracy_after_reset"])]
        for b in d["blocks"]
    ]
    reset_rows = [[r["kind"], ", ".join(r["blocks"]), pct(r["old_accuracy"]), pct(r["new_accuracy"])] for r in d["resets"]]
    models = {k: v for k, v in d["sources"].items() if k in ("old_model", "new_model")}
    sources = "; ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in d["sources"].items() if k not in models)
    head = [f"<h1>{html.escape(title)}</h1>"]
    if models:
        head.append(f"<p>OLD = {html.escape(str(models.get('old_model', '(in memory)')))}; "
                    f"NEW = {html.escape(str(models.get('new_model', '(in memory)')))}</p>")
    if d.get("conclusion"):
        head.append(f"<p class=\"conclusion\"><b>Conclusion.</b> {html.escape(d['conclusion'])}</p>")
    if d.get("input_normalization"):
        head.append(f"<p>Input normalisation: {html.escape(d['input_normalization']['description'])}.</p>")
    if d.get("representation"):
        head.append(f"<p>{html.escape(d['representation'][0].upper() + d['representation'][1:])}.</p>")
    if loss:
        head.append("<p>Loss = mean next-token cross-entropy in nats per non-padding token (lower is better); "
                    "perplexity (ppl) = exp(loss).</p>")
    skipped = "".join(f"<p>Not rewound: {html.escape(k)}: {html.escape(v)}.</p>" for k, v in d.get("skipped", {}).items())
    skipped += "".join(f"<p>Note: {html.escape(note)}.</p>" for note in d.get("notes", []))
    page = html_page(title, [
        *head,
        f"<p>Data: {sources}. Similarities on {int(d['n_samples'])} old-task inputs; "
        f"subspace dimension k &le; {int(d['k'])}.</p>",
        f"<h2>{'Next-token loss' if loss else 'Accuracy'}</h2>{html_table(['', 'OLD', 'NEW'], summary)}",
        "<h2>Per block</h2>",
        "<p>Weight change = ||w_NEW - w_OLD|| / ||w_OLD||. CKA and subspace similarity compare OLD's and NEW's\n"
        "activations of each block (1 = same representation). \"If reset\": NEW with that block rewound to OLD.</p>",
        html_table(["block", "weight change", "CKA debiased", "CKA (biased)", "subspace sim", f"old {short} if reset",
                    f"new {short} if reset"], block_rows),
        f"<h2>Reset analysis</h2>{html_table(['kind', 'blocks rewound to OLD', f'old {short}', f'new {short}'], reset_rows)}{skipped}",
        "<h2>Figures</h2>" + "".join(html_figure(paths[0], name) for name, paths in figures.items()),
    ])
    path = directory / "report.html"
    path.write_text(page)
    return path
