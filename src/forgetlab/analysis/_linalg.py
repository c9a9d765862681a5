"""Symmetric products ``MᵀM`` for the accumulators.

``torch`` has no symmetric rank-k update (syrk). On CPU, for wide matrices, BLAS
``?syrk`` from SciPy computes only one triangle: half the flops of a GEMM. Results are
returned as **upper-triangular** matrices (strictly lower part exactly zero), so callers
accumulate upper triangles and either symmetrise once at the end
(:func:`symmetrize_upper`) or evaluate norms and quadratic forms from the triangle
(:func:`sym_frob2`, :func:`sym_quadratic`) without any p x p temporary.
"""

from __future__ import annotations

import torch

# Below this many columns MKL's GEMM (torch) beats *threaded* OpenBLAS syrk on the reference
# machine (next to torch's OpenMP pool, threaded syrk on narrow products is pathologically
# slow).
SYRK_MIN_COLUMNS = 1024


def gram_upper(m: torch.Tensor) -> torch.Tensor:
    """Upper triangle of ``mᵀm`` (strictly lower part zero), for ``m`` of shape ``(rows, cols)``."""
    if m.device.type == "cpu" and m.shape[1] >= SYRK_MIN_COLUMNS and m.dtype in (torch.float32, torch.float64):
        upper = torch.zeros(m.shape[1], m.shape[1], dtype=m.dtype)
        scipy_syrk_add_(upper, m, 0.0)  # syrk leaves the other triangle at zero
        return upper
    return (m.T @ m).triu_()


def scipy_syrk_add_(c: torch.Tensor, z: torch.Tensor, beta: float = 1.0) -> None:
    """``upper(c) = beta·upper(c) + upper(zᵀz)`` in place with SciPy's BLAS syrk (holds the GIL).

    ``z``: a CPU ``(rows, cols)`` float32/float64 tensor; ``c``: a contiguous ``(cols, cols)``
    tensor of the same dtype. With ``beta = 0`` the upper triangle of ``c`` is overwritten
    without being read (its old values may be anything).
    """
    from scipy.linalg import blas

    z = z.contiguous()
    syrk = blas.ssyrk if z.dtype == torch.float32 else blas.dsyrk
    # z (rows, cols) C-ordered is the Fortran-ordered (cols, rows) matrix A: A Aᵀ = zᵀz; c's
    # Fortran-ordered view has c's upper triangle as its lower one.
    f = c.numpy().T
    out = syrk(1.0, z.numpy().T, beta=beta, c=f, trans=0, lower=1, overwrite_c=1)
    if out.ctypes.data != f.ctypes.data:  # pragma: no cover - BLAS wrapper copied
        c.copy_(torch.from_numpy(out.T))


def symmetrize_upper(upper: torch.Tensor) -> torch.Tensor:
    """The full symmetric matrix whose upper triangle is that of ``upper``."""
    full = torch.triu(upper)
    return full + torch.triu(upper, diagonal=1).T


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a.reshape(-1), b.reshape(-1)))


def sym_frob2(upper: torch.Tensor) -> float:
    """``||S||²_F`` of the symmetric S whose upper triangle is ``upper`` (lower part zero)."""
    diagonal = upper.diagonal()
    return 2.0 * _dot(upper, upper) - _dot(diagonal, diagonal)


def sym_quadratic(upper: torch.Tensor, v: torch.Tensor) -> float:
    """``vᵀ S v`` for the symmetric S whose upper triangle is ``upper`` (lower part zero)."""
    return 2.0 * float(v @ (upper @ v)) - float((upper.diagonal() * v * v).sum())
