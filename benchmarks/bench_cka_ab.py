"""Linear CKA of two forgetlab source trees, A/B: processes alternate, medians are compared.

Each round starts one process per tree (the first tree alternating); each process times
``linear_cka(x, y)`` (biased) and one ``LinearCKAAccumulator`` pass giving both estimates
("b+d") at every size, as the median of 5 loops of back-to-back calls (about 50 ms each)
after a warm-up. torch and SciPy's BLAS run ``--threads`` threads. Prints, per size, the
medians over rounds of each tree, B / A, and |A - B| of the values. Example (the tree
before a change exported with ``git archive <commit> src | tar -x -C /tmp/before``):

    python benchmarks/bench_cka_ab.py /tmp/before/src src --sizes 1000x64,10000x512 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(sizes: list[tuple[int, int]], threads: int) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    from bench_cka import both, make_data  # forgetlab comes from PYTHONPATH

    from forgetlab.analysis import linear_cka

    torch.set_num_threads(threads)
    out = {}
    for n, p in sizes:
        x, y = make_data(n, p, seed=n + p)
        for name, fn in (("ours", lambda: linear_cka(x, y)), ("b+d", lambda: both(x, y))):
            value = fn()
            start = time.perf_counter()
            fn()
            number = max(1, min(200, int(0.05 / max(time.perf_counter() - start, 1e-6))))
            times = []
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(number):
                    fn()
                times.append((time.perf_counter() - start) / number)
            out[f"{n}x{p} {name}"] = (statistics.median(times), value[1] if isinstance(value, tuple) else value)
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path, help="source tree A (the folder that holds forgetlab/)")
    parser.add_argument("b", type=Path, help="source tree B")
    parser.add_argument("--sizes", default="1000x64,1000x512,1000x1024,1000x2048,10000x64,10000x512")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in case.split("x")) for case in args.sizes.split(",")]
    if args.child:
        child(sizes, args.threads)
        return
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    loads = [os.getloadavg()[0]]
    for round_ in range(args.rounds):
        for label in ("AB" if round_ % 2 == 0 else "BA"):
            env = dict(os.environ, PYTHONPATH=str(trees[label]), OPENBLAS_NUM_THREADS=str(args.threads))
            command = [sys.executable, __file__, "-", "-", "--child", "--sizes", args.sizes, "--threads", str(args.threads)]
            result = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            runs[label].append(json.loads(result.stdout.strip().splitlines()[-1]))
            loads.append(os.getloadavg()[0])
    print(f"# bench_cka_ab  A = {trees['A']}  B = {trees['B']}  threads={args.threads}  rounds={args.rounds}  "
          f"load average {min(loads):.1f}-{max(loads):.1f}")
    print(f"{'case':<16} {'A ms':>9} {'B ms':>9} {'B / A':>6} {'A range ms':>17} {'B range ms':>17} {'|A - B|':>8}")
    for key in runs["A"][0]:
        ta = [r[key][0] * 1e3 for r in runs["A"]]
        tb = [r[key][0] * 1e3 for r in runs["B"]]
        diff = max(abs(ra[key][1] - rb[key][1]) for ra, rb in zip(runs["A"], runs["B"]))
        ma, mb = statistics.median(ta), statistics.median(tb)
        print(f"{key:<16} {ma:9.3f} {mb:9.3f} {mb / ma:6.2f} {min(ta):8.2f}-{max(ta):<8.2f} "
              f"{min(tb):8.2f}-{max(tb):<8.2f} {diff:8.1e}")


if __name__ == "__main__":
    main()
