"""What a result store holds, one row per run: listed (``forgetlab runs``), shown
(``forgetlab show``) and exported (``forgetlab export``) for pandas and spreadsheets.

A row is a flat dict: ``run_id``, ``status``, the metrics (``acc``, ``bwt``,
``forgetting``, ``fwt`` where the initial accuracies are stored), every config key
flattened (``stream.dataset``, ``method.lam``, ...; lists as JSON text), ``R`` as JSON,
``wall_seconds``, ``created`` (ISO date) and ``error`` (failed runs).

Example:
    >>> import tempfile
    >>> from forgetlab.store import ResultStore
    >>> run_rows(ResultStore(tempfile.mkdtemp()))
    []
"""

from __future__ import annotations

import csv
import datetime
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forgetlab.errors import ConfigError, StoreError
from forgetlab.metrics import forward_transfer
from forgetlab.store import ResultStore, StoredRun

EXPORT_FORMATS = ("csv", "json", "parquet")
# The columns `forgetlab runs` prints, after run, status and method (its hyperparameters follow).
SUMMARY_KEYS = ("stream.dataset", "stream.stream", "stream.head", "model.name")


def flatten_config(config: dict[str, Any]) -> dict[str, Any]:
    """``{"stream": {"dataset": "mnist"}}`` -> ``{"stream.dataset": "mnist"}``; lists become JSON text.

    Example:
        >>> flatten_config({"stream": {"dataset": "mnist", "class_order": [1, 0]}, "method": {"name": "ewc"}})
        {'stream.dataset': 'mnist', 'stream.class_order': '[1, 0]', 'method.name': 'ewc'}
    """
    flat: dict[str, Any] = {}
    for section, values in config.items():
        if not isinstance(values, dict):
            flat[section] = values
            continue
        for key, value in values.items():
            flat[f"{section}.{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return flat


def run_row(run: StoredRun) -> dict[str, Any]:
    """The flat row of one stored run (see the module docstring)."""
    matrix = run.accuracy_matrix
    fwt = None
    if matrix is not None and run.initial_accuracy is not None and len(matrix) > 1:
        fwt = float(forward_transfer(matrix, run.initial_accuracy))
    created = datetime.datetime.fromtimestamp(run.created).isoformat(timespec="seconds") if run.created else None
    return {
        "run_id": run.run_id,
        "status": run.status,
        "acc": run.metrics.get("acc"),
        "bwt": run.metrics.get("bwt"),
        "forgetting": run.metrics.get("forgetting"),
        "fwt": fwt,
        "wall_seconds": run.wall_seconds,
        "created": created,
        **flatten_config(run.config),
        "R": json.dumps(matrix) if matrix is not None else None,
        "error": run.error,
    }


def parse_filters(items: Sequence[str]) -> dict[str, str]:
    """``["method.name=ewc"]`` -> ``{"method.name": "ewc"}`` (one-line error on a malformed item)."""
    filters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"The --where option must look like KEY=VALUE (e.g. method.name=ewc). Got {item!r}.")
        filters[key.strip()] = value.strip()
    return filters


def _matches(row: dict[str, Any], filters: dict[str, str]) -> bool:
    for key, wanted in filters.items():
        if key not in row:
            return False
        value = row[key]
        text = json.dumps(value) if isinstance(value, bool) else str(value)
        if text != wanted:
            try:
                if float(value) != float(wanted):
                    return False
            except (TypeError, ValueError):
                return False
    return True


def run_rows(store: ResultStore, *, where: dict[str, str] | None = None, status: str | None = None) -> list[dict[str, Any]]:
    """Every stored run's row, oldest first; ``where`` keeps rows whose flattened key has that
    value (numbers compared as numbers: ``method.lam=1e5`` matches 100000.0), ``status``
    keeps ``finished``, ``failed`` or ``running`` runs."""
    rows = []
    for run_id, run_status in store.list_runs():
        if status is not None and run_status != status:
            continue
        run = store.get(run_id)
        if run is None:
            continue
        row = run_row(run)
        if _matches(row, where or {}):
            rows.append(row)
    return rows


def existing_store(path: str | Path) -> ResultStore:
    """The store at ``path``, which must already exist (a typo must not create an empty store)."""
    root = Path(path)
    if not (root / "forgetlab.sqlite").is_file():
        raise StoreError(
            f"No result store at {str(root)!r} (no forgetlab.sqlite there). Check --store or $FORGETLAB_STORE."
        )
    return ResultStore(root)


def format_percent(value: float | None, sign: bool = False) -> str:
    """A fraction as a percentage with one decimal (``-`` for ``None``)."""
    if value is None:
        return "-"
    return f"{100 * value:+.1f}" if sign else f"{100 * value:.1f}"


def format_runs(rows: Sequence[dict[str, Any]]) -> str:
    """The ``forgetlab runs`` table: one line per run."""
    header = ["run", "status", "dataset", "stream", "head", "model", "method", "ACC %", "BWT %", "forgetting %",
              "wall s", "date"]
    table = [header]
    for row in rows:
        table.append([
            row["run_id"], row["status"], *(str(row.get(k, "")) for k in SUMMARY_KEYS), _method_label(row),
            format_percent(row["acc"]), format_percent(row["bwt"], sign=True), format_percent(row["forgetting"]),
            f"{row['wall_seconds']:.1f}" if row["wall_seconds"] is not None else "-",
            (row["created"] or "-").replace("T", " "),
        ])
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join("  ".join(f"{cell:<{w}}" for cell, w in zip(line, widths)).rstrip() for line in table)


def run_figures(store: ResultStore, run_id: str) -> list[Path]:
    """The figure files (PNG, SVG) in a run's folder."""
    folder = store.root / "runs" / run_id
    return sorted(p for p in folder.glob("*") if p.suffix in (".png", ".svg")) if folder.is_dir() else []


def export_runs(rows: Sequence[dict[str, Any]], out: str | Path, fmt: str) -> Path:
    """Write ``rows`` to ``out`` as CSV (one header line, the union of all keys), a JSON array,
    or Parquet (needs ``pyarrow``: ``pip install 'forgetlab[parquet]'``)."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"The --format option must be one of {', '.join(map(repr, EXPORT_FORMATS))}. Got {fmt!r}.")
    path = Path(out)
    if not path.parent.is_dir():
        raise ConfigError(f"The --out option must be a file in an existing folder. Got {str(path)!r}.")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError("--format parquet needs pyarrow: pip install 'forgetlab[parquet]'") from None
        data = {}
        for column in columns:
            values = [row.get(column) for row in rows]
            try:
                data[column] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types across runs: keep them as text
                data[column] = pa.array([None if v is None else str(v) for v in values])
        table = pa.table(data)
        pq.write_table(table, path)
    elif fmt == "json":
        path.write_text(json.dumps([{c: row.get(c) for c in columns} for row in rows], indent=1) + "\n")
    else:
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    return path


def plot_run(run: StoredRun, folder: str | Path) -> list[Path]:
    """A run's figures, written into ``folder`` (its run folder): ``accuracy-matrix``, the
    heatmap of R (test accuracy on task j after training through task i, in %), and
    ``learning-curves``, every task's test accuracy through the whole stream against the
    optimizer step, with the task boundaries marked. PNG + SVG each; returns the paths.

    Example:
        >>> import tempfile
        >>> from forgetlab.store import StoredRun
        >>> run = StoredRun("abc", {}, "finished", "cpu", 1.0, 1.0, None, [[0.9, 0.1], [0.5, 0.95]], [0.1, 0.1],
        ...                 {}, [{"task_index": 0, "epoch": 1.0, "step": 10, "accuracies": [0.9, 0.1]},
        ...                      {"task_index": 1, "epoch": 1.0, "step": 20, "accuracies": [0.5, 0.95]}], None)
        >>> sorted(p.name for p in plot_run(run, tempfile.mkdtemp()))
        ['accuracy-matrix.png', 'accuracy-matrix.svg', 'learning-curves.png', 'learning-curves.svg']
    """
    from forgetlab.report.figures import new_figure, save_figure

    folder = Path(folder)
    paths: list[Path] = []
    title = _run_title(run)
    if run.accuracy_matrix is not None:
        matrix = [[100 * v for v in row] for row in run.accuracy_matrix]
        n = len(matrix)
        size = min(3.2 + 0.55 * n, 9.0)
        figure = new_figure(max(size + 1.2, 6.0), size + 0.4)
        ax = figure.subplots()
        image = ax.imshow(matrix, vmin=0, vmax=100, cmap="viridis")
        if n <= 12:
            for i, row in enumerate(matrix):
                for j, value in enumerate(row):
                    ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=9,
                            color="black" if value > 60 else "white")
        ax.set_xticks(range(n), [str(j + 1) for j in range(n)])
        ax.set_yticks(range(n), [str(i + 1) for i in range(n)])
        ax.set_xlabel("evaluated on task j")
        ax.set_ylabel("after training through task i")
        ax.set_title(f"Accuracy matrix R (%)\n{title.replace(', ', chr(10), 1)}", fontsize=10)
        figure.colorbar(image, ax=ax, label="test accuracy (%)")
        paths += save_figure(figure, folder / "accuracy-matrix")
    if run.curves:
        figure = new_figure(7.0, 4.0)
        ax = figure.subplots()
        steps = [point["step"] for point in run.curves]
        n_tasks = len(run.curves[0]["accuracies"])
        for task in range(n_tasks):
            ax.plot(steps, [100 * point["accuracies"][task] for point in run.curves], marker="o", markersize=3,
                    label=f"task {task + 1}")
        boundaries = [a["step"] for a, b in zip(run.curves, run.curves[1:]) if b["task_index"] != a["task_index"]]
        for step in boundaries:
            ax.axvline(step, color="0.6", linestyle="--", linewidth=0.8)
        ax.set_xlabel("optimizer step (dashed: a new task starts)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.set_title(f"Learning curves: every task through the stream\n{title}", fontsize=10)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
        paths += save_figure(figure, folder / "learning-curves")
    return paths


def _run_title(run: StoredRun) -> str:
    stream, model, method = (run.config.get(k, {}) for k in ("stream", "model", "method"))
    parts = [f"run {run.run_id}"]
    if stream:
        parts.append(f"{stream.get('dataset')} / {stream.get('stream')} ({stream.get('head')}-head)")
    if model:
        parts.append(str(model.get("name")))
    if method:
        parts.append(f"method {method.get('name')}")
    return ", ".join(parts)


def method_groups(rows: Sequence[dict[str, Any]]) -> list[tuple[str, dict[str, dict[str, list[float]]]]]:
    """Finished runs that differ only in their method (and seed), grouped: one entry per
    setting with at least two methods, ``(setting, {method label: {"acc": [...],
    "forgetting": [...]}})`` with one value per seed; a label is the method's name and its
    hyperparameters that differ from the method's defaults (``ewc lam=100.0``).

    Example:
        >>> rows = [{"status": "finished", "stream.dataset": "digits", "train.seed": s, "method.name": m,
        ...          "acc": a, "forgetting": 0.1} for s in (0, 1) for m, a in (("naive", 0.5), ("ewc", 0.7))]
        >>> [(setting, sorted(methods)) for setting, methods in method_groups(rows)]
        [('digits', ['ewc', 'naive'])]
    """
    groups: dict[tuple, dict[str, dict[str, list[float]]]] = {}
    names: dict[tuple, str] = {}
    for row in rows:
        if row.get("status") != "finished" or row.get("acc") is None:
            continue
        setting = tuple(sorted((k, str(v)) for k, v in row.items()
                               if "." in k and not k.startswith("method.") and k != "train.seed"))
        names[setting] = " / ".join(str(row[k]) for k in SUMMARY_KEYS if k in row)
        cell = groups.setdefault(setting, {}).setdefault(_method_label(row), {"acc": [], "forgetting": []})
        cell["acc"].append(row["acc"])
        cell["forgetting"].append(row["forgetting"] if row.get("forgetting") is not None else float("nan"))
    return [(names[setting], methods) for setting, methods in groups.items() if len(methods) >= 2]


def _method_label(row: dict[str, Any]) -> str:
    """``ewc lam=100.0``: the method's name and its hyperparameters that are not the defaults."""
    import dataclasses

    from forgetlab.hyperparams import params_type

    name = str(row.get("method.name", "?"))
    try:
        defaults = {f.name: f.default for f in dataclasses.fields(params_type(name))}
    except ConfigError:  # an unknown (older) method, or a composite: show every hyperparameter
        defaults = {}
    params = [f"{k.split('.', 1)[1]}={row[k]}" for k in row if k.startswith("method.") and k != "method.name"
              and defaults.get(k.split(".", 1)[1], object()) != row[k]]
    return " ".join([name, *params])
