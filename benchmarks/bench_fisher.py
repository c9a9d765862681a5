"""Diagonal Fisher: exact per-sample (per-layer tricks) vs batch-gradient approximation vs naive vmap.

Same model, data and batch size for the three methods of
``forgetlab.analysis.diagonal_fisher``; methods alternated, median wall time of
``--repeats`` runs after a warm-up, peak added resident memory, and the exact result
checked against the naive vmap result. Wall time is primary; process CPU time is shown
too because on a shared machine it is less sensitive to other processes. Targets (SPEC §7): exact <= 1.5x the
batch-gradient approximation, and >= 20x faster than naive vmap.
Usage: ``python benchmarks/bench_fisher.py [--quick] [--threads 2] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _memory import PeakMemory  # noqa: E402

from forgetlab.analysis import diagonal_fisher  # noqa: E402
from forgetlab.models import create_model  # noqa: E402



def cases(quick: bool):
    torch.manual_seed(0)
    yield (
        "VGG-BN (3x32x32, width 16, 3 blocks)",
        create_model("vgg", input_shape=(3, 32, 32), head_sizes=(10,), width=16, depth=3),
        (3, 32, 32),
    )
    yield (
        "MLP (3x32x32 -> 512 -> 512)",
        create_model("mlp", input_shape=(3, 32, 32), head_sizes=(10,), width=512, depth=2),
        (3, 32, 32),
    )
    if not quick:
        yield (
            "ResNet (3x32x32, width 16, 4 blocks)",
            create_model("resnet", input_shape=(3, 32, 32), head_sizes=(10,), width=16, depth=4),
            (3, 32, 32),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two models, 256 samples, 3 repeats")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    if args.quick:
        args.samples, args.repeats = 256, 3
    torch.set_num_threads(args.threads)
    print(f"# bench_fisher  {datetime.date.today()}  {platform.machine()}  {os.cpu_count()} CPUs  "
          f"torch {torch.__version__}  threads={args.threads}  samples={args.samples}  "
          f"batch={args.batch_size}  repeats={args.repeats}  load average at start {os.getloadavg()[0]:.1f}")
    header = (f"{'model':<38} {'params':>8} {'method':<15} {'median s':>9} {'CPU s':>7} {'peak MiB':>9} "
              f"{'vs exact':>9}")
    print(header)
    print("-" * len(header))
    ratios = []
    for label, model, shape in cases(args.quick):
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(args.samples, *shape, generator=gen)
        y = torch.randint(0, 10, (args.samples,), generator=gen)
        methods = ("exact", "batch_gradient", "vmap")
        run = {m: (lambda m=m: diagonal_fisher(model, x, y, method=m, batch_size=args.batch_size)) for m in methods}
        values = {m: run[m]() for m in methods}  # warm-up, and the results to compare
        times = {m: [] for m in methods}
        cpu = {m: [] for m in methods}
        memory = {m: 0 for m in methods}
        for _ in range(args.repeats):
            for m in methods:
                with PeakMemory() as mem:
                    start, start_cpu = time.perf_counter(), time.process_time()
                    run[m]()
                    times[m].append(time.perf_counter() - start)
                    cpu[m].append(time.process_time() - start_cpu)
                memory[m] = max(memory[m], mem.added)
        worst = max(
            float((values["exact"][n] - values["vmap"][n]).abs().max() / (values["vmap"][n].abs().max() + 1e-30))
            for n in values["vmap"]
        )
        n_params = sum(p.numel() for p in model.parameters())
        t_exact = statistics.median(times["exact"])
        for m in methods:
            t = statistics.median(times[m])
            print(f"{label:<38} {n_params:>8} {m:<15} {t:9.3f} {statistics.median(cpu[m]):7.3f} "
                  f"{memory[m] / 2**20:9.0f} {t / t_exact:9.2f}")
        ratio_batch = t_exact / statistics.median(times["batch_gradient"])
        cpu_ratio = statistics.median(cpu["exact"]) / statistics.median(cpu["batch_gradient"])
        ratio_vmap = statistics.median(times["vmap"]) / t_exact
        scale = sum(float(v.sum()) for v in values["exact"].values()) / sum(
            float(v.sum()) for v in values["batch_gradient"].values()
        )
        print(f"{'':<38} exact vs vmap max relative difference {worst:.1e}; "
              f"exact / batch-gradient Fisher trace = {scale:.0f} (batch size {args.batch_size}); "
              f"CPU-time ratio exact / batch-gradient {cpu_ratio:.2f}")
        ratios.append((label.split(" ")[0], ratio_batch, ratio_vmap))
    print(f"# load average at end {os.getloadavg()[0]:.1f}")
    print()
    text = "; ".join(f"{name}: exact = {rb:.2f}x batch-gradient, vmap = {rv:.1f}x exact" for name, rb, rv in ratios)
    ok_b = all(rb <= 1.5 for _, rb, _ in ratios)
    ok_v = all(rv >= 20 for _, _, rv in ratios)
    print(f"SUMMARY: {text}. Targets: exact <= 1.5x batch-gradient: {'met' if ok_b else 'MISSED'}; "
          f">= 20x faster than naive vmap: {'met' if ok_v else 'MISSED'}")


if __name__ == "__main__":
    main()
