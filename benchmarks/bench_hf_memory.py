"""Peak memory of diagnose / finetune on a 100M-parameter transformer (issue 17).

A randomly initialised BERT-style classifier of about 100M parameters (hidden 768, 12
heads, intermediate 3072; by default 2 layers and a 120k-token vocabulary, so that most
parameters sit in the embeddings and a forward pass over 2,000 texts takes minutes, not
an hour, on a CPU; ``--layers 12 --vocab 30522`` is BERT-base), NEW = OLD with Gaussian
noise on every weight, and 2,000 random texts of 128 tokens. Measured, as peak resident
memory above the process's level once both models are built (``_memory.PeakMemory``):

1. the similarity pass of ``diagnose``: OLD and NEW run batch by batch (64 texts) under
   ``no_grad``; every block's output is pooled over tokens and streamed into its CKA
   accumulator (``streamed_similarity``);
2. one step of the reset analysis: a copy of NEW with one block rewound to OLD, scored
   on all 2,000 texts (the analysis repeats this step once per rewind; each copy is
   freed before the next);
3. ``finetune`` with pseudo-rehearsal (frozen teacher copy, Adam): one epoch over
   ``--finetune-texts`` new texts (default 160) with as many old texts, batch 16.

    nice python benchmarks/bench_hf_memory.py [--layers 2] [--vocab 120000] [--texts 2000]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _memory import PeakMemory, rss  # noqa: E402

from forgetlab.user import finetune  # noqa: E402
from forgetlab.user.diagnosis import _rewound, score, streamed_similarity  # noqa: E402
from forgetlab.user.transformers import CLASSIFIER, HFModel  # noqa: E402
from forgetlab.user.userdata import UserData  # noqa: E402

MB = 1 << 20


def texts(n: int, length: int, vocab: int, seed: int) -> UserData:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 2, length)
    x[:, 0] = torch.randint(5, vocab, (n, length), generator=g).float()
    x[:, 1] = 1.0
    return UserData(x, torch.randint(0, 2, (n,), generator=g), f"{n} random texts of {length} tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=120_000)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--finetune-texts", type=int, default=160)
    args = parser.parse_args()
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=args.vocab, num_hidden_layers=args.layers, num_labels=2)
    base = rss()
    old = HFModel(BertForSequenceClassification(config), CLASSIFIER).eval()
    new = copy.deepcopy(old)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(0.02 * torch.randn_like(p))
    n_params = sum(p.numel() for p in old.parameters())
    print(f"# bench_hf_memory  {time.strftime('%Y-%m-%d')}  {platform.machine()}  {os.cpu_count()} CPUs  torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads)  load average at start {os.getloadavg()[0]:.1f}")
    print(f"model: BERT-style classifier, {args.layers} layers, hidden 768, vocab {args.vocab}: {n_params / 1e6:.1f}M "
          f"parameters ({n_params * 4 / MB:.0f} MiB of float32 each copy); blocks {len(old.block_names)}")
    print(f"OLD + NEW built: RSS {rss() / MB:.0f} MiB ({(rss() - base) / MB:.0f} MiB above the process before them)")
    data = texts(args.texts, args.length, args.vocab, 1)
    print(f"data: {data.source}: {data.x.numel() * 4 / MB:.0f} MiB packed (ids + mask as float32)")

    tick = time.perf_counter()
    with PeakMemory() as peak:
        found = streamed_similarity(old, new, data.x, old.block_names, k=10, batch_size=64)
    seconds = time.perf_counter() - tick
    cka = ", ".join(f"{name} {value[0]:.3f}" for name, value in found.items())
    print(f"1. similarity pass (OLD and NEW, {args.texts} texts, batches of 64): peak +{peak.added / MB:.0f} MiB, "
          f"{seconds:.0f} s; debiased CKA: {cka}")

    tick = time.perf_counter()
    with PeakMemory() as peak:
        rewound = _rewound(old, new, [old.block_names[1]])
        value = score(rewound, data)
        del rewound
    seconds = time.perf_counter() - tick
    print(f"2. one reset step (copy of NEW, {old.block_names[1]} rewound, scored on {args.texts} texts): "
          f"peak +{peak.added / MB:.0f} MiB, {seconds:.0f} s (accuracy {100 * value:.1f}%)")

    n = args.finetune_texts
    tick = time.perf_counter()
    with PeakMemory() as peak:
        result = finetune(old, texts(n, args.length, args.vocab, 2), method="pseudo-rehearsal",
                          old_data=texts(n, args.length, args.vocab, 3), epochs=1, batch_size=16, lr=1e-5)
    seconds = time.perf_counter() - tick
    print(f"3. finetune pseudo-rehearsal, 1 epoch over {result.n_new_train} new texts (+ revision texts), batch 16, "
          f"Adam: peak +{peak.added / MB:.0f} MiB, {seconds:.0f} s (training {result.train_seconds:.0f} s)")
    print(f"# peak RSS of the process {peak.peak / MB:.0f} MiB; load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
