"""Why naive task-IL forgets little in bench_methods: two protocol details, one run each.

Naive fine-tuning on split MNIST, task-incremental, the bench_methods protocol (MLP 2x400,
Adam lr 1e-3, 2,000 steps of batch 128 per task), with one detail changed:

    python benchmarks/probe_task_il.py raw       # inputs left in [0, 1] (not standardised)
    python benchmarks/probe_task_il.py keep      # Adam's state kept across tasks (not reset)
    python benchmarks/probe_task_il.py protocol  # bench_methods' own protocol, for comparison

Prints ACC and the last row of R. Results: benchmarks/RESULTS.md, "Methods".
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import numpy as np
import torch

from bench_methods import make_config  # this folder is on sys.path when run as a script
from forgetlab.api import build_stream_for
from forgetlab.models import build_model
from forgetlab.resolve import resolve
from forgetlab.engine.train import train_stream

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variant", choices=["raw", "keep", "protocol"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=os.environ.get("FORGETLAB_DATA", str(ROOT.parent / "shared" / "data")))
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = resolve(make_config("naive", {}, "multi", args.seed, 2000, reset_optimizer=args.variant != "keep"))
    stream = build_stream_for(config, data_dir=args.data_dir)
    if args.variant == "raw":
        stream = dataclasses.replace(stream, mean=tuple(0.0 for _ in stream.mean), std=tuple(1.0 for _ in stream.std))
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, input_shape=stream.input_shape, head_sizes=stream.head_sizes)
    R = train_stream(model, stream, config.train).accuracy_matrix
    print(f"{args.variant}: ACC {100 * R[-1].mean():.1f}%  last row {np.round(100 * R[-1], 1).tolist()}  "
          f"diagonal {np.round(100 * np.diag(R), 1).tolist()}")


if __name__ == "__main__":
    main()
