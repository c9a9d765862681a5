"""The one HTML writer (page, table, embedded figure) and the Anatomy report built with it.

:func:`build_report` rebuilds one self-contained HTML report of the Anatomy analyses
from the result store alone: the figures (PNG embedded as base64; the SVG files sit
beside it), a table per analysis, the exact config (JSON) of every run it used, and the
software versions. Every value read from the store is HTML-escaped. A store without
Anatomy analyses gets ``report.html`` instead: its runs, the methods its sweeps compared
and the latest learning curves.

Example:
    >>> import tempfile
    >>> from forgetlab.store import ResultStore
    >>> path = build_report(ResultStore(tempfile.mkdtemp()), tempfile.mkdtemp())
    >>> path.name  # an empty store: the runs report (it says the store holds no runs yet)
    'report.html'
"""

from __future__ import annotations

import base64
import html
import json
import platform
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from forgetlab._version import __version__
from forgetlab.report.figures import PLOTS, mean_std, mixup_overlaps
from forgetlab.report.verdicts import FINDINGS, judge
from forgetlab.store import ResultStore

TITLES = {
    "freeze": "Freeze sweep (finding 1)",
    "reset": "Reset sweep (finding 3)",
    "cka": "CKA by block before/after task 2 (finding 2)",
    "subspace": "Subspace similarity, three conditions (finding 4)",
    "mitigation": "Mitigation vs representation (finding 5)",
    "class_pairs": "Class-pair semantics",
    "mixup": "Mixup-fraction sweep and trace overlap (finding 6)",
}
ORDER = tuple(TITLES)


def software_versions() -> dict[str, str]:
    """Versions of python, torch, numpy, matplotlib, forgetlab and the platform.

    Example:
        >>> sorted(software_versions())[:3]
        ['forgetlab', 'matplotlib', 'numpy']
    """
    import matplotlib
    import numpy
    import torch

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "matplotlib": matplotlib.__version__,
        "forgetlab": __version__,
        "platform": platform.platform(),
    }


def _pm(values: Iterable[float]) -> str:
    return _column([[v] for v in values])[0]


STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
td:first-child { text-align: left; }
th { background: #f0f0f0; }
img { max-width: 100%; }
figure { display: inline-block; margin: 0.5em; }
.verdict { padding: 0.5em 0.8em; margin: 0.5em 0; border: 1px solid #bbb; font-size: 0.9em; }
details pre { font-size: 0.75em; background: #f7f7f7; padding: 0.5em; overflow-x: auto; }
"""


def html_page(title: str, body: Iterable[str]) -> str:
    """A whole HTML document: ``title`` (escaped) and the ``body`` fragments (already HTML).

    Example:
        >>> html_page("a<b", ["<p>x</p>"]).count("a&lt;b")
        1
    """
    head = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
    return "\n".join([head, f"<style>{STYLE}</style></head><body>", *body, "</body></html>"])


def html_table(header: Iterable[Any], rows: Iterable[Iterable[Any]]) -> str:
    """An HTML table; every header and cell is converted with ``str`` and escaped.

    Example:
        >>> html_table(["run"], [["<script>"]])
        '<table><tr><th>run</th></tr><tr><td>&lt;script&gt;</td></tr></table>'
    """
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_figure(png: Path, caption: str) -> str:
    """The PNG file embedded as base64 (no external file needed), with its caption.

    Example:
        >>> import tempfile, pathlib
        >>> png = pathlib.Path(tempfile.mkdtemp()) / "f.png"
        >>> _ = png.write_bytes(b"png")
        >>> html_figure(png, "cka")
        "<figure><img alt='cka' src='data:image/png;base64,cG5n'><figcaption>cka</figcaption></figure>"
    """
    encoded = base64.b64encode(Path(png).read_bytes()).decode()
    caption = html.escape(caption, quote=True)
    return f"<figure><img alt='{caption}' src='data:image/png;base64,{encoded}'><figcaption>{caption}</figcaption></figure>"


def _column(data: list[Any], *path: Any) -> list[str]:
    """Per-position mean ± std over seeds of ``data[seed][path...]`` (a list)."""
    values = []
    for d in data:
        item: Any = d
        for key in path:
            item = item[key]
        values.append(item)
    mean, std = mean_std(values)
    return [f"{m:.3f}" + (f" ± {s:.3f}" if len(data) > 1 else "") for m, s in zip(mean, std)]


DOCS = "docs/REPRODUCTION.md"


def verdict_box(finding: dict[str, Any]) -> str:
    """A finding's verdict, the paper's claim, the criterion and the measured numbers, in plain words.

    Example:
        >>> from forgetlab.report.verdicts import judge
        >>> "not run" in verdict_box(judge("mixup", None))
        True
    """
    colour = {"reproduced": "#dfd", "partly": "#ffd", "not reproduced": "#fdd"}.get(finding["verdict"], "#eee")
    lines = [f"<b>Finding {finding['id']}: {html.escape(finding['verdict'])}.</b>",
             f"The paper's claim: {html.escape(finding['claim'])}",
             f"How it is judged (fixed before the runs; see <code>{DOCS}</code>): {html.escape(finding['criterion'])}",
             f"Measured (mean over seeds): {html.escape(finding['measured'])}."]
    return f"<div class='verdict' style='background:{colour}'>" + "<br>".join(lines) + "</div>"


def analysis_table(name: str, data: list[dict[str, Any]]) -> str:
    """The HTML table of one analysis (means ± std over seeds)."""
    first = data[0]
    if name == "freeze":
        t2, t1 = _column(data, "task2_accuracy"), _column(data, "task1_accuracy")
        return html_table(["k (blocks frozen)", "task 2 acc.", "task 1 acc. after task 2"], [[k, a, b] for k, a, b in zip(first["k"], t2, t1)])
    if name == "reset":
        td, bu = _column(data, "top_down"), _column(data, "bottom_up")
        rows = [[n, a, b] for n, a, b in zip(first["n"], td, bu)]
        rows.append(["(after task 1)", _pm([d["task1_before_task2"] for d in data]), ""])
        rows.append(["(after task 2, no reset)", _pm([d["task1_after_task2"] for d in data]), ""])
        return html_table(["N blocks reset", "top-down: task 1 acc.", "bottom-up: task 1 acc."], rows)
    if name == "cka":
        deb, bia = _column(data, "cka_debiased"), _column(data, "cka_biased")
        return html_table(["block", "CKA debiased", "CKA biased"], [[b, x, y] for b, x, y in zip(first["blocks"], deb, bia)])
    if name == "subspace":
        conditions = list(first["conditions"])
        cols = [_column(data, "conditions", c) for c in conditions]
        return html_table(["block", *conditions], [[b, *(c[i] for c in cols)] for i, b in enumerate(first["blocks"])])
    if name == "mitigation":
        rows = [["naive", "", _pm([d["naive"]["task1_accuracy"] for d in data]),
                 _pm([d["naive"]["task2_accuracy"] for d in data]), *_column(data, "naive", "cka_debiased")]]
        for method, info in first["methods"].items():
            for index, value in enumerate(info["values"]):
                points = [d["methods"][method]["points"][index] for d in data]
                rows.append([method, f"{info['parameter']}={value:g}", _pm([p["task1_accuracy"] for p in points]),
                             _pm([p["task2_accuracy"] for p in points]),
                             *_column(points, "cka_debiased")])
        return html_table(["method", "strength", "task 1 acc.", "task 2 acc.", *(f"CKA {b}" for b in first["blocks"])], rows)
    if name == "class_pairs":
        rows = []
        for index, variant in enumerate(first["variants"]):
            points = [d["variants"][index] for d in data]
            before, after, forget = _column(points, "before"), _column(points, "after"), _column(points, "forgetting")
            for c, cls in enumerate(variant["classes"]):
                rows.append([variant["label"], cls, before[c], after[c], forget[c]])
        return html_table(["variant", "task-1 class", "acc. after task 1", "acc. after task 2", "forgetting"], rows)
    if name == "mixup":
        overlaps = {label: _column(values) for label, values in mixup_overlaps(data).items()}
        columns = [_column(data, "forgetting"), *overlaps.values()]
        return html_table(["alpha", "forgetting of task 1", *(f"trace overlap ({label})" for label in overlaps)],
                          [[a, *(c[i] for c in columns)] for i, a in enumerate(first["alpha"])])
    return f"<pre>{html.escape(json.dumps(data, indent=1)[:5000])}</pre>"


def _setting(value: dict[str, Any]) -> str:
    return json.dumps([value["analysis"], value.get("profile"), value.get("dataset"), value.get("model")],
                      sort_keys=True, default=str)


def build_report(store: ResultStore | str | Path, out_dir: str | Path, *, groups: Iterable[str] | None = None) -> Path:
    """Write ``anatomy.html`` (+ one PNG and SVG per figure) into ``out_dir`` from the
    store's ``anatomy/*`` analyses (only the given analysis ``groups`` if set; a result
    superseded by a newer ``version`` of its analysis for the same profile, dataset and
    model is left out); return its path.
    Without any Anatomy analysis, write the runs report ``report.html`` instead."""
    if not isinstance(store, ResultStore):
        store = ResultStore(store)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = set(groups) if groups is not None else None
    by_name: dict[str, dict[str, list[dict[str, Any]]]] = {}
    newest: dict[str, int] = {}  # an analysis of one profile, dataset and model: its newest stored version
    entries_found = []
    for name, _, value in store.list_analyses("anatomy/"):
        if wanted is not None and value["group"] not in wanted:
            continue
        entries_found.append(value)
        setting = _setting(value)
        newest[setting] = max(newest.get(setting, 1), int(value.get("version", 1)))
    for value in entries_found:  # results superseded by a newer version of their analysis are left out
        if int(value.get("version", 1)) == newest[_setting(value)]:
            by_name.setdefault(value["analysis"], {}).setdefault(value["group"], []).append(value)
    parts = ["<h1>Anatomy of Catastrophic Forgetting: reproduction report</h1>",
             "<p>Built by <code>forgetlab report</code> from the result store "
             f"<code>{html.escape(str(store.root))}</code> alone. Accuracies are fractions; "
             "values are mean ± sample std (n - 1) over seeds where there are several.</p>"]
    run_ids: list[str] = []
    glance: list[list[Any]] = []
    if not by_name:
        return _runs_report(store, out_dir)
    for name in sorted(by_name, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        for group, entries in by_name[name].items():
            entries = sorted(entries, key=lambda v: v["seed"])
            data = [e["data"] for e in entries]
            meta = entries[0]
            parts.append(f"<h2>{html.escape(str(TITLES.get(name, name)))}</h2>")
            head = data[0].get("head") if name == "mixup" else None
            parts.append(
                (f"<p>mixup heads <code>{html.escape(str(head))}</code>, " if head else "<p>")
                + f"profile <code>{html.escape(str(meta['profile']['name']))}</code>, dataset "
                f"<code>{html.escape(str(meta['dataset']))}</code>, model <code>{html.escape(str(meta['model']))}</code>, "
                f"seeds {html.escape(str([e['seed'] for e in entries]))}, "
                f"computed in {sum(float(e['seconds']) for e in entries):.0f} s.</p>"
            )
            tag = re.sub(r"[^A-Za-z0-9_-]", "_", str(group)[:8])  # a file name, whatever the store holds
            subtitle = (f"{meta['profile']['name']} profile, {meta['dataset']}, {meta['model']}, "
                        f"seeds {[e['seed'] for e in entries]}")
            if name in FINDINGS:
                finding = judge(name, data)
                parts.append(verdict_box(finding))
                setting = str(meta["profile"]["name"])
                if name == "mixup" and data[0].get("head", "shared") != "shared":
                    setting += f" ({data[0]['head']} heads)"
                glance.append([f"{finding['id']}. {finding['claim']}", setting, meta["dataset"], meta["model"],
                               len(entries), finding["verdict"]])
            for figure_name, plot in PLOTS.get(name, []):
                png, _svg = plot(data, out_dir / f"{figure_name}-{tag}", subtitle)
                parts.append(html_figure(png, figure_name))
            parts.append(analysis_table(name, data))
            for d in data:
                run_ids += [r for r in d.get("run_ids", []) if r not in run_ids]
    if glance:
        parts[2:2] = ["<h2>The paper's findings: verdicts</h2>",
                      "<p>Each finding is judged by a number and a threshold fixed before the runs (the reasons: "
                      f"<code>{DOCS}</code>, section &ldquo;How each finding is judged&rdquo;, in the forgetlab "
                      "repository); the section of each finding below says how.</p>",
                      html_table(["finding: the paper's claim", "profile", "dataset", "model", "seeds", "verdict"],
                                 sorted(glance, key=lambda row: int(row[0].split(".")[0])))]
    parts.append("<h2>Runs and their exact configs</h2>")
    rows = []
    configs = []
    for run_id in run_ids:
        stored = store.get(run_id)
        if stored is None:
            continue
        reuse = store.reuse_source(run_id)
        cfg = stored.config
        rows.append([run_id, stored.status, cfg["stream"]["stream"], cfg["method"]["name"],
                     json.dumps({k: v for k, v in cfg["method"].items() if k != "name"}),
                     f"{stored.wall_seconds or 0:.1f}", "task 1 from " + Path(reuse[0]).parts[-3] if reuse else "",
                     " / ".join(f"{v:.3f}" for row in (stored.accuracy_matrix or []) for v in row)])
        configs.append(f"<details><summary>{html.escape(str(run_id))}</summary><pre>{html.escape(json.dumps(cfg, indent=2, sort_keys=True))}</pre></details>")
    parts.append(html_table(["run", "status", "stream", "method", "hyperparameters", "wall s", "prefix reuse", "R (row-major)"], rows))
    parts += configs
    parts.append("<h2>Software</h2>")
    parts.append(html_table(["package", "version"], software_versions().items()))
    path = out_dir / "anatomy.html"
    path.write_text(html_page("forgetlab: Anatomy of Catastrophic Forgetting", parts))
    return path


def _runs_report(store: ResultStore, out_dir: Path) -> Path:
    """``report.html`` for a store without Anatomy analyses: its runs (a table), a comparison
    of methods wherever runs differ only in method and seed (a sweep over methods), and the
    learning curves of the latest runs."""
    from forgetlab.report.figures import new_figure, save_figure
    from forgetlab.report.runs import format_percent, method_groups, plot_run, run_rows

    rows = run_rows(store)
    parts = ["<h1>forgetlab: the runs in a result store</h1>",
             f"<p>Built by <code>forgetlab report</code> from <code>{html.escape(str(store.root))}</code> alone "
             f"({len(rows)} runs; the store holds no Anatomy analyses: <code>forgetlab reproduce anatomy</code> adds "
             "them). ACC: mean test accuracy over all tasks after the last one; BWT: mean change on the earlier tasks "
             "since each was learned; forgetting: mean drop from each earlier task's best accuracy; in %.</p>"]
    if not rows:
        parts.append("<h2>Runs</h2><p><b>The store holds no runs yet.</b> <code>forgetlab run</code> or "
                     "<code>forgetlab sweep</code> add them.</p>")
    else:
        parts.append("<h2>Runs</h2>")
        parts.append(html_table(
            ["run", "status", "dataset", "stream", "head", "model", "method", "seed", "ACC", "BWT", "forgetting", "wall s"],
            [[r["run_id"], r["status"], r.get("stream.dataset"), r.get("stream.stream"), r.get("stream.head"),
              r.get("model.name"), r.get("method.name"), r.get("train.seed"), format_percent(r["acc"]),
              format_percent(r["bwt"], sign=True), format_percent(r["forgetting"]),
              f"{r['wall_seconds']:.1f}" if r["wall_seconds"] is not None else "-"] for r in rows]))
    for index, (setting, methods) in enumerate(method_groups(rows)):
        parts.append(f"<h2>Methods compared ({html.escape(setting)})</h2>")
        labels = list(methods)
        acc = [[100 * v for v in methods[m]["acc"]] for m in labels]
        forget = [[100 * v for v in methods[m]["forgetting"]] for m in labels]
        figure = new_figure(max(5.0, 1.1 * len(labels) + 2.0), 3.8)
        ax_acc, ax_forget = figure.subplots(1, 2)
        for ax, values, name in ((ax_acc, acc, "ACC (%)"), (ax_forget, forget, "forgetting (%)")):
            means = [sum(v) / len(v) for v in values]
            errors = [(max(v) - min(v)) / 2 if len(v) > 1 else 0.0 for v in values]
            ax.bar(range(len(labels)), means, yerr=errors, capsize=3, color="tab:blue" if ax is ax_acc else "tab:red")
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel(name)
        seeds = max(len(v) for v in acc)
        figure.suptitle(f"Methods compared: {setting}\nup to {seeds} seed(s) per method; bars: mean, whiskers: half the range",
                        fontsize=9)
        png, _svg = save_figure(figure, out_dir / f"methods-{index + 1}")
        parts.append(html_figure(png, f"methods compared: {setting}"))
        parts.append(html_table(["method", "seeds", "ACC", "forgetting"],
                                [[m, len(methods[m]["acc"]), _pm(methods[m]["acc"]), _pm(methods[m]["forgetting"])]
                                 for m in labels]))
    latest = [r for r in rows if r["status"] == "finished"][-6:]
    if latest:
        parts.append("<h2>Learning curves of the latest runs</h2>")
        for row in latest:
            run = store.get(row["run_id"])
            if run is None or not run.curves:
                continue
            paths = plot_run(run, out_dir / "runs" / row["run_id"])
            png = next(p for p in paths if p.name == "learning-curves.png")
            parts.append(html_figure(png, f"run {row['run_id']}: {row.get('method.name')}, seed {row.get('train.seed')}"))
    parts.append("<h2>Software</h2>")
    parts.append(html_table(["package", "version"], software_versions().items()))
    path = out_dir / "report.html"
    path.write_text(html_page("forgetlab: results report", parts))
    return path
