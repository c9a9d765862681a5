"""Top-k PCA basis when features exceed samples (the cifar-resnet subspace analysis: 5,000
task-1 test images, blocks of 8,192-32,768 features): forgetlab's ``pca_basis`` (the n x n
Gram route: eigh of Xc Xcᵀ, then V_k = Xcᵀ U_k / s_k) against the SVD of the centred data
it replaced, same inputs, alternating, medians, and how far the two
bases' subspaces differ (1 = the same span).

    python benchmarks/bench_subspace_basis.py --n 5000 --p 16384 --k 10 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from forgetlab.analysis import pca_basis
from forgetlab.analysis.subspace import similarity_of_bases


def svd_basis(x: torch.Tensor, k: int) -> torch.Tensor:
    """The reference: top-k right singular vectors of the centred data from a thin SVD."""
    centred = x.to(torch.float64) - x.to(torch.float64).mean(0)
    return torch.linalg.svd(centred, full_matrices=False)[2][:k].T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--p", type=int, default=16384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    # Activation-like data: a decaying spectrum over a random basis, non-negative shift.
    scales = torch.logspace(0, -2, args.p, dtype=torch.float64)
    x = (torch.randn(args.n, args.p, generator=generator, dtype=torch.float64) * scales).float() + 1.0
    candidates = {"svd (before)": lambda: svd_basis(x, args.k), "pca_basis (gram)": lambda: pca_basis(x, args.k)}
    times: dict[str, list[float]] = {name: [] for name in candidates}
    bases = {}
    for _ in range(args.repeats):
        for name, run in candidates.items():  # A and B alternate in every repeat
            start = time.perf_counter()
            bases[name] = run()
            times[name].append(time.perf_counter() - start)
    a, b = (bases[name] for name in candidates)
    print(f"x: {args.n} x {args.p} float32, k = {args.k}, {args.threads} threads, {args.repeats} repeats (median s)")
    for name, values in times.items():
        print(f"  {name:16s} {statistics.median(values):8.2f} s")
    ratio = statistics.median(times["svd (before)"]) / statistics.median(times["pca_basis (gram)"])
    print(f"  ratio svd / gram: {ratio:.2f}x; subspace similarity of the two bases: {similarity_of_bases(a, b):.12f}")


if __name__ == "__main__":
    main()
