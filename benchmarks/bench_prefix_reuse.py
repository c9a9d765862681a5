"""Prefix sharing (issue 19 point 2): sweeps whose runs share one task-1 training.

Two sweeps on digits (MLP 3 x ``--width``, ``--epochs`` epochs of batch 32 per task, one
torch thread), each executed (A) with prefix reuse and (B) with ``reuse_prefix=False``,
A and B alternating in every repeat, a fresh result store each time (nothing is read
back); the runs' accuracy matrices are checked equal. The CPU time of this process is
quoted (the shared machine's load makes wall time noisy), best of ``--repeats``:

1. a mixup-fraction sweep over 5 alphas (naive): A trains task 1 once, B five times;
   ideal ratio (1 + 5) / 10 = 0.6;
2. an SI sweep over 3 values of c on split digits: ideal ratio (1 + 3) / 6 = 0.67.

    python benchmarks/bench_prefix_reuse.py --epochs 20
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from forgetlab.config import RunConfig, apply_overrides
from forgetlab.experiments import execute, expand
from forgetlab.store import ResultStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = apply_overrides(RunConfig(), [
        "stream.stream=mixup-fraction", "stream.class_sets=0+1,2+3", f"model.width={args.width}", "model.depth=3",
        f"train.epochs={args.epochs}", "train.batch_size=32", "train.lr=0.05",
    ])
    sweeps = {
        "mixup x 5 alphas": expand(base, {"stream.mixup_alpha": [0.0, 0.25, 0.5, 0.75, 1.0]}),
        "SI x 3 c": expand(apply_overrides(base, ["stream.stream=split", "stream.class_sets=", "method.name=si"]),
                           {"method.c": [0.1, 1, 10]}),
    }
    print(f"# bench_prefix_reuse  epochs {args.epochs}  width {args.width}  load average at start {os.getloadavg()[0]:.1f}")
    execute(sweeps["mixup x 5 alphas"][:1], ResultStore(tempfile.mkdtemp()), reuse_prefix=False)  # warm-up: imports, data
    for name, configs in sweeps.items():
        seconds: dict[bool, list[float]] = {True: [], False: []}
        for repeat in range(args.repeats):
            results = {}
            for reuse in (True, False) if repeat % 2 == 0 else (False, True):
                start = time.process_time()
                results[reuse] = execute(configs, ResultStore(tempfile.mkdtemp()), reuse_prefix=reuse)
                seconds[reuse].append(time.process_time() - start)
            for shared, alone in zip(results[True], results[False]):
                np.testing.assert_array_equal(shared.accuracy_matrix, alone.accuracy_matrix)
        shared, straight = min(seconds[True]), min(seconds[False])
        print(f"{name}: shared {shared:.2f} s, straight {straight:.2f} s (CPU, best of {args.repeats}), "
              f"ratio {shared / straight:.2f}; per repeat shared {[round(s, 2) for s in seconds[True]]}, "
              f"straight {[round(s, 2) for s in seconds[False]]}")
    print(f"# load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
