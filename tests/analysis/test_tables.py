from __future__ import annotations

import copy
import sys

import pytest
import torch

from forgetlab.analysis import (
    BlockSimilarity,
    MinibatchCKA,
    cka_matrix,
    cka_table,
    collect_activations,
    linear_cka,
    subspace_conditions,
    subspace_similarity,
)
from forgetlab.analysis.tables import _feature_bytes, _gram_bytes
from forgetlab.errors import ConfigError
from forgetlab.models import create_model
from forgetlab.report.figures import plot_block_similarity


def _pair():
    torch.manual_seed(0)
    before = create_model("vgg", input_shape=(3, 8, 8), head_sizes=(2,), width=4, depth=2)
    after = copy.deepcopy(before)
    with torch.no_grad():
        for name, p in after.named_parameters():
            if name.startswith("blocks.conv2") or name.startswith("blocks.fc"):
                p.add_(0.3 * torch.randn_like(p))
    return before, after


def test_cka_table_matches_linear_cka_on_collected_activations():
    before, after = _pair()
    x = torch.rand(70, 3, 8, 8)
    rows = cka_table(before, after, x, batch_size=32, condition="before vs after", pool=True)
    acts_a = collect_activations(before, x, pool=True)
    acts_b = collect_activations(after, x, pool=True)
    assert [r.block for r in rows] == [b for b in before.block_names for _ in range(2)]
    for row in rows:
        expected = linear_cka(acts_a[row.block], acts_b[row.block], debiased=row.measure == "linear_cka_debiased")
        assert row.value == pytest.approx(expected, abs=1e-6)  # float32 activations, streamed vs one-shot
        assert row.n_samples == 70 and row.condition == "before vs after"
    by_block = {r.block: r.value for r in rows if r.measure == "linear_cka"}
    assert by_block["conv1"] == pytest.approx(1.0, abs=1e-6)  # float32 activations, streamed vs one-shot and by_block["fc"] < 0.999


@pytest.mark.parametrize("debiased", [True, False])
def test_cka_matrix_exact(debiased):
    before, after = _pair()
    x = torch.rand(50, 3, 8, 8)
    matrix = cka_matrix(before, after, x, batch_size=16, debiased=debiased)
    acts_a, acts_b = collect_activations(before, x), collect_activations(after, x)
    assert matrix.rows == matrix.columns == before.block_names and matrix.n_samples == 50
    for i, r in enumerate(matrix.rows):
        for j, c in enumerate(matrix.columns):
            assert float(matrix.values[i, j]) == pytest.approx(linear_cka(acts_a[r], acts_b[c], debiased=debiased), abs=1e-6)  # float32 activations, streamed vs one-shot


def test_exact_cka_takes_the_gram_form_when_feature_statistics_exceed_the_memory_limit():
    # Wide blocks, few inputs: the (p_a + p_b)^2 statistics exceed the limit, n x n Grams
    # fit; the values must equal the feature form's and an independent float64 reference.
    import numpy as np
    from analysis_references import reference_linear_cka

    before, after = _pair()
    x = torch.rand(12, 3, 8, 8)
    acts_a, acts_b = collect_activations(before, x), collect_activations(after, x)
    pairs = [(r, c) for r in before.block_names for c in before.block_names]
    feature_gb = _feature_bytes(pairs, acts_a, acts_b) / 2**30
    gram_gb = _gram_bytes(12, pairs, acts_a, acts_b) / 2**30
    assert gram_gb < feature_gb / 4  # the test's premise: only the Gram form fits below
    limit = (gram_gb + feature_gb) / 2
    for debiased in (True, False):
        full = cka_matrix(before, after, x, batch_size=5, debiased=debiased)
        gram = cka_matrix(before, after, x, batch_size=5, debiased=debiased, max_memory_gb=limit)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=5)
        gram_loader = cka_matrix(before, after, loader, debiased=debiased, max_memory_gb=limit)
        assert gram.n_samples == gram_loader.n_samples == 12
        for i, r in enumerate(full.rows):
            for j, c in enumerate(full.columns):
                expected = reference_linear_cka(acts_a[r].numpy(), acts_b[c].numpy(), debiased=debiased)
                assert float(gram.values[i, j]) == pytest.approx(expected, abs=1e-6)
                assert float(gram_loader.values[i, j]) == pytest.approx(expected, abs=1e-6)
                assert float(full.values[i, j]) == pytest.approx(float(gram.values[i, j]), abs=1e-6)
    table = cka_table(before, after, x, max_memory_gb=limit)
    for row in table:
        expected = reference_linear_cka(acts_a[row.block].numpy(), acts_b[row.block].numpy(),
                                        debiased=row.measure == "linear_cka_debiased")
        assert row.value == pytest.approx(expected, abs=1e-6) and row.n_samples == 12
    assert np.isclose([r.value for r in table if r.block == before.block_names[0]], 1.0, atol=1e-6).all()
    with pytest.raises(ConfigError, match=r"needs .* GiB of float64 statistics \(its n x n Gram form .* GiB\)"):
        cka_matrix(before, after, x, max_memory_gb=gram_gb / 2)
    generator = (x[i : i + 5] for i in range(0, 12, 5))  # no known length: no Gram form
    with pytest.raises(ConfigError, match=r"needs .* GiB of float64 statistics for blocks"):
        cka_matrix(before, after, generator, max_memory_gb=limit)


def test_cka_matrix_minibatch_matches_minibatch_cka():
    before, after = _pair()
    x = torch.rand(66, 3, 8, 8)  # last batch of 2 samples is skipped
    matrix = cka_matrix(before, after, x, ["conv1", "fc"], batch_size=16, estimator="minibatch", pool=True)
    acts_a = collect_activations(before, x, ["conv1", "fc"], pool=True)
    acts_b = collect_activations(after, x, ["conv1", "fc"], pool=True)
    metric = MinibatchCKA()
    for start in range(0, 64, 16):
        metric.update(acts_a["conv1"][start : start + 16], acts_b["fc"][start : start + 16])
    assert float(matrix.values[0, 1]) == pytest.approx(metric.compute(), abs=1e-6)  # float32 activations, streamed vs one-shot
    assert matrix.measure == "minibatch_cka" and matrix.n_samples == 64


def test_subspace_conditions_match_subspace_similarity():
    task1, task1_then_2 = _pair()
    task2_only = create_model("vgg", input_shape=(3, 8, 8), head_sizes=(2,), width=4, depth=2)
    x = torch.rand(60, 3, 8, 8)
    rows = subspace_conditions(task1, task2_only, task1_then_2, x, k=3, blocks=["conv2", "fc"], pool=True)
    assert [(r.block, r.condition) for r in rows] == [
        (b, c) for b in ("conv2", "fc") for c in ("task1 vs task2_only", "task1 vs task1_then_2", "task2_only vs task1_then_2")
    ]
    models = {"task1": task1, "task2_only": task2_only, "task1_then_2": task1_then_2}
    acts = {label: collect_activations(m, x, ["conv2", "fc"], pool=True) for label, m in models.items()}
    for row in rows:
        left, right = row.condition.split(" vs ")
        assert row.value == pytest.approx(subspace_similarity(acts[left][row.block], acts[right][row.block], 3), abs=1e-6)  # float32 activations, streamed vs one-shot
        assert row.k == 3


def test_plot_writes_png_and_svg_without_pyplot(tmp_path):
    rows = [
        BlockSimilarity(b, cond, "linear_cka", v, 10, 4)
        for cond, values in (("a vs b", (0.99, 0.8, 0.3)), ("a vs c", (0.95, 0.6, -0.01)))
        for b, v in zip(("conv1", "conv2", "fc"), values)
    ]
    paths = plot_block_similarity(rows, tmp_path / "figs" / "cka")
    assert [p.name for p in paths] == ["cka.png", "cka.svg"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and b"<svg" in paths[1].read_bytes()[:500]
    assert "matplotlib.pyplot" not in sys.modules


def test_errors():
    before, after = _pair()
    x = torch.rand(8, 3, 8, 8)
    with pytest.raises(ConfigError, match="'estimator' parameter of cka_matrix must be one of"):
        cka_matrix(before, after, x, estimator="fast")
    with pytest.raises(ConfigError, match="needs .* GiB .*max_memory_gb=1e-06"):
        cka_matrix(before, after, x, max_memory_gb=1e-6)
    with pytest.raises(ConfigError, match="cka_table needs .* GiB .*pool=True"):
        cka_table(before, after, x, max_memory_gb=1e-6)
    with pytest.raises(ConfigError, match="Unknown block 'conv9'"):
        cka_table(before, after, x, ["conv9"])
    with pytest.raises(ConfigError, match=r"'k' parameter must be <= min\(n_samples - 1, n_features\) = 7"):
        subspace_conditions(before, after, after, x, k=8, blocks=["fc"])
    with pytest.raises(ConfigError, match="at least one row"):
        plot_block_similarity([], "x")
