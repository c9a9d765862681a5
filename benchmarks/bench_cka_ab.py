"""Linear CKA of two checkouts of forgetlab, A/B: ours / roofline at p in {64, 512}.

Each call times ``linear_cka`` 15 times in a row (after 3 warm-up calls) per size and
prints the median / roofline (the roofline as in ``bench_cka.py``, measured in the same
process). Run it alternately on two checkouts, e.g. the commit before a change:

    git worktree add /tmp/before <commit>
    for i in 1 2 3; do
        python benchmarks/bench_cka_ab.py /tmp/before; python benchmarks/bench_cka_ab.py .
    done
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkout", type=Path, help="a forgetlab checkout (its src/ and benchmarks/ are used)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    root = args.checkout.resolve()
    sys.path.insert(0, str(root / "benchmarks"))  # bench_cka puts root/src first on sys.path
    import torch
    from bench_cka import make_data, roofline_rates

    import forgetlab
    from forgetlab.analysis import linear_cka

    if not Path(forgetlab.__file__).resolve().is_relative_to(root):
        sys.exit(f"forgetlab was imported from {forgetlab.__file__}, not from {root}")
    torch.set_num_threads(args.threads)
    flops, bandwidth = roofline_rates()
    ratios = []
    for n, p in [(2000, 64), (10000, 64), (50000, 64), (2000, 512), (10000, 512), (50000, 512)]:
        x, y = make_data(n, p, n + p)
        roof = max(6 * n * p * p / flops, 8 * n * p / bandwidth)
        for _ in range(3):
            linear_cka(x, y)
        times = []
        for _ in range(15):
            start = time.perf_counter()
            linear_cka(x, y)
            times.append(time.perf_counter() - start)
        ratios.append(f"{n}x{p}: {statistics.median(times) / roof:.2f}")
    print(f"{root}  GEMM {flops / 1e9:.0f} GFLOP/s  ours/roofline  " + "  ".join(ratios))


if __name__ == "__main__":
    main()
