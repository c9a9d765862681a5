"""Representation analyses (SPEC §3): activations, CKA, subspace similarity, Fisher, trace overlap.

Pure functions over ``(n_samples, n_features)`` tensors with float64 accumulation, plus
streaming accumulators and the plumbing that gets activations out of a model's named
blocks (and :func:`eval_mode`, the one "eval mode, then restore" context). Figures live
in :mod:`forgetlab.report`. Example:

    >>> import torch
    >>> from forgetlab.analysis import linear_cka
    >>> x = torch.randn(100, 8)
    >>> round(linear_cka(x, x), 6)
    1.0
"""

from forgetlab.analysis._checks import NumericalError
from forgetlab.analysis.activations import (
    batch_activations,
    collect_activations,
    eval_mode,
    iter_activations,
    resolve_blocks,
)
from forgetlab.analysis.cka import LinearCKAAccumulator, MinibatchCKA, linear_cka, rbf_cka
from forgetlab.analysis.fisher import diagonal_fisher
from forgetlab.analysis.overlap import task_similarity, trace_overlap
from forgetlab.analysis.subspace import pca_basis, subspace_similarity
from forgetlab.analysis.tables import (
    BlockSimilarity,
    SimilarityMatrix,
    cka_matrix,
    cka_table,
    subspace_conditions,
    subspace_table,
)

__all__ = [
    "BlockSimilarity",
    "LinearCKAAccumulator",
    "MinibatchCKA",
    "NumericalError",
    "SimilarityMatrix",
    "batch_activations",
    "cka_matrix",
    "cka_table",
    "collect_activations",
    "diagonal_fisher",
    "eval_mode",
    "iter_activations",
    "linear_cka",
    "pca_basis",
    "rbf_cka",
    "resolve_blocks",
    "subspace_conditions",
    "subspace_similarity",
    "subspace_table",
    "task_similarity",
    "trace_overlap",
]
