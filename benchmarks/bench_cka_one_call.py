"""One linear-CKA call at a large size, for trees too slow for bench_cka.py's full grid.

Times one ``linear_cka(x, y)`` on ``bench_cka.make_data(n, p)`` with one thread and prints
the value (compare trees: run it alternately with ``PYTHONPATH=<tree>/src``)::

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=/tmp/before/src /usr/bin/time -f "peak RSS %M KiB" \\
        python benchmarks/bench_cka_one_call.py --size 50000x4096
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cka import make_data  # noqa: E402

import forgetlab  # noqa: E402
from forgetlab.analysis import linear_cka  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="50000x4096", help="n x p")
    args = parser.parse_args()
    n, p = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(1)
    x, y = make_data(n, p, seed=n + p)
    start = time.perf_counter()
    value = linear_cka(x, y)
    print(f"{forgetlab.__file__}: {n}x{p} linear_cka = {value:.12f} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
