"""Per-block similarity tables, ready for a CLI or a report (SPEC §3); figures: :mod:`forgetlab.report`.

Every function here streams ``inputs`` once through all the models it compares and
returns plain data: a list of :class:`BlockSimilarity` rows (long format: one row per
block, condition and measure) or a :class:`SimilarityMatrix` (block x block,
heatmap-ready). Exact CKA keeps one :class:`~forgetlab.analysis.LinearCKAAccumulator`
per compared block pair (O(features²) memory) or, where those statistics would not fit in
``max_memory_gb`` and the n x n Gram matrices do, one Gram matrix per block (wide conv
maps of a few thousand inputs: the same exact value); ``estimator="minibatch"``:
:class:`~forgetlab.analysis.MinibatchCKA` per pair.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

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
from forgetlab.analysis.cka import LinearCKAAccumulator, MinibatchCKA, _centred_gram, _cka_from_grams
from forgetlab.analysis.subspace import pca_basis, similarity_of_bases
from forgetlab.errors import ConfigError, IncompatibleError

__all__ = [
    "BlockSimilarity",
    "SimilarityMatrix",
    "cka_matrix",
    "cka_table",
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
) -> Iterator[list[dict[str, torch.Tensor]]]:
    """Yield one list of activation dicts (one per model) per batch of ``inputs``."""
    devices = [model_device(model, device) for model in models]
    for x, _ in iter_batches(inputs, batch_size=batch_size, device=devices[0], prepare=prepare):
        yield [
            batch_activations(model, x.to(dev), block_names, pool=pool, head_index=head_index)
            for model, dev, block_names in zip(models, devices, names)
        ]


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
    over ``inputs``; one :class:`~forgetlab.analysis.LinearCKAAccumulator` per block
    (memory ``8·(2p)²`` bytes per block of p features) or, when those exceed
    ``max_memory_gb``, ``inputs`` is a tensor (or a ``DataLoader`` over a sized dataset)
    of n samples and the Gram form fits, one n x n float64 Gram matrix per block and model
    (the same exact value). If neither fits it raises: average-pool conv maps with
    ``pool=True``.

    Example:
        >>> import torch
        >>> from forgetlab.models import create_model
        >>> a = create_model("mlp", input_shape=(1, 8, 8), head_sizes=(5,), width=16)
        >>> rows = cka_table(a, a, torch.rand(64, 1, 8, 8), batch_size=32)
        >>> [(r.block, r.measure, round(r.value, 6)) for r in rows][:2]
        [('fc1', 'linear_cka_debiased', 1.0), ('fc1', 'linear_cka', 1.0)]
    """
    names = resolve_blocks(model_a, blocks)
    resolve_blocks(model_b, names)
    pairs = [(name, name) for name in names]
    batches = _stream(
        (model_a, model_b), (names, names), inputs,
        batch_size=batch_size, pool=pool, prepare=prepare, device=device, head_index=head_index,
    )
    accumulators, features = _exact_pairwise(batches, pairs, "cka_table", max_memory_gb, _n_samples(inputs))
    return [
        BlockSimilarity(name, condition, measure, acc.compute(debiased=debiased), acc.n_samples, features[name])
        for (name, _), acc in accumulators.items()
        for measure, debiased in (("linear_cka_debiased", True), ("linear_cka", False))
    ]


def _pairwise(
    batches: Iterable[list[dict[str, torch.Tensor]]],
    pairs: Sequence[tuple[str, str]],
    make: Callable[[], Any],
    caller: str,
    max_memory_gb: float | None,
    *,
    min_rows: int,
) -> tuple[dict[tuple[str, str], Any], dict[str, int]]:
    """Update one ``make()`` metric per (block of A, block of B) pair with each batch of
    ``(activations of A, activations of B)``.

    Batches of fewer than ``min_rows`` samples are skipped; with ``max_memory_gb`` the
    float64 statistics of the pairs are checked against it on the first batch. Returns the
    metrics and the number of features of each block of model A.
    """
    metrics = {pair: make() for pair in pairs}
    features: dict[str, int] = {}
    for acts_a, acts_b in batches:
        if not features:
            features = {r: int(a.shape[1]) for r, a in acts_a.items()}
            if max_memory_gb is not None:
                _check_memory(caller, pairs, acts_a, acts_b, max_memory_gb)
        if next(iter(acts_a.values())).shape[0] < min_rows:
            continue
        for (r, c), metric in metrics.items():
            metric.update(acts_a[r], acts_b[c].to(acts_a[r].device))
    return metrics, features


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

    ``estimator="exact"``: full-data CKA streamed in float64, one
    :class:`~forgetlab.analysis.LinearCKAAccumulator` per block pair (needs up to
    ``8·Σ(p_a + p_b)²`` bytes over the pairs) or, when that exceeds ``max_memory_gb`` and
    ``inputs`` has a known number n of samples, one n x n Gram matrix per block of each
    model (``8·n²`` bytes each; the same exact value). If neither fits it raises: pool
    conv maps with ``pool=True``, probe fewer blocks, or use ``"minibatch"``.
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
    minibatch = estimator == "minibatch"
    batches = _stream(
        (model_a, model_b), (rows, columns), inputs,
        batch_size=batch_size, pool=pool, prepare=prepare, device=device, head_index=head_index,
    )
    pairs = [(r, c) for r in rows for c in columns]
    if minibatch:  # a last batch of < 4 samples has no unbiased HSIC
        metrics, _ = _pairwise(batches, pairs, MinibatchCKA, "cka_matrix", None, min_rows=4)
    else:
        metrics, _ = _exact_pairwise(batches, pairs, "Exact cka_matrix", max_memory_gb, _n_samples(inputs))
    values = torch.zeros(len(rows), len(columns), dtype=torch.float64)
    for i, r in enumerate(rows):
        for j, c in enumerate(columns):
            metric = metrics[(r, c)]
            values[i, j] = metric.compute() if minibatch else metric.compute(debiased=debiased)
    measure = "minibatch_cka" if minibatch else ("linear_cka_debiased" if debiased else "linear_cka")
    return SimilarityMatrix(values, rows, columns, measure, metrics[(rows[0], columns[0])].n_samples)


def _check_memory(
    caller: str,
    pairs: Sequence[tuple[str, str]],
    acts_a: Mapping[str, torch.Tensor],
    acts_b: Mapping[str, torch.Tensor],
    max_memory_gb: float,
    gram_bytes: int | None = None,
) -> None:
    """Each pair's accumulator holds at most (p_a + p_b)² float64 statistics."""
    needed = _feature_bytes(pairs, acts_a, acts_b)
    if needed > max_memory_gb * 2**30:
        pa = [a.shape[1] for a in acts_a.values()]
        pb = [b.shape[1] for b in acts_b.values()]
        hint = ", estimator='minibatch'" if caller.endswith("cka_matrix") else ""
        gram = "" if gram_bytes is None else f" (its n x n Gram form {gram_bytes / 2**30:.1f} GiB)"
        raise ConfigError(
            f"{caller} needs {needed / 2**30:.1f} GiB of float64 statistics{gram} for blocks with "
            f"{pa} x {pb} features, above max_memory_gb={max_memory_gb}. Use pool=True for conv maps, "
            f"fewer blocks{hint}, fewer inputs, or raise max_memory_gb."
        )


def _feature_bytes(
    pairs: Sequence[tuple[str, str]], acts_a: Mapping[str, torch.Tensor], acts_b: Mapping[str, torch.Tensor]
) -> int:
    return sum(8 * (acts_a[r].shape[1] + acts_b[c].shape[1]) ** 2 for r, c in pairs)


def _gram_bytes(
    n: int, pairs: Sequence[tuple[str, str]], acts_a: Mapping[str, torch.Tensor], acts_b: Mapping[str, torch.Tensor]
) -> int:
    """One float64 n x n Gram per block of each model, the float32 activations they are
    built from, and two n x n temporaries."""
    rows, columns = {r for r, _ in pairs}, {c for _, c in pairs}
    activations = 4 * n * (sum(acts_a[r].shape[1] for r in rows) + sum(acts_b[c].shape[1] for c in columns))
    return 8 * n * n * (len(rows) + len(columns) + 2) + activations


def _n_samples(inputs: Inputs) -> int | None:
    """The number of samples ``inputs`` holds, where it is known before streaming them."""
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0])
    try:
        return len(inputs.dataset)  # type: ignore[union-attr, arg-type]  # a DataLoader
    except (AttributeError, TypeError):
        return None


class _GramPair:
    """Exact linear CKA of one block pair from the blocks' n x n Gram matrices."""

    def __init__(self, k: torch.Tensor, l: torch.Tensor) -> None:
        self._k, self._l = k, l
        self.n_samples = int(k.shape[0])

    def compute(self, *, debiased: bool = False) -> float:
        measure = "debiased linear CKA" if debiased else "linear CKA"
        return _cka_from_grams(self._k, self._l, debiased, measure)


def _exact_pairwise(
    batches: Iterable[list[dict[str, torch.Tensor]]],
    pairs: Sequence[tuple[str, str]],
    caller: str,
    max_memory_gb: float,
    n: int | None,
) -> tuple[dict[tuple[str, str], Any], dict[str, int]]:
    """Exact linear CKA per pair, as :func:`_pairwise` with one accumulator each, or (when
    their statistics exceed ``max_memory_gb`` and the n x n Gram form fits) from one Gram
    matrix per block: each result has ``compute(debiased=...)`` and ``n_samples``."""
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return _pairwise(iter(()), pairs, LinearCKAAccumulator, caller, None, min_rows=1)
    acts_a, acts_b = first
    limit = max_memory_gb * 2**30
    if _feature_bytes(pairs, acts_a, acts_b) <= limit:
        return _pairwise(chain([first], batches), pairs, LinearCKAAccumulator, caller, None, min_rows=1)
    gram_bytes = None if n is None else _gram_bytes(n, pairs, acts_a, acts_b)
    if gram_bytes is None or gram_bytes > limit:
        _check_memory(caller, pairs, acts_a, acts_b, max_memory_gb, gram_bytes)
    rows, columns = list(dict.fromkeys(r for r, _ in pairs)), list(dict.fromkeys(c for _, c in pairs))
    parts_a: dict[str, list[torch.Tensor]] = {r: [] for r in rows}
    parts_b: dict[str, list[torch.Tensor]] = {c: [] for c in columns}
    for batch_a, batch_b in chain([first], batches):
        for r in rows:
            parts_a[r].append(batch_a[r].detach().float())
        for c in columns:
            parts_b[c].append(batch_b[c].detach().float().to(batch_a[rows[0]].device))
    grams_a = {r: _centred_gram(torch.cat(parts_a.pop(r))) for r in rows}
    grams_b = {c: _centred_gram(torch.cat(parts_b.pop(c))) for c in columns}
    features = {r: int(a.shape[1]) for r, a in acts_a.items()}
    return {(r, c): _GramPair(grams_a[r], grams_b[c]) for r, c in pairs}, features


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
    (default: every pair, in order). One pass over ``inputs``; the activations of each
    model and block are held in memory (n x features) and each basis is one
    :func:`~forgetlab.analysis.pca_basis` (SVD of the centred data when features > samples).

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
    parts: dict[tuple[str, str], list[torch.Tensor]] = {(label, name): [] for label in labels for name in names}
    for acts in _stream(
        [models[label] for label in labels], [names] * len(labels), inputs,
        batch_size=batch_size, pool=pool, prepare=prepare, device=device, head_index=head_index,
    ):
        for label, batch in zip(labels, acts):
            for name in names:
                parts[(label, name)].append(batch[name])
    rows = []
    for name in names:
        bases = {}
        for label in labels:
            x = torch.cat(parts.pop((label, name)))
            n, p = x.shape
            if k > min(n - 1, p):
                raise ConfigError(
                    f"The 'k' parameter must be <= min(n_samples - 1, n_features) = "
                    f"{min(n - 1, p)} for block {name!r}. Got k={k}."
                )
            try:
                bases[label] = pca_basis(x, k)
            except ConfigError as exc:
                raise ConfigError(f"Block {name!r} of model {label!r}: {exc}") from None
        for left, right in pairs:
            if bases[left].shape != bases[right].shape or bases[left].device != bases[right].device:
                raise IncompatibleError(
                    f"Block {name!r} of models {left!r} and {right!r} differ in features: "
                    f"bases of shape {tuple(bases[left].shape)} and {tuple(bases[right].shape)}."
                )
            value = similarity_of_bases(bases[left], bases[right])
            rows.append(BlockSimilarity(name, f"{left} vs {right}", "subspace_similarity", value, n, bases[left].shape[0], k))
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

