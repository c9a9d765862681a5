"""Engine overhead: forgetlab's training loop vs a bare hand-written PyTorch loop.

Both train the same model (same initial weights) on the same data with the same
batches (same permutations, same normalisation) and the same optimizer, in one
process, alternating engine / bare, several repeats. Evaluation is excluded from
both (the engine reports its training time without evaluation); the engine's
task-boundary checkpoints are included. Prints the median time ratio engine/bare as
its last line, e.g. ``ratio 1.03``.

    python benchmarks/bench_engine.py                    # split MNIST (real files), MLP
    python benchmarks/bench_engine.py --dataset digits   # no files needed
    python benchmarks/bench_engine.py --dataset cifar10 --model vgg --steps 100
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from forgetlab.config import RunConfig, apply_overrides
from forgetlab.resolve import resolve
from forgetlab.data.augment import BatchTransform
from forgetlab.api import build_stream_for
from forgetlab.models import build_model
from forgetlab.engine.train import train_stream


def bare_loop(model, stream, train, device) -> float:
    """The reference: the loop a PyTorch user writes by hand. Returns seconds."""
    model.to(device).train()
    transform = BatchTransform(stream.mean, stream.std, augment=stream.augment, device=device)
    data_generator = torch.Generator().manual_seed(train.seed)
    augment_generator = torch.Generator(device=device).manual_seed(train.seed + 1)
    start = time.perf_counter()
    for task in stream.tasks:
        optimizer = torch.optim.SGD(model.parameters(), lr=train.lr, momentum=train.momentum)
        x, y = task.train_x.to(device), task.train_y.to(device)
        n = x.shape[0]
        batch = min(train.batch_size, n)
        per_epoch = -(-n // batch)
        if n % batch == 1 and per_epoch > 1:
            per_epoch -= 1
        total = train.steps or train.epochs * per_epoch
        step = 0
        while step < total:
            order = torch.randperm(n, generator=data_generator).to(device)
            for begin in range(0, per_epoch * batch, batch):
                index = order[begin : begin + batch]
                loss = F.cross_entropy(
                    model(transform(x[index], train=True, generator=augment_generator), task.head_index), y[index]
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                if step >= total:
                    break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def engine_loop(model, stream, train, device) -> float:
    with tempfile.TemporaryDirectory() as folder:
        result = train_stream(model, stream, train, device=device, checkpoint_dir=Path(folder))
    return result.train_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--n-tasks", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200, help="steps per task")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=os.environ.get("FORGETLAB_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = resolve(
        apply_overrides(
            RunConfig(),
            [
                f"stream.dataset={args.dataset}", f"stream.n_tasks={args.n_tasks}", f"model.name={args.model}",
                f"train.steps={args.steps}", f"train.batch_size={args.batch_size}", "train.optimizer=sgd",
            ],
        )
    )
    stream = build_stream_for(config, data_dir=args.data_dir)
    torch.manual_seed(0)
    initial = build_model(config.model, input_shape=stream.input_shape, head_sizes=stream.head_sizes)
    print(f"dataset {args.dataset}, model {args.model}, {args.n_tasks} tasks x {args.steps} steps of batch "
          f"{args.batch_size}, device {device}, {args.threads} threads, torch {torch.__version__}")

    engine_loop(copy.deepcopy(initial), stream, config.train, device)  # warm-up
    bare_loop(copy.deepcopy(initial), stream, config.train, device)
    engine_times, bare_times, ratios = [], [], []
    for repeat in range(args.repeats):
        pair = {}
        for name, loop in (("engine", engine_loop), ("bare", bare_loop)) if repeat % 2 == 0 else (("bare", bare_loop), ("engine", engine_loop)):
            pair[name] = loop(copy.deepcopy(initial), stream, config.train, device)
        engine_times.append(pair["engine"])
        bare_times.append(pair["bare"])
        ratios.append(pair["engine"] / pair["bare"])
        print(f"repeat {repeat + 1}: engine {pair['engine']:.3f} s  bare {pair['bare']:.3f} s  ratio {ratios[-1]:.3f}")
    print(f"median engine {statistics.median(engine_times):.3f} s, median bare {statistics.median(bare_times):.3f} s")
    print(f"ratio {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
