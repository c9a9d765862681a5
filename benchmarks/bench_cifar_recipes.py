"""Can a shorter recipe train the cifar profile's task 1 as well, and converged? (issue 19)

The ``cifar`` profile (split CIFAR-10, 25,000 images per task, width-32 BN VGG, bf16 +
channels_last, one thread per run) trains every task for 12 epochs at batch 128: about
3 h for the whole reproduction on a 2-core CPU. This trains task 1 alone, as the
convergence check does, for each candidate ``epochs:batch:lr`` (cosine schedule) for E
and for 2E epochs, and judges each candidate by two criteria written before the runs:

- converged: accuracy(2E) - accuracy(E) < 1.5 points (the profile's convergence check);
- strong: accuracy(E) >= the reference's accuracy - 1 point (the reference: the profile
  as shipped, ``--reference 12:128:0.05``, or its measured accuracy, ``--reference-accuracy``).

A candidate is adopted only if both hold. Runs are stored (``--store``) and read back on a
second call; ``--workers 2`` trains two at a time.

    python benchmarks/bench_cifar_recipes.py --candidates 8:128:0.05,8:64:0.05 --reference-accuracy 0.887 --workers 2
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import torch

from forgetlab.experiments import ExecutorConfig, execute, require_finished
from forgetlab.experiments.anatomy import base_config, first_task_config
from forgetlab.experiments.profiles import get_profile
from forgetlab.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]


def parse_recipe(text: str) -> tuple[int, int, float]:
    epochs, batch, lr = text.split(":")
    return int(epochs), int(batch), float(lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cifar")
    parser.add_argument("--candidates", default="8:128:0.05,8:64:0.05,8:32:0.05,8:64:0.1", help="epochs:batch:lr, ...")
    parser.add_argument("--reference", default="12:128:0.05", help="epochs:batch:lr of the profile as shipped")
    parser.add_argument("--reference-accuracy", type=float,
                        help="the reference's task-1 accuracy (a fraction), if already measured: not trained then")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--store", help="result store (default: a new temporary folder, so every run trains)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    profile = get_profile(args.profile)
    store = ResultStore(args.store or tempfile.mkdtemp())
    candidates = [parse_recipe(c) for c in args.candidates.split(",")]
    recipes = candidates if args.reference_accuracy is not None else [parse_recipe(args.reference), *candidates]

    def config(recipe: tuple[int, int, float], epochs: int):
        e, batch, lr = recipe
        return first_task_config(base_config(dataclasses.replace(profile, epochs=e, batch_size=batch, lr=lr), 0), epochs)

    configs = [config(r, e) for r in recipes for e in (r[0], 2 * r[0])]  # E, 2E for each recipe in turn
    results = require_finished(execute(configs, store, executor=ExecutorConfig(workers=args.workers, threads=1),
                                       device="cpu", data_dir=args.data_dir))
    accuracy = [float(result.accuracy_matrix[0, 0]) for result in results]
    by_recipe = {r: (accuracy[2 * i], accuracy[2 * i + 1]) for i, r in enumerate(recipes)}
    reference = args.reference_accuracy if args.reference_accuracy is not None else by_recipe[parse_recipe(args.reference)][0]
    print(f"{args.profile}: task 1 alone, seed 0; reference accuracy {100 * reference:.1f}% "
          f"(criteria: gain of 2E over E < 1.5 points; accuracy(E) >= {100 * reference - 1:.2f}%)")
    print("| epochs E | batch | lr | accuracy(E) | accuracy(2E) | gain (points) | converged | strong | verdict |")
    print("|---:|---:|---:|---:|---:|---:|---|---|---|")
    for recipe, (short, long) in by_recipe.items():
        gain = 100 * (long - short)
        converged, strong = gain < 1.5, short >= reference - 0.01
        verdict = "adopt" if converged and strong else "not adopted"
        if args.reference_accuracy is None and recipe == parse_recipe(args.reference):
            verdict = "reference"
        e, batch, lr = recipe
        print(f"| {e} | {batch} | {lr:g} | {100 * short:.2f}% | {100 * long:.2f}% | {gain:+.2f} | "
              f"{'yes' if converged else 'no'} | {'yes' if strong else 'no'} | {verdict} |", flush=True)


if __name__ == "__main__":
    main()
