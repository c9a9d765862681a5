"""Per-block similarity tables and figures, ready for a CLI or a report (SPEC §3).

Every function here streams ``inputs`` once through all the models it compares, keeps
only O(features²) statistics per block, and returns plain data: a list of
:class:`BlockSimilarity` rows (long format: one row per block, condition and measure)
or a :class:`SimilarityMatrix` (block x block, heatmap-ready).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from forgetlab.analysis._checks import check_positive_int
from forgetlab.analysis.activations import (
    Inputs,
    Prepare,
    batch_activations,
    iter_batches,
    model_device,
    resolve_blocks,
)
from forgetlab.analysis.cka import (
    LinearCKAAccumulator,
    MinibatchCKA,
    _Cross,
    _hsic1_cross,
    _hsic1_self,
    _Moments,
    _ratio,
    _centred_cross_frob2,
)
from forgetlab.analysis.subspace import _basis_from_scatter, similarity_of_bases
from forgetlab.errors import ConfigError, IncompatibleError

__all__ = [
    "BlockSimilarity",
    "SimilarityMatrix",
    "cka_matrix",
    "cka_table",
    "plot_block_similarity",
    "subspace_conditions",
    "subspace_table",
]

_ESTIMATORS = ("exact", "minibatch")


@dataclass(frozen=True)
class BlockSimilarity:
    """One result row: ``measure`` between two models' activations of ``block``.

    ``measure`` is ``"linear_cka_debiased"``, ``"linear_cka"`` (biased) or
    ``"subspace_similarity"`` (then ``k`` is set); ``condition`` names the compared pair,
    e.g. ``"task1 vs task1_then_2"``.
    """

    block: str
    condition: str
    measure: str
    value: float
    n_samples: int
    n_features: int
    k: int | None = None


@dataclass(frozen=True)
class SimilarityMatrix:
    """``values[i, j]`` = similarity of block ``rows[i]`` of model A and ``columns[j]`` of model B."""

    values: torch.Tensor
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    measure: str
    n_samples: int


def _stream(
    models: Sequence[nn.Module],
    names: Sequence[Sequence[str]],
    inputs: Inputs,
    *,
    batch_size: int,
    pool: bool,
    prepare: Prepare | None,
    device: torch.device | str | None,
    head_index: int,
):
    """Yield one list of activation dicts (one per model) per batch of ``inputs``."""
    devices = [model_device(model, device) for model in models]
    for x, _ in iter_batches(inputs, batch_size=batch_size, device=devices[0], prepare=prepare):
        yield [
            batch_activations(model, x.to(dev), block_names, pool=pool, head_index=head_index)
            for model, dev, block_names in zip(models, devices, names)
        ]


def _common_blocks(model_a: nn.Module, model_b: nn.Module, blocks: Sequence[str] | str | None) -> tuple[str, ...]:
    names = resolve_blocks(model_a, blocks)
    resolve_blocks(model_b, names)
    return names


def cka_table(
    model_a: nn.Module,
    model_b: nn.Module,
    inputs: Inputs,
    blocks: Sequence[str] | str | None = None,
    *,
    condition: str = "a vs b",
    pool: bool = False,
    batch_size: int = 256,
    prepare: Prepare | None = None,
    device: torch.device | str | None = None,
    head_index: int = 0,
    max_memory_gb: float = 8.0,
) -> list[BlockSimilarity]:
    """Exact linear CKA of each block, model A vs model B, on the same ``inputs``.

    Two rows per block: ``linear_cka_debiased`` (shown by default in reports) and
    ``linear_cka`` (biased, as in Kornblith et al. 2019 and the paper's plots). One pass
    over ``inputs``; memory O(features²) per block (three float64 p x p matrices), never
    n x n. Above ``max_memory_gb`` it raises: average-pool conv maps with ``pool=True``.

    Example:
        >>> import torch
        >>> from forgetlab.models import create_model
        >>> a = create_model("mlp", input_shape=(1, 8, 8), head_sizes=(5,), width=16)
        >>> rows = cka_table(a, a, torch.rand(64, 1, 8, 8), batch_size=32)
        >>> [(r.block, r.measure, round(r.value, 6)) for r in rows][:2]
        [('fc1', 'linear_cka_debiased', 1.0), ('fc1', 'linear_cka', 1.0)]
    """
    names = _common_blocks(model_a, model_b, blocks)
    accumulators = {name: LinearCKAAccumulator() for name in names}
    for acts_a, acts_b in _stream(
        (model_a, model_b), (names, names), inputs,
        batch_size=batch_size, pool=pool, prepare=prepare, device=device, head_index=head_index,
    ):
        if accumulators[names[0]].n_samples == 0:
            needed = sum(8 * (a.shape[1] + b.shape[1]) ** 2 for a, b in ((acts_a[n], acts_b[n]) for n in names))
            if needed > max_memory_gb * 2**30:
                raise ConfigError(
                    f"cka_table needs {needed / 2**30:.1f} GiB of float64 statistics for blocks with "
                    f"{[acts_a[n].shape[1] for n in names]} features, above max_memory_gb={max_memory_gb}. "
                    "Use pool=True for conv maps, fewer blocks, or raise max_memory_gb."
                )
        for name in names:
            accumulators[name].update(acts_a[name], acts_b[name].to(acts_a[name].device))
    rows = []
    for name in names:
        acc = accumulators[name]
        p = acc._x.n_features
        for measure, debiased in (("linear_cka_debiased", True), ("linear_cka", False)):
            rows.append(BlockSimilarity(name, condition, measure, acc.compute(debiased=debiased), acc.n_samples, p))
    return rows


def cka_matrix(
    model_a: nn.Module,
    model_b: nn.Module,
    inputs: Inputs,
    blocks: Sequence[str] | str | None = None,
    *,
    blocks_b: Sequence[str] | str | None = None,
    debiased: bool = True,
    estimator: str = "exact",
    pool: bool = False,
    batch_size: int = 256,
    prepare: Prepare | None = None,
    device: torch.device | str | None = None,
    head_index: int = 0,
    max_memory_gb: float = 8.0,
) -> SimilarityMatrix:
    """Linear CKA between every block of model A and every block of model B (heatmap-ready).

    ``estimator="exact"``: full-data CKA streamed in float64 (needs
    ``8·(Σp_a² + Σp_b² + Σp_a·p_b)`` bytes; above ``max_memory_gb`` it raises: pool conv
    maps with ``pool=True``, probe fewer blocks, or use ``"minibatch"``).
    ``estimator="minibatch"``: :class:`~forgetlab.analysis.MinibatchCKA` per pair
    (memory O(batch²); value depends on ``batch_size``; always debiased).

    Example:
        >>> import torch
        >>> from forgetlab.models import create_model
        >>> a = create_model("mlp", input_shape=(1, 8, 8), head_sizes=(5,), width=16, depth=3)
        >>> m = cka_matrix(a, a, torch.rand(64, 1, 8, 8))
        >>> m.rows, tuple(m.values.shape), round(float(m.values[1, 1]), 6)
        (('fc1', 'fc2', 'fc3'), (3, 3), 1.0)
    """
    if estimator not in _ESTIMATORS:
        raise ConfigError(f"The 'estimator' parameter of cka_matrix must be one of {_ESTIMATORS}. Got {estimator!r} instead.")
    if estimator == "minibatch" and not debiased:
        raise ConfigError("The minibatch estimator is always debiased: use debiased=True with estimator='minibatch'.")
    check_positive_int(batch_size, "batch_size", minimum=4 if estimator == "minibatch" else 1)
    rows = resolve_blocks(model_a, blocks)
    columns = resolve_blocks(model_b, blocks_b if blocks_b is not None else blocks)
    side_a = {name: _Moments() for name in rows}
    side_b = {name: _Moments() for name in columns}
    cross: dict[tuple[str, str], _Cross] = {}
    minibatch = {(r, c): MinibatchCKA() for r in rows for c in columns} if estimator == "minibatch" else {}
    for acts_a, acts_b in _stream(
        (model_a, model_b), (rows, columns), inputs,
        batch_size=batch_size, pool=pool, prepare=prepare, device=device, head_index=head_index,
    ):
        if estimator == "minibatch":
            if next(iter(acts_a.values())).shape[0] < 4:
                continue  # a last batch of < 4 samples has no unbiased HSIC
            for (r, c), metric in minibatch.items():
                metric.update(acts_a[r], acts_b[c].to(acts_a[r].device))
            continue
        if not cross:
            _check_memory(acts_a, acts_b, max_memory_gb)
        prepared_a = {r: side_a[r].prepare(acts_a[r], f"block {r!r} of model A") for r in rows}
        prepared_b = {}
        for c in columns:
            first = acts_a[rows[0]]
            prepared_b[c] = side_b[c].prepare(acts_b[c].to(first.device), f"block {c!r} of model B")
        for r in rows:
            side_a[r].update(*prepared_a[r])
        for c in columns:
            side_b[c].update(*prepared_b[c])
        for r in rows:
            xs, a = prepared_a[r]
            for c in columns:
                ys, b = prepared_b[c]
                if (r, c) not in cross:
                    cross[(r, c)] = _Cross(xs.shape[1], ys.shape[1], xs.device)
                cross[(r, c)].update(xs, a, ys, b)
    values = torch.zeros(len(rows), len(columns), dtype=torch.float64)
    n_samples = 0
    for i, r in enumerate(rows):
        for j, c in enumerate(columns):
            if estimator == "minibatch":
                values[i, j] = minibatch[(r, c)].compute()
                n_samples = minibatch[(r, c)].n_samples
                continue
            mx, my, cxy = side_a[r], side_b[c], cross[(r, c)]
            n_samples = mx.n
            values[i, j] = _exact_cka(mx, my, cxy, debiased)
    measure = "minibatch_cka" if estimator == "minibatch" else ("linear_cka_debiased" if debiased else "linear_cka")
    return SimilarityMatrix(values, rows, columns, measure, n_samples)


def _exact_cka(mx: _Moments, my: _Moments, c: _Cross, debiased: bool) -> float:
    if debiased:
        if mx.n < 4:
            raise ConfigError(f"Debiased CKA needs at least 4 samples. Got {mx.n}.")
        return _ratio(_hsic1_cross(mx, my, c), _hsic1_self(mx), _hsic1_self(my), "debiased linear CKA", low=-1.0)
    return _ratio(_centred_cross_frob2(mx, my, c), mx.scatter_frob2(), my.scatter_frob2(), "linear CKA", low=0.0)


def _check_memory(acts_a: Mapping[str, torch.Tensor], acts_b: Mapping[str, torch.Tensor], max_memory_gb: float) -> None:
    pa = [a.shape[1] for a in acts_a.values()]
    pb = [b.shape[1] for b in acts_b.values()]
    needed = 8 * (sum(p * p for p in pa) + sum(p * p for p in pb) + sum(pa) * sum(pb))
    if needed > max_memory_gb * 2**30:
        raise ConfigError(
            f"Exact cka_matrix needs {needed / 2**30:.1f} GiB of float64 statistics for blocks with "
            f"{pa} x {pb} features, above max_memory_gb={max_memory_gb}. Use pool=True for conv maps, "
            "fewer blocks, estimator='minibatch', or raise max_memory_gb."
        )


def subspace_table(
    models: Mapping[str, nn.Module],
    inputs: Inputs,
    k: int,
    blocks: Sequence[str] | str | None = None,
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    pool: bool = False,
    batch_size: int = 256,
    prepare: Prepare | None = None,
    device: torch.device | str | None = None,
    head_index: int = 0,
) -> list[BlockSimilarity]:
    """Top-``k`` subspace similarity of each block for each pair of named models.

    ``models`` maps a label to a model; ``pairs`` lists the label pairs to compare
    (default: every pair, in order). One pass over ``inputs``; one scatter matrix per
    model and block (float64, O(features²)); one eigendecomposition each.

    Example:
        >>> import torch
        >>> from forgetlab.models import create_model
        >>> a = create_model("mlp", input_shape=(1, 8, 8), head_sizes=(5,), width=16)
        >>> rows = subspace_table({"a": a, "b": a}, torch.rand(64, 1, 8, 8), k=3)
        >>> [(r.block, r.condition, round(r.value, 6)) for r in rows]
        [('fc1', 'a vs b', 1.0), ('fc2', 'a vs b', 1.0)]
    """
    k = check_positive_int(k, "k")
    labels = list(models)
    if len(labels) < 2:
        raise ConfigError(f"The 'models' parameter of subspace_table needs at least 2 named models. Got {labels}.")
    if pairs is None:
        pairs = [(labels[i], labels[j]) for i in range(len(labels)) for j in range(i + 1, len(labels))]
    for pair in pairs:
        for label in pair:
            if label not in models:
                raise ConfigError(f"Unknown model label {label!r} in 'pairs'. Valid labels: {', '.join(labels)}.")
    names = resolve_blocks(models[labels[0]], blocks)
    for label in labels[1:]:
        resolve_blocks(models[label], names)
    moments = {(label, name): _Moments() for label in labels for name in names}
    for acts in _stream(
        [models[label] for label in labels], [names] * len(labels), inputs,
        batch_size=batch_size, pool=pool, prepare=prepare, device=device, head_index=head_index,
    ):
        for label, batch in zip(labels, acts):
            for name in names:
                m = moments[(label, name)]
                m.update(*m.prepare(batch[name], f"block {name!r} of model {label!r}"))
    rows = []
    for name in names:
        bases = {}
        for label in labels:
            m = moments[(label, name)]
            if k > min(m.n - 1, m.n_features):
                raise ConfigError(
                    f"The 'k' parameter must be <= min(n_samples - 1, n_features) = "
                    f"{min(m.n - 1, m.n_features)} for block {name!r}. Got k={k}."
                )
            bases[label] = _basis_from_scatter(m.scatter(), k, f"block {name!r} of model {label!r}")
        for left, right in pairs:
            if bases[left].shape != bases[right].shape or bases[left].device != bases[right].device:
                raise IncompatibleError(
                    f"Block {name!r} of models {left!r} and {right!r} differ in features: "
                    f"bases of shape {tuple(bases[left].shape)} and {tuple(bases[right].shape)}."
                )
            value = similarity_of_bases(bases[left], bases[right])
            m = moments[(left, name)]
            rows.append(BlockSimilarity(name, f"{left} vs {right}", "subspace_similarity", value, m.n, m.n_features, k))
    return rows


def subspace_conditions(
    task1_model: nn.Module,
    task2_only_model: nn.Module,
    task1_then_2_model: nn.Module,
    inputs: Inputs,
    k: int,
    blocks: Sequence[str] | str | None = None,
    **options,
) -> list[BlockSimilarity]:
    """The paper's three conditions per block (SPEC §3), as :func:`subspace_table` rows.

    Conditions: ``task1 vs task2_only``, ``task1 vs task1_then_2``,
    ``task2_only vs task1_then_2``. ``options`` go to :func:`subspace_table`.

    Example:
        >>> import torch
        >>> from forgetlab.models import create_model
        >>> m = create_model("mlp", input_shape=(1, 8, 8), head_sizes=(5,), width=16, depth=1)
        >>> [r.condition for r in subspace_conditions(m, m, m, torch.rand(40, 1, 8, 8), k=2)]
        ['task1 vs task2_only', 'task1 vs task1_then_2', 'task2_only vs task1_then_2']
    """
    models = {"task1": task1_model, "task2_only": task2_only_model, "task1_then_2": task1_then_2_model}
    pairs = [("task1", "task2_only"), ("task1", "task1_then_2"), ("task2_only", "task1_then_2")]
    return subspace_table(models, inputs, k, blocks, pairs=pairs, **options)


def plot_block_similarity(rows: Sequence[BlockSimilarity], path_stem: str | Path) -> list[Path]:
    """Line plot of ``rows`` (x: blocks in first-seen order; one line per condition and measure).

    Writes ``path_stem.png`` and ``path_stem.svg`` and returns both paths. Matplotlib is
    imported only here, through its Agg canvas (no pyplot, no global backend change).

    Example:
        >>> import tempfile, pathlib
        >>> rows = [BlockSimilarity(b, "a vs b", "linear_cka", v, 10, 4) for b, v in [("b1", 0.9), ("b2", 0.4)]]
        >>> paths = plot_block_similarity(rows, pathlib.Path(tempfile.mkdtemp()) / "cka")
        >>> [p.suffix for p in paths], all(p.stat().st_size > 0 for p in paths)
        (['.png', '.svg'], True)
    """
    if not rows:
        raise ConfigError("The 'rows' parameter of plot_block_similarity must hold at least one row.")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    blocks: list[str] = []
    for row in rows:
        if row.block not in blocks:
            blocks.append(row.block)
    series: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        label = row.measure if row.k is None else f"{row.measure} (k={row.k})"
        series.setdefault((row.condition, label), {})[row.block] = row.value
    figure = Figure(figsize=(max(4.0, 0.8 * len(blocks) + 2.0), 3.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for (condition, label), values in series.items():
        xs = [i for i, b in enumerate(blocks) if b in values]
        axes.plot(xs, [values[blocks[i]] for i in xs], marker="o", label=f"{condition}: {label}")
    axes.set_xticks(range(len(blocks)), blocks, rotation=30 if len(blocks) > 6 else 0)
    axes.set_xlabel("block (input side first)")
    axes.set_ylabel("similarity")
    low = min(0.0, min(row.value for row in rows))
    axes.set_ylim(low - 0.02, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")]
    for path in paths:
        figure.savefig(path, dpi=150)
    return paths
