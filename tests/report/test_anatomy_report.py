"""The HTML report is rebuilt from the store alone; figures come as PNG + SVG."""

from __future__ import annotations

import numpy as np
import pytest

from forgetlab.report import build_report, mean_std
from forgetlab.report.figures import plot_mixup, plot_reset
from forgetlab.store import ResultStore


def test_empty_store_gives_a_report_that_says_so(tmp_path):
    path = build_report(ResultStore(tmp_path / "s"), tmp_path / "out")
    text = path.read_text()
    assert "holds no Anatomy analyses" in text and "torch" in text


def test_report_from_stored_analysis_only(tmp_path):
    store = ResultStore(tmp_path / "s")
    data = {"n": [1, 2], "blocks": ["a", "b"], "top_down": [0.8, 0.9], "bottom_up": [0.2, 0.9],
            "task1_before_task2": 0.9, "task1_after_task2": 0.1, "run_ids": []}
    for seed in (0, 1):
        store.put_analysis("anatomy/reset", f"k{seed}", {
            "analysis": "reset", "seed": seed, "group": "g1", "profile": {"name": "x"}, "dataset": "digits",
            "model": "mlp", "seconds": 1.0, "data": data,
        })
    text = build_report(store, tmp_path / "out").read_text()
    assert "Reset sweep" in text and "0.800 ± 0.000" in text and "seeds [0, 1]" in text
    # top-down recovers 60 points more at N = 1 (after 90% -> 10%): the verdict with its criterion
    assert "<b>Finding 3: reproduced.</b>" in text and "averaged over N = 1..L-1" in text
    assert "<td>3. Rewinding the top blocks" in text and "docs/REPRODUCTION.md" in text
    assert (tmp_path / "out" / "reset-g1.png").is_file() and (tmp_path / "out" / "reset-g1.svg").is_file()


def test_figures_write_png_and_svg(tmp_path):
    mix = [{"alpha": [0.0, 0.5, 1.0], "forgetting": [0.0, 0.3, 0.1], "trace_overlap_fisher": [1.0, 0.6, 0.2],
            "trace_overlap_gram": [1.0, 0.5, 0.1]}] * 2
    assert [p.suffix for p in plot_mixup(mix, tmp_path / "m")] == [".png", ".svg"]
    reset = [{"n": [1], "top_down": [0.5], "bottom_up": [0.1], "task1_before_task2": 0.6, "task1_after_task2": 0.1}]
    assert all(p.stat().st_size > 0 for p in plot_reset(reset, tmp_path / "r"))
    mean, std = mean_std([[1.0], [3.0]])  # sample std of {1, 3}: sqrt(((1-2)^2 + (3-2)^2) / 1)
    assert mean.tolist() == [2.0] and std.tolist() == [pytest.approx(2**0.5)]
    mean, std = mean_std([[1.0, 5.0], [3.0, 5.0], [8.0, 5.0]])  # against numpy's n - 1 form
    assert std.tolist() == pytest.approx([float(np.std([1, 3, 8], ddof=1)), 0.0])
    assert mean_std([[4.0, 2.0]])[1].tolist() == [0.0, 0.0]  # one seed: no spread


def test_store_values_are_escaped(tmp_path):
    store = ResultStore(tmp_path / "s")
    evil = "<script>alert('x')"
    store.begin(evil, {"stream": {"stream": evil}, "method": {"name": "naive", "note": evil}}, "0.1.0")
    data = {"n": [1], "top_down": [0.5], "bottom_up": [0.1], "task1_before_task2": 0.6, "task1_after_task2": 0.1,
            "run_ids": [evil]}
    store.put_analysis("anatomy/reset", "k", {
        "analysis": "reset", "seed": evil, "group": "../../" + evil, "profile": {"name": evil}, "dataset": evil,
        "model": evil, "seconds": 1.0, "data": data,
    })
    text = build_report(store, tmp_path / "out").read_text()
    assert "<script" not in text and text.count("&lt;script&gt;") >= 6
    assert "<summary>&lt;script&gt;alert(&#x27;x&#x27;)</summary>" in text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["anatomy.html", "reset-_______s.png", "reset-_______s.svg"]


def test_mixup_table_shows_both_overlaps_and_reads_old_results(tmp_path):
    store = ResultStore(tmp_path / "s")
    new = {"alpha": [0.0, 0.5, 1.0], "forgetting": [0.01, 0.08, 0.02], "trace_overlap_fisher": [1.0, 0.7, 0.4],
           "trace_overlap_gram": [0.99, 0.61, 0.31], "head": "separate", "run_ids": []}
    old = {"alpha": [0.0, 1.0], "forgetting": [0.0, 0.1], "trace_overlap": [0.97, 0.93], "run_ids": []}
    for group, data in (("new", new), ("old", old)):
        store.put_analysis("anatomy/mixup", group, {
            "analysis": "mixup", "seed": 0, "group": group, "profile": {"name": "x"}, "dataset": "digits",
            "model": "mlp", "seconds": 1.0, "data": data})
    text = build_report(store, tmp_path / "out").read_text()
    assert "<th>trace overlap (Fisher)</th><th>trace overlap (Gram)</th>" in text
    assert "<td>0.5</td><td>0.080</td><td>0.700</td><td>0.610</td>" in text
    assert "<td>1.0</td><td>0.100</td><td>0.930</td></tr>" in text  # stored before the Gram form: Fisher only
    assert "<b>Finding 6: reproduced.</b>" in text and "<b>Finding 6: not reproduced.</b>" in text
    assert "<td>x (separate heads)</td>" in text and "<p>mixup heads <code>separate</code>" in text


def test_a_result_superseded_by_a_newer_version_is_left_out(tmp_path):
    store = ResultStore(tmp_path / "s")
    data = {"n": [1, 2], "blocks": ["a", "b"], "top_down": [0.8, 0.9], "bottom_up": [0.2, 0.9],
            "task1_before_task2": 0.9, "task1_after_task2": 0.1, "run_ids": []}
    common = {"analysis": "reset", "seed": 0, "profile": {"name": "x"}, "dataset": "digits", "model": "mlp", "seconds": 1.0}
    store.put_analysis("anatomy/reset", "old", {**common, "group": "gold", "data": data})  # no version: version 1
    store.put_analysis("anatomy/reset", "new", {**common, "group": "gnew", "version": 2, "data": data})
    store.put_analysis("anatomy/reset", "other", {**common, "group": "gother", "model": "vgg", "data": data})
    build_report(store, tmp_path / "out")
    figures = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert figures == ["reset-gnew.png", "reset-gother.png"]  # another model's version 1 is not superseded
