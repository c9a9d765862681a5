"""Sweep executors: throughput with 1 vs 2 local workers, and Ray's overhead per run.

Two measurements, each alternating A and B within every repeat, on a fresh result store
each time (nothing is read back), medians quoted:

1. **Throughput**: a sweep of ``--runs`` split-MNIST runs (5 tasks, MLP 2x256, Adam,
   ``--steps`` steps of batch 128 per task; seeds differ) trained (A) in-process with all
   the machine's threads, and (B) by ``processes`` with 2 workers of
   ``cpus // 2`` threads each. Reported: runs per minute, and B/A.
2. **Ray overhead per run**: ``--tiny-runs`` tiny runs (digits, 1 epoch, well under a
   second each) (A) in-process and (B) on a local Ray instance with one worker of the
   same thread count; overhead per run = (B - A) / runs. Ray's start-up (``ray.init``)
   is timed separately, once; a first sweep on each side (Ray's worker process starts;
   this process loads the dataset) is a warm-up and is not counted.

    python benchmarks/bench_sweep.py                 # both; needs the ray extra for 2
    python benchmarks/bench_sweep.py --skip-ray
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import forgetlab
from forgetlab.config import RunConfig, apply_overrides
from forgetlab.experiments import ExecutorConfig, execute, expand, require_finished
from forgetlab.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]


def mnist_sweep(runs: int, steps: int) -> list[RunConfig]:
    base = apply_overrides(RunConfig(), [
        "stream.dataset=mnist", "stream.n_tasks=5", "model.name=mlp", "model.width=256", "model.depth=2",
        "train.optimizer=adam", "train.lr=0.001", f"train.steps={steps}", "train.batch_size=128",
        f"train.eval_every_steps={steps}",
    ])
    return expand(base, {"train.seed": list(range(runs))})


def tiny_sweep(runs: int, offset: int) -> list[RunConfig]:
    base = apply_overrides(RunConfig(), ["train.epochs=1"])
    return expand(base, {"train.seed": list(range(offset, offset + runs))})


def timed(configs: list[RunConfig], executor: ExecutorConfig, data_dir: str) -> float:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        require_finished(execute(configs, ResultStore(folder), executor=executor, device="cpu", data_dir=data_dir))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8, help="runs per throughput sweep")
    parser.add_argument("--steps", type=int, default=150, help="steps per task of the throughput runs")
    parser.add_argument("--tiny-runs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument(
        "--data-dir", default=os.environ.get("FORGETLAB_DATA", str(ROOT.parent / "shared" / "data"))
    )
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    print(f"# bench_sweep  {time.strftime('%Y-%m-%d')}  {platform.machine()}  {cpus} CPUs  torch {torch.__version__}  "
          f"forgetlab {forgetlab.__version__}  load average at start {os.getloadavg()[0]:.1f}")

    configs = mnist_sweep(args.runs, args.steps)
    one = ExecutorConfig(threads=cpus)
    two = ExecutorConfig(workers=2, threads=max(1, cpus // 2))
    timed(configs[:2], two, args.data_dir)  # warm-up: data cache, worker start-up, pool creation
    timed(configs[:1], one, args.data_dir)
    a, b = [], []
    for repeat in range(args.repeats):
        order = [(one, a), (two, b)] if repeat % 2 == 0 else [(two, b), (one, a)]
        for executor, times in order:
            times.append(timed(configs, executor, args.data_dir))
        print(f"  repeat {repeat + 1}: 1 in-process {a[-1]:.1f} s, 2 workers {b[-1]:.1f} s", flush=True)
    ratios = [x / y for x, y in zip(a, b)]
    print(f"throughput: {args.runs} split-MNIST runs (5 tasks x {args.steps} steps)")
    print(f"  1 worker (in-process, {cpus} threads): median {statistics.median(a):.1f} s = "
          f"{60 * args.runs / statistics.median(a):.1f} runs/min")
    print(f"  2 workers (processes, {two.threads_per_run()} thread each): median {statistics.median(b):.1f} s = "
          f"{60 * args.runs / statistics.median(b):.1f} runs/min")
    print(f"  speed-up 2 vs 1 worker: median {statistics.median(ratios):.2f}x "
          f"(per repeat {', '.join(f'{r:.2f}' for r in ratios)})")

    if args.skip_ray:
        return
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    init = time.perf_counter() - start
    ray_executor = ExecutorConfig(name="ray", workers=1, threads=cpus)
    local = ExecutorConfig(threads=cpus)
    offset = 100
    timed(tiny_sweep(args.tiny_runs, offset), ray_executor, args.data_dir)  # warm-up: Ray's worker process
    timed(tiny_sweep(args.tiny_runs, offset), local, args.data_dir)  # and this process (digits loaded once)
    offset += args.tiny_runs
    a, b = [], []
    for repeat in range(args.repeats):
        order = [(local, a), (ray_executor, b)] if repeat % 2 == 0 else [(ray_executor, b), (local, a)]
        for executor, times in order:
            times.append(timed(tiny_sweep(args.tiny_runs, offset), executor, args.data_dir))
            offset += args.tiny_runs
    ray.shutdown()
    overhead = [(y - x) / args.tiny_runs for x, y in zip(a, b)]
    print(f"ray: ray.init {init:.1f} s (once); {args.tiny_runs} tiny runs (digits, 1 epoch) per sweep")
    print(f"  in-process median {statistics.median(a):.2f} s = {statistics.median(a) / args.tiny_runs:.3f} s/run; "
          f"ray median {statistics.median(b):.2f} s = {statistics.median(b) / args.tiny_runs:.3f} s/run")
    print(f"  ray overhead per run: median {1000 * statistics.median(overhead):.0f} ms "
          f"(per repeat {', '.join(f'{1000 * o:.0f}' for o in overhead)} ms)")
    print(f"# load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
