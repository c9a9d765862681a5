"""Does label smoothing help the quick profile's task 1 at its fixed budget? (issue 19)

The CIFAR speed-training recipes (airbench, "How to train your ResNet") use label
smoothing; ``train.label_smoothing`` exposes it. This trains task 1 of an Anatomy profile
(``quick``: split CIFAR-10 classes 0-4, 5,000 images, width-16 BN VGG, 16 epochs, bf16 +
channels_last, one thread) with each epsilon, for each seed, and prints each run's test
accuracy and the mean per epsilon. Judged (written before the runs): label smoothing
helps if its mean test accuracy over the seeds is at least 1 point above epsilon = 0's.

    python benchmarks/bench_label_smoothing.py --seeds 0,1,2
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epsilons", default="0,0.1,0.2", help="the first is the reference")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--store", help="result store (default: a new temporary folder, so every run trains)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    profile = get_profile(args.profile)
    store = args.store or tempfile.mkdtemp()
    epsilons = [float(e) for e in args.epsilons.split(",")]
    accuracy: dict[float, list[float]] = {e: [] for e in epsilons}
    for seed in (int(s) for s in args.seeds.split(",")):
        base = first_task_config(base_config(profile, seed), profile.epochs)
        for epsilon in epsilons:
            config = dataclasses.replace(base, train=dataclasses.replace(base.train, label_smoothing=epsilon))
            tick = time.perf_counter()
            result = forgetlab.run(config, device="cpu", data_dir=args.data_dir, store=store)
            accuracy[epsilon].append(result.metrics["acc"])
            print(f"seed {seed} label_smoothing {epsilon:<4} {time.perf_counter() - tick:7.1f} s  "
                  f"task-1 test accuracy {100 * accuracy[epsilon][-1]:.1f}%  (run {result.run_id})", flush=True)
    reference, *others = epsilons
    mean = {e: 100 * statistics.mean(v) for e, v in accuracy.items()}
    for epsilon in others:
        diff = mean[epsilon] - mean[reference]
        verdict = "helps" if diff >= 1.0 else "does not help"
        print(f"label_smoothing {epsilon}: mean {mean[epsilon]:.1f}% vs {mean[reference]:.1f}% at {reference} "
              f"(difference {diff:+.1f} points): {verdict} (criterion: at least +1 point)")


if __name__ == "__main__":
    main()
