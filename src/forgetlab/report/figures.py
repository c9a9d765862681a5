"""Every figure of forgetlab: one figure factory and one saver (PNG + SVG), one style.

Figures are drawn on matplotlib's Agg canvas (never pyplot: no global backend change)
with a constrained layout and saved by :func:`save_figure`, which appends ``.png`` and
``.svg`` to the whole stem name (``cka.v1`` -> ``cka.v1.png``, ``cka.v1.svg``).

Each Anatomy ``plot_*`` takes the per-seed ``data`` dicts of one analysis (as stored by
:func:`forgetlab.experiments.reproduce_anatomy`), a path stem and a ``subtitle`` (what the
figure shows: profile, dataset, model, n); it writes ``<stem>.png`` and ``<stem>.svg`` and
returns both paths (mean ± std over seeds).

Example:
    >>> import tempfile, pathlib
    >>> data = [{"k": [0, 1], "task2_accuracy": [0.9, 0.8], "task1_accuracy": [0.2, 0.5], "blocks": ["a"]}]
    >>> [p.suffix for p in plot_freeze(data, pathlib.Path(tempfile.mkdtemp()) / "freeze")]
    ['.png', '.svg']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from forgetlab.analysis.tables import BlockSimilarity
from forgetlab.errors import ConfigError

DPI = 120


def new_figure(width: float, height: float) -> Any:
    """A matplotlib ``Figure`` on an Agg canvas with a constrained layout (add axes with
    ``figure.subplots(...)``).

    Example:
        >>> new_figure(4, 3).get_size_inches().tolist()
        [4.0, 3.0]
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Any, stem: str | Path) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.svg`` (suffixes appended to the whole name; parent
    folders created); return both paths.

    Example:
        >>> import tempfile, pathlib
        >>> figure = new_figure(2, 2)
        >>> _ = figure.subplots().plot([0, 1])
        >>> [p.name for p in save_figure(figure, pathlib.Path(tempfile.mkdtemp()) / "cka.v1")]
        ['cka.v1.png', 'cka.v1.svg']
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")]
    for path in paths:
        figure.savefig(path, dpi=DPI)
    return paths


def mean_std(values: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (``ddof=1``, the n - 1 form) over the first axis; std is 0 for
    one seed.

    Example:
        >>> m, s = mean_std([[1.0, 2.0], [3.0, 2.0]])
        >>> m.tolist(), [round(x, 4) for x in s.tolist()]
        ([2.0, 2.0], [1.4142, 0.0])
    """
    array = np.asarray(values, dtype=float)
    mean = array.mean(axis=0)
    return mean, array.std(axis=0, ddof=1) if len(array) > 1 else np.zeros_like(mean)


def _band(ax: Any, x: Sequence[Any], values: Sequence[Sequence[float]], label: str, **style: Any) -> None:
    mean, std = mean_std(values)
    positions = np.arange(len(x)) if isinstance(x[0], str) else np.asarray(x, dtype=float)
    style.setdefault("marker", "o")
    line = ax.plot(positions, mean, label=label, **style)[0]
    if len(positions) == 1:  # one value: say it, so the panel does not read as empty
        ax.annotate(f"{mean[0]:.3f}", (positions[0], mean[0]), textcoords="offset points", xytext=(6, 6), fontsize=9)
    if len(values) > 1:
        ax.fill_between(positions, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    if isinstance(x[0], str):
        ax.set_xticks(positions)
        ax.set_xticklabels(x, rotation=30, ha="right")
    elif all(isinstance(v, int) for v in x):
        ax.set_xticks(positions)


def _legend(ax: Any) -> None:
    """The legend beside the axes (never over the data), at a readable size."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


def _titled(title: str, subtitle: str) -> str:
    """``title``, and on a second line what it shows (profile, dataset, model, n)."""
    return f"{title}\n{subtitle}" if subtitle else title


def _seeds_note(data: Sequence[Any]) -> str:
    return f"(mean ± sample std over {len(data)} seeds)" if len(data) > 1 else "(1 seed)"


def plot_freeze(data: Sequence[dict[str, Any]], stem: Path, subtitle: str = "") -> list[Path]:
    """Task-2 and task-1 accuracy vs number of frozen blocks k."""
    fig = new_figure(6.4, 3.6)
    ax = fig.subplots()
    k = data[0]["k"]
    _band(ax, k, [d["task2_accuracy"] for d in data], "task 2 accuracy")
    _band(ax, k, [d["task1_accuracy"] for d in data], "task 1 accuracy (after task 2)")
    ax.set_xlabel("blocks frozen after task 1 (k)")
    ax.set_ylabel("test accuracy")
    ax.set_title(_titled(f"Freeze sweep {_seeds_note(data)}", subtitle), fontsize=10)
    _legend(ax)
    return save_figure(fig, stem)


def plot_reset(data: Sequence[dict[str, Any]], stem: Path, subtitle: str = "") -> list[Path]:
    """Task-1 accuracy after resetting N blocks, top-down vs bottom-up."""
    fig = new_figure(6.4, 3.6)
    ax = fig.subplots()
    n = data[0]["n"]
    _band(ax, n, [d["top_down"] for d in data], "top-down (head side first)")
    _band(ax, n, [d["bottom_up"] for d in data], "bottom-up (input side first)")
    ax.axhline(float(np.mean([d["task1_before_task2"] for d in data])), color="grey", ls="--", lw=1, label="after task 1")
    ax.axhline(float(np.mean([d["task1_after_task2"] for d in data])), color="black", ls=":", lw=1, label="after task 2")
    ax.set_xlabel("blocks reset to post-task-1 weights (N)")
    ax.set_ylabel("task 1 accuracy")
    ax.set_title(_titled(f"Reset sweep {_seeds_note(data)}", subtitle), fontsize=10)
    _legend(ax)
    return save_figure(fig, stem)


def plot_cka(data: Sequence[dict[str, Any]], stem: Path, subtitle: str = "") -> list[Path]:
    """Per-block CKA before vs after task 2 (debiased; biased dashed)."""
    fig = new_figure(6.4, 3.6)
    ax = fig.subplots()
    blocks = data[0]["blocks"]
    _band(ax, blocks, [d["cka_debiased"] for d in data], "linear CKA (debiased)")
    _band(ax, blocks, [d["cka_biased"] for d in data], "linear CKA (biased)", ls="--", marker="s",
          markerfacecolor="none", markersize=8)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("CKA(task 1 model, task 1 then 2)")
    ax.set_title(_titled(f"CKA by block, task-1 test inputs {_seeds_note(data)}", subtitle), fontsize=10)
    _legend(ax)
    return save_figure(fig, stem)


def plot_cka_matrix(data: Sequence[dict[str, Any]], stem: Path, subtitle: str = "") -> list[Path]:
    """Block x block CKA heatmap (task-1 model rows, task-1-then-2 model columns), seed mean."""
    values = np.mean([d["matrix"] for d in data], axis=0)
    blocks = data[0]["blocks"]
    fig = new_figure(4.2, 3.6)
    ax = fig.subplots()
    image = ax.imshow(values, vmin=0, vmax=1, cmap="magma")
    ax.set_xticks(range(len(blocks)))
    ax.set_xticklabels(blocks, rotation=30, ha="right")
    ax.set_yticks(range(len(blocks)))
    ax.set_yticklabels(blocks)
    ax.set_xlabel("after task 2")
    ax.set_ylabel("after task 1")
    for i in range(len(blocks)):
        for j in range(len(blocks)):
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if values[i, j] < 0.6 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(_titled(f"Block-pair CKA (debiased) {_seeds_note(data)}", subtitle), fontsize=10)
    return save_figure(fig, stem)


def plot_subspace(data: Sequence[dict[str, Any]], stem: Path, subtitle: str = "") -> list[Path]:
    """Subspace similarity per block, three conditions."""
    fig = new_figure(6.4, 3.6)
    ax = fig.subplots()
    blocks = data[0]["blocks"]
    for condition in data[0]["conditions"]:
        _band(ax, blocks, [d["conditions"][condition] for d in data], condition)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel(f"subspace similarity (k={data[0]['k']})")
    ax.set_title(_titled(f"Subspace similarity {_seeds_note(data)}", subtitle), fontsize=10)
    _legend(ax)
    return save_figure(fig, stem)


def plot_mitigation(data: Sequence[dict[str, Any]], stem: Path, subtitle: str = "") -> list[Path]:
    """Per method: task-1 accuracy vs strength, and per-block CKA for each strength."""
    methods = list(data[0]["methods"])
    fig = new_figure(3.6 * len(methods), 6)
    axes = fig.subplots(2, len(methods), squeeze=False)
    blocks = data[0]["blocks"]
    for column, method in enumerate(methods):
        info = data[0]["methods"][method]
        values = info["values"]
        ax = axes[0][column]
        acc = [[p["task1_accuracy"] for p in d["methods"][method]["points"]] for d in data]
        mean, std = mean_std(acc)
        ax.errorbar(range(len(values)), mean, yerr=std if len(data) > 1 else None, marker="o")
        ax.axhline(float(np.mean([d["naive"]["task1_accuracy"] for d in data])), color="grey", ls="--", lw=1, label="naive")
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels([f"{v:g}" for v in values])
        ax.set_xlabel(f"{method} {info['parameter']}")
        ax.set_ylabel("task 1 accuracy after task 2")
        _legend(ax)
        ax = axes[1][column]
        _band(ax, blocks, [d["naive"]["cka_debiased"] for d in data], "naive", color="grey", ls="--")
        for index, value in enumerate(values):
            _band(ax, blocks, [d["methods"][method]["points"][index]["cka_debiased"] for d in data], f"{info['parameter']}={value:g}")
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("CKA before/after task 2 (debiased)")
        _legend(ax)
    fig.suptitle(_titled(f"Mitigation vs representation {_seeds_note(data)}", subtitle), fontsize=10)
    return save_figure(fig, stem)


def plot_class_pairs(data: Sequence[dict[str, Any]], stem: Path, subtitle: str = "") -> list[Path]:
    """Per-class forgetting of task 1's classes for each task-2 choice."""
    variants = data[0]["variants"]
    fig = new_figure(2.8 * len(variants), 3.2)
    axes = fig.subplots(1, len(variants), squeeze=False, sharey=True)
    for index, variant in enumerate(variants):
        ax = axes[0][index]
        forgetting = [d["variants"][index]["forgetting"] for d in data]
        mean, std = mean_std(forgetting)
        ax.bar(range(len(mean)), mean, yerr=std if len(data) > 1 else None, color="tab:red", alpha=0.8)
        ax.set_xticks(range(len(mean)))
        ax.set_xticklabels(variant["classes"], rotation=30, ha="right", fontsize=8)
        ax.set_title(variant["label"], fontsize=8)
        ax.axhline(0, color="black", lw=0.5)
    axes[0][0].set_ylabel("per-class forgetting (acc. drop)")
    fig.suptitle(_titled(f"Class-pair semantics {_seeds_note(data)}", subtitle), fontsize=10)
    return save_figure(fig, stem)


def mixup_overlaps(data: Sequence[dict[str, Any]]) -> dict[str, list[list[float]]]:
    """The trace overlaps a mixup result holds, per form: ``{"Fisher": ..., "Gram": ...}``
    (per seed); a result stored before the two forms has only ``trace_overlap`` (Fisher).

    Example:
        >>> list(mixup_overlaps([{"trace_overlap": [1.0, 0.5]}]))
        ['Fisher']
    """
    out = {}
    for label, key in (("Fisher", "trace_overlap_fisher"), ("Gram", "trace_overlap_gram")):
        if key in data[0]:
            out[label] = [d[key] for d in data]
    if not out and "trace_overlap" in data[0]:
        out["Fisher"] = [d["trace_overlap"] for d in data]
    return out


def plot_mixup(data: Sequence[dict[str, Any]], stem: Path, subtitle: str = "") -> list[Path]:
    """Forgetting vs mixup fraction alpha, with the trace overlaps (Fisher, Gram) on a second axis."""
    fig = new_figure(6.4, 3.6)
    ax = fig.subplots()
    alpha = data[0]["alpha"]
    _band(ax, alpha, [d["forgetting"] for d in data], "forgetting of task 1", color="tab:red")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("mixup fraction alpha (0 = task 1 again)")
    ax.set_ylabel("forgetting (acc. drop)", color="tab:red")
    twin = ax.twinx()
    for (label, values), (color, marker) in zip(mixup_overlaps(data).items(), (("tab:blue", "s"), ("tab:green", "^"))):
        _band(twin, alpha, values, f"trace overlap ({label})", color=color, ls="--", marker=marker)
    twin.set_ylabel("trace overlap (dashed)")
    lines = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
    twin.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=8, loc="upper left",
                bbox_to_anchor=(1.15, 1.0), borderaxespad=0.0, frameon=False)
    head = {"separate": "task 2 on a fresh head", "shared": "one shared head"}.get(data[0].get("head", "shared"), "")
    ax.set_title(_titled(f"Mixup-fraction sweep, {head} {_seeds_note(data)}", subtitle), fontsize=10)
    return save_figure(fig, stem)


def plot_block_similarity(rows: Sequence[BlockSimilarity], path_stem: str | Path) -> list[Path]:
    """Line plot of ``rows`` (x: blocks in first-seen order; one line per condition and measure).

    Writes ``path_stem.png`` and ``path_stem.svg`` and returns both paths.

    Example:
        >>> import tempfile, pathlib
        >>> rows = [BlockSimilarity(b, "a vs b", "linear_cka", v, 10, 4) for b, v in [("b1", 0.9), ("b2", 0.4)]]
        >>> paths = plot_block_similarity(rows, pathlib.Path(tempfile.mkdtemp()) / "cka")
        >>> [p.suffix for p in paths], all(p.stat().st_size > 0 for p in paths)
        (['.png', '.svg'], True)
    """
    if not rows:
        raise ConfigError("The 'rows' parameter of plot_block_similarity must hold at least one row.")
    blocks = list(dict.fromkeys(row.block for row in rows))
    series: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        label = row.measure if row.k is None else f"{row.measure} (k={row.k})"
        series.setdefault((row.condition, label), {})[row.block] = row.value
    figure = new_figure(max(4.0, 0.8 * len(blocks) + 2.0), 3.5)
    axes = figure.subplots()
    for (condition, label), values in series.items():
        xs = [i for i, b in enumerate(blocks) if b in values]
        axes.plot(xs, [values[blocks[i]] for i in xs], marker="o", label=f"{condition}: {label}")
    axes.set_xticks(range(len(blocks)), blocks, rotation=30 if len(blocks) > 6 else 0)
    axes.set_xlabel("block (input side first)")
    axes.set_ylabel("similarity")
    axes.set_ylim(min(0.0, min(row.value for row in rows)) - 0.02, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return save_figure(figure, path_stem)


PLOTS = {
    "freeze": [("freeze", plot_freeze)],
    "reset": [("reset", plot_reset)],
    "cka": [("cka", plot_cka), ("cka_matrix", plot_cka_matrix)],
    "subspace": [("subspace", plot_subspace)],
    "mitigation": [("mitigation", plot_mitigation)],
    "class_pairs": [("class_pairs", plot_class_pairs)],
    "mixup": [("mixup", plot_mixup)],
}
