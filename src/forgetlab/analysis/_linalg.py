"""Symmetric products ``MᵀM`` for the accumulators.

``torch`` has no symmetric rank-k update (syrk). On CPU, for wide matrices, BLAS
``?syrk`` from SciPy computes only one triangle: half the flops of a GEMM. Results are
returned with a valid **upper** triangle; the strictly lower part is unspecified (zero
from syrk, the mirror image from GEMM), so callers accumulate upper triangles and
symmetrise once at the end with :func:`symmetrize_upper`.
"""

from __future__ import annotations

import torch

# Below this many columns MKL's GEMM (torch) beats OpenBLAS syrk on the reference machine.
SYRK_MIN_COLUMNS = 1024


def gram_upper(m: torch.Tensor) -> torch.Tensor:
    """``mᵀm`` with a valid upper triangle, for a 2-D ``m`` of shape ``(rows, cols)``."""
    cols = m.shape[1]
    if m.device.type == "cpu" and cols >= SYRK_MIN_COLUMNS and m.dtype in (torch.float32, torch.float64):
        from scipy.linalg import blas

        m = m.contiguous()
        syrk = blas.ssyrk if m.dtype == torch.float32 else blas.dsyrk
        # m (rows, cols) C-ordered is the Fortran-ordered (cols, rows) matrix A; A Aᵀ = mᵀm.
        # The Fortran-ordered lower triangle, read C-ordered, is the upper one: contiguous.
        c = syrk(1.0, m.numpy().T, trans=0, lower=1)
        return torch.from_numpy(c.T)
    return m.T @ m


def symmetrize_upper(upper: torch.Tensor) -> torch.Tensor:
    """The full symmetric matrix whose upper triangle is that of ``upper``."""
    full = torch.triu(upper)
    return full + torch.triu(upper, diagonal=1).T
