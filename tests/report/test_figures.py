"""One figure saver for every figure: PNG + SVG, suffixes appended to the whole stem name."""

from __future__ import annotations

from forgetlab.analysis import BlockSimilarity
from forgetlab.report import diagnosis_report, new_figure, plot_block_similarity, save_figure
from forgetlab.report.figures import plot_freeze


def test_a_dot_in_a_figure_name_is_kept_by_every_plot(tmp_path):
    figure = new_figure(2, 2)
    figure.subplots().plot([0, 1])
    assert [p.name for p in save_figure(figure, tmp_path / "cka.v1")] == ["cka.v1.png", "cka.v1.svg"]
    rows = [BlockSimilarity("fc", "a vs b", "linear_cka", 0.5, 10, 4)]
    assert [p.name for p in plot_block_similarity(rows, tmp_path / "cka.v2")] == ["cka.v2.png", "cka.v2.svg"]
    freeze = [{"k": [0, 1], "task2_accuracy": [0.9, 0.8], "task1_accuracy": [0.2, 0.5]}]
    assert [p.name for p in plot_freeze(freeze, tmp_path / "sub" / "freeze.seed0")] == ["freeze.seed0.png", "freeze.seed0.svg"]
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert names == ["cka.v1.png", "cka.v1.svg", "cka.v2.png", "cka.v2.svg"]  # two names, four files: no overwrite
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in tmp_path.rglob("*.png"))


def _diagnosis(evil: str) -> dict:
    block = {"block": evil, "weight_change": 0.5, "cka_debiased": 0.8, "cka": 0.85, "subspace_similarity": None,
             "subspace_k": 0, "old_accuracy_after_reset": 0.3, "new_accuracy_after_reset": 0.6}
    return {"old_task": {"old": 0.9, "new": 0.2}, "new_task": {"old": 0.1, "new": 0.95}, "n_samples": 100, "k": 3,
            "sources": {"data": evil}, "blocks": [block],
            "resets": [{"kind": "block", "blocks": [evil], "old_accuracy": 0.3, "new_accuracy": 0.6, "label": evil}]}


def test_diagnosis_report_escapes_and_writes_figures(tmp_path):
    evil = "<script>alert(1)"
    path = diagnosis_report(_diagnosis(evil), tmp_path / "r", title="t<b>")
    page = path.read_text()
    assert "<script" not in page and "<b>" not in page and page.count("<img") == 3
    assert "<title>t&lt;b&gt;</title>" in page and "&lt;script&gt;alert(1)" in page
    for stem in ("similarity", "weight_change", "reset"):
        assert (tmp_path / "r" / f"{stem}.png").stat().st_size > 0 and (tmp_path / "r" / f"{stem}.svg").is_file()
    assert (tmp_path / "r" / "diagnosis.json").is_file()



def test_anatomy_figures_keep_legends_off_the_data_and_label_single_values(tmp_path, monkeypatch):
    import forgetlab.report.figures as figures

    captured = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, stem: captured.append(fig) or [])
    data = [{"blocks": ["conv1", "conv2", "fc"], "cka_debiased": [0.9, 0.8, 0.7], "cka_biased": [0.91, 0.8, 0.69]}]
    figures.plot_cka(data, tmp_path / "cka")
    figures.plot_freeze([{"k": [1], "task2_accuracy": [0.8], "task1_accuracy": [0.4], "blocks": ["a"]}], tmp_path / "f")
    cka, freeze = captured
    for fig in (cka, freeze):
        fig.canvas.draw()
        ax = fig.axes[0]
        legend = ax.get_legend().get_window_extent()
        assert not legend.overlaps(ax.get_window_extent())  # beside the axes, never over the data
    lines = cka.axes[0].get_lines()
    assert lines[0].get_marker() != lines[1].get_marker() and lines[0].get_linestyle() != lines[1].get_linestyle()
    assert [t.get_text() for t in freeze.axes[0].texts] == ["0.800", "0.400"]  # one k: the values are written out
