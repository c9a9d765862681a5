"""Training and evaluation speed of the Anatomy profiles' models on this CPU (issue 19).

Images per second of one SGD training step (forward, cross-entropy, backward, step;
batch 128 unless ``--batch``) and of evaluation (forward under ``no_grad``), for each way of
running the same model:

- ``fp32``: float32, NCHW (contiguous) tensors: what every run did before;
- ``channels_last``: weights and inputs in NHWC memory layout (``train.memory_format``);
- ``bf16``: ``torch.autocast`` to bfloat16 (``train.precision=bf16``);
- ``channels_last+bf16``: both;
- ``compile`` variants (``--compile``): ``torch.compile`` of the model, timed after its
  compilation, whose cost is printed separately.

Variants are measured in alternating rounds (A B C ... A B C ...) with one thread (the
profiles' setting), after a warm-up, and reported as medians with the ratio to ``fp32``
measured in the same run. The data path (slicing uint8 batches, normalising, flip +
translate augmentation) is timed the same way, as images/s of :class:`BatchTransform`.

    python benchmarks/bench_training_speed.py                     # the profiles' models
    python benchmarks/bench_training_speed.py --models vgg:16:3 --rounds 3 --compile
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F

from forgetlab.data.augment import BatchTransform
from forgetlab.models import create_model

# name -> (family, width, depth, batch_norm); the profiles' models (experiments/profiles.py)
MODELS = {
    "vgg:8:3": ("vgg", 8, 3, False),
    "vgg:16:3": ("vgg", 16, 3, True),
    "vgg:32:3": ("vgg", 32, 3, True),
    "resnet:16:4": ("resnet", 16, 4, True),
    "vgg:64:3": ("vgg", 64, 3, True),
}
VARIANTS = ("fp32", "channels_last", "bf16", "channels_last+bf16")


DEVICE = torch.device("cpu")


def build(name: str, variant: str) -> torch.nn.Module:
    family, width, depth, batch_norm = MODELS[name]
    torch.manual_seed(0)
    model = create_model(family, input_shape=(3, 32, 32), head_sizes=(5,), width=width, depth=depth,
                         batch_norm=batch_norm)
    model = model.to(DEVICE, memory_format=torch.channels_last) if "channels_last" in variant else model.to(DEVICE)
    if "compile" in variant:
        model = torch.compile(model)
    return model


def autocast(variant: str):
    return torch.autocast(DEVICE.type, dtype=torch.bfloat16) if "bf16" in variant else contextlib.nullcontext()


def inputs(variant: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, 32, 32, generator=g).to(DEVICE)
    if "channels_last" in variant:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 5, (n,), generator=g).to(DEVICE)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def train_rate(model, variant: str, batch: int, steps: int) -> float:
    x, y = inputs(variant, batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    _sync()
    tick = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with autocast(variant):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    _sync()
    return batch * steps / (time.perf_counter() - tick)


def eval_rate(model, variant: str, batch: int, n_batches: int) -> float:
    x, _ = inputs(variant, batch)
    model.eval()
    _sync()
    tick = time.perf_counter()
    with torch.no_grad(), autocast(variant):
        for _ in range(n_batches):
            model(x)
    _sync()
    return batch * n_batches / (time.perf_counter() - tick)


def data_rate(augment: bool, batch: int, n_batches: int) -> float:
    images = torch.randint(0, 256, (batch * n_batches, 3, 32, 32), dtype=torch.uint8)
    transform = BatchTransform((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), augment=augment)
    g = torch.Generator().manual_seed(0)
    tick = time.perf_counter()
    for index in range(n_batches):
        transform(images[index * batch:(index + 1) * batch], train=augment, generator=g)
    return batch * n_batches / (time.perf_counter() - tick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vgg:8:3,vgg:16:3,vgg:32:3,resnet:16:4",
                        help=f"comma-separated, among {', '.join(MODELS)}")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=2.0, help="target time of one measurement")
    parser.add_argument("--eval-batches", default="500,1000", help="evaluation batch sizes to compare")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile variants")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    variants = list(VARIANTS) + (["compile", "compile+channels_last+bf16"] if args.compile else [])
    eval_batches = [int(b) for b in args.eval_batches.split(",")]
    print(f"torch {torch.__version__} on {DEVICE}, {args.threads} thread(s), train batch {args.batch}, {args.rounds} rounds")
    print("| model | variant | train img/s | ratio | " + " | ".join(f"eval@{b} img/s | ratio" for b in eval_batches) + " |")
    print("|---|---|---:|---:|" + "---:|---:|" * len(eval_batches))
    for name in args.models.split(","):
        models = {}
        for variant in variants:
            tick = time.perf_counter()
            models[variant] = build(name, variant)
            train_rate(models[variant], variant, args.batch, 2)  # warm-up (and compilation)
            for b in eval_batches:
                eval_rate(models[variant], variant, b, 1)
            if "compile" in variant:
                print(f"  ({name} {variant}: compilation + warm-up {time.perf_counter() - tick:.1f} s)")
        # steps per measurement from a first fp32 timing
        probe = train_rate(models["fp32"], "fp32", args.batch, 2)
        steps = max(2, int(args.seconds * probe / args.batch))
        train: dict[str, list[float]] = {v: [] for v in variants}
        evals: dict[tuple[str, int], list[float]] = {(v, b): [] for v in variants for b in eval_batches}
        for _ in range(args.rounds):
            for variant in variants:
                train[variant].append(train_rate(models[variant], variant, args.batch, steps))
                for b in eval_batches:
                    evals[variant, b].append(eval_rate(models[variant], variant, b, max(1, steps * args.batch // b)))
        base = statistics.median(train["fp32"])
        for variant in variants:
            rate = statistics.median(train[variant])
            cells = [f"{statistics.median(evals[variant, b]):,.0f} | {statistics.median(evals[variant, b]) / statistics.median(evals['fp32', b]):.2f}x"
                     for b in eval_batches]
            print(f"| {name} | {variant} | {rate:,.0f} | {rate / base:.2f}x | " + " | ".join(cells) + " |", flush=True)
    rates = {aug: [] for aug in (False, True)}
    for _ in range(args.rounds):
        for aug in rates:
            rates[aug].append(data_rate(aug, args.batch, 200))
    print(f"data path (uint8 slice -> normalised float): {statistics.median(rates[False]):,.0f} img/s; "
          f"with flip + translate: {statistics.median(rates[True]):,.0f} img/s")


if __name__ == "__main__":
    main()
