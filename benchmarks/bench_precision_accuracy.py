"""End to end: the quick profile's task-1 training in fp32 NCHW vs bf16 + channels_last (issue 19).

What a user waits for is a whole run, not one step: this trains task 1 of the ``quick``
Anatomy profile (split CIFAR-10, 5,000 images, width-16 BN VGG, 16 epochs, one thread)
with each setting (fp32 NCHW, fp32 + channels_last, bf16 + channels_last), for each seed, alternating the settings, and prints the wall time
of each run, the test accuracy, the median time ratio and the mean accuracy difference.
Judged (written before the runs): a setting is adopted if its mean test accuracy is within
1 point of fp32 NCHW's over the seeds and it is faster end to end.

    python benchmarks/bench_precision_accuracy.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

import forgetlab
from forgetlab.experiments.anatomy import base_config, first_task_config
from forgetlab.experiments.profiles import get_profile

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "fp32 NCHW": ("fp32", "contiguous"),
    "fp32 + channels_last": ("fp32", "channels_last"),
    "bf16 + channels_last": ("bf16", "channels_last"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, help="default: the profile's")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--store", help="result store (default: a new temporary folder, so every run trains)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    profile = get_profile(args.profile)
    store = args.store or tempfile.mkdtemp()
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    accuracy: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for seed in (int(s) for s in args.seeds.split(",")):
        base = first_task_config(base_config(profile, seed), args.epochs or profile.epochs)
        for name, (precision, memory_format) in SETTINGS.items():
            config = dataclasses.replace(base, train=dataclasses.replace(
                base.train, precision=precision, memory_format=memory_format))
            tick = time.perf_counter()
            result = forgetlab.run(config, device="cpu", data_dir=args.data_dir, store=store)
            times[name].append(time.perf_counter() - tick)
            accuracy[name].append(result.metrics["acc"])
            print(f"seed {seed} {name:<22} {times[name][-1]:7.1f} s  task-1 test accuracy {100 * accuracy[name][-1]:.1f}%",
                  flush=True)
    a, *others = SETTINGS
    for b in others:
        ratio = statistics.median(x / y for x, y in zip(times[a], times[b]))
        diff = 100 * (statistics.mean(accuracy[b]) - statistics.mean(accuracy[a]))
        print(f"{b}: median time ratio {a} / {b}: {ratio:.2f}x; mean accuracy {a} "
              f"{100 * statistics.mean(accuracy[a]):.1f}%, {b} {100 * statistics.mean(accuracy[b]):.1f}% "
              f"(difference {diff:+.1f} points)")
        verdict = "adopted" if abs(diff) <= 1.0 and ratio > 1.0 else "NOT adopted"
        print(f"verdict: {b} {verdict} (criterion: |difference| <= 1 point and faster end to end)")


if __name__ == "__main__":
    main()
