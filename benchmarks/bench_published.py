"""Published continual-learning tables, reproduced from the shipped config files (issue 14).

Every ``configs/<table>/<cell>.toml`` is run for each seed, exactly as
``forgetlab sweep --config FILE --grid train.seed=1,2,3,4,5`` would (same configs, same run
ids, same store), then compared with ``configs/published.toml``. How a cell is judged
(written before the runs): ours = mean ± SEM of ACC (mean test accuracy over all tasks after
the last one) over the seeds; difference = ours - published; a cell is **off** when
|difference| > 3 points, and every off cell gets an investigation in RESULTS.md; a verdict
on fewer than 5 seeds is marked provisional.

    python benchmarks/bench_published.py --run --shard 0/2 &    # two processes, one thread each
    python benchmarks/bench_published.py --run --shard 1/2 &
    python benchmarks/bench_published.py --report               # the tables, printed (markdown)
    forgetlab sweep --dataset mnist ... --grid train.seed=1,2,3,4,5   # OURS_RANDOM_ORDER below, for --report's check

Runs are ordered seed-major (every cell for seed 1 first, cells with a published value
before the others), so a partial run covers every cell; the store resumes (a finished run
is never trained twice, an interrupted one goes on from its last task checkpoint).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import tomllib
from pathlib import Path

import torch

import forgetlab
from forgetlab.config import load_config
from forgetlab.experiments import expand
from forgetlab.resolve import resolve
from forgetlab.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
OFF_POINTS = 3.0
MIN_SEEDS = 5  # a verdict on fewer seeds is marked provisional


def cells(table: str) -> list[Path]:
    return sorted((CONFIGS / table).glob("*.toml"))


def seeded(path: Path, seeds: list[int]):
    """The configs of one file over the seeds: what `forgetlab sweep --config FILE --grid train.seed=...` expands."""
    return expand(load_config(path), {"train.seed": seeds})


def run(args: argparse.Namespace) -> None:
    index, count = (int(v) for v in args.shard.split("/"))
    torch.set_num_threads(args.threads)
    published = tomllib.loads((CONFIGS / "published.toml").read_text())
    compared = {name for table in args.compare for name in published.get(table, {})}
    # Cells with a published value first within each seed; the others (no published row) last.
    paths = sorted(cells(args.table), key=lambda p: p.stem not in compared)
    jobs = [(seed, path, config) for seed in args.seeds for path in paths for config in seeded(path, [seed])]
    for position, (seed, path, config) in enumerate(jobs):
        if position % count != index:
            continue
        tick = time.perf_counter()
        result = forgetlab.run(config, device="cpu", data_dir=args.data_dir, store=args.store)
        how = "stored" if result.from_store else f"{time.perf_counter() - tick:.0f} s"
        print(f"[{args.shard}] {path.stem:<22} seed {seed}: ACC {100 * result.metrics['acc']:.2f}% ({how})", flush=True)


def _mean_sem(values: list[float]) -> tuple[float, float]:
    mean = statistics.mean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan"))


def report(args: argparse.Namespace) -> str:
    published = tomllib.loads((CONFIGS / "published.toml").read_text())
    store = ResultStore(args.store)
    out = []
    for table in args.compare:
        entries = published[table]
        out += [f"#### {entries['title']}", "",
                f"Ours: mean ± SEM over seeds {','.join(map(str, args.seeds))} (n = finished runs). "
                f"Off = |ours - published| > {OFF_POINTS:g} points.", "",
                "| cell | ours ACC % | n | published % | checked | difference | verdict |", "|---|---|---|---|---|---|---|"]
        for path in cells(args.table):
            accs = []
            for config in seeded(path, args.seeds):
                stored = store.get(resolve(config).run_id())
                if stored is not None and stored.status == "finished":
                    accs.append(100 * stored.metrics["acc"])
            cell = entries.get(path.stem)
            if not accs and cell is None:
                continue
            ours = "-" if not accs else "{:.2f} ± {:.2f}".format(*_mean_sem(accs))
            if cell is None:
                if table == args.table:  # the table the files were written for: every file has a row
                    out.append(f"| {path.stem} | {ours} | {len(accs)} | no published row | | | |")
                continue
            theirs = f"{cell['mean']:.2f} ± {cell['sem']:.2f}"
            if not accs:
                out.append(f"| {path.stem} | - | 0 | {theirs} | {cell['checked']} | | not run |")
                continue
            difference = statistics.mean(accs) - cell["mean"]
            verdict = "**off**" if abs(difference) > OFF_POINTS else "within 3"
            if len(accs) < MIN_SEEDS:
                verdict += f" (provisional: n < {MIN_SEEDS})"
            out.append(f"| {path.stem} | {ours} | {len(accs)} | {theirs} | {cell['checked']} | {difference:+.2f} | {verdict} |")
        out.append("")
    return "\n".join(out)


# Naive task-IL under forgetlab's bench_methods protocol (standardised inputs, a fresh Adam
# per task) but with the per-seed random class order of the published code: is it the
# split, or the protocol details, that made bench_methods' naive task-IL forget little?
OURS_RANDOM_ORDER = [
    "stream.dataset=mnist", "stream.n_tasks=5", "stream.head=multi", "stream.class_order=random", "model.name=mlp",
    "model.width=400", "model.depth=2", "train.optimizer=adam", "train.lr=0.001", "train.steps=2000",
    "train.batch_size=128", "train.eval_every_steps=2000",
]


def protocol_check(args: argparse.Namespace) -> str:
    """Naive task-IL: bench_methods' protocol with the random class order vs the published protocol."""
    from forgetlab.config import RunConfig, apply_overrides

    store = ResultStore(args.store)
    rows = []
    for label, configs in (
        ("ours (standardised inputs, fresh Adam per task), random class order",
         expand(apply_overrides(RunConfig(), OURS_RANDOM_ORDER), {"train.seed": args.seeds})),
        ("theirs (configs/vandeven2019/task-il-naive.toml: inputs in [0, 1], Adam kept)",
         seeded(CONFIGS / "vandeven2019" / "task-il-naive.toml", args.seeds)),
    ):
        accs = []
        for config in configs:
            stored = store.get(resolve(config).run_id())
            if stored is not None and stored.status == "finished":
                accs.append(100 * stored.metrics["acc"])
        if accs:
            sd = statistics.stdev(accs) if len(accs) > 1 else float("nan")
            rows.append(f"| {label} | {statistics.mean(accs):.1f} ± {sd:.1f} | {len(accs)} | "
                        + ", ".join(f"{a:.1f}" for a in accs) + " |")
    return "\n".join(["| naive task-IL, split MNIST | ACC % (mean ± sd) | n | per seed |", "|---|---|---|---|", *rows, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default="vandeven2019", help="the configs/<TABLE> folder to run (default vandeven2019)")
    parser.add_argument("--compare", default="vandeven2019,vandeven2018",
                        help="published tables (sections of configs/published.toml) to compare with")
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--shard", default="0/1", help="run every COUNT-th job starting at INDEX (INDEX/COUNT)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--store", default=str(ROOT.parent / "stores" / "published"))
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--run", action="store_true", help="train every (seed, cell) not yet in the store")
    parser.add_argument("--report", action="store_true", help="print the comparison tables (markdown)")
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.compare = [t for t in args.compare.split(",") if t]
    if args.run:
        run(args)
    if args.report:
        print(report(args))
        print(protocol_check(args))
    if not (args.run or args.report):
        parser.print_help(sys.stderr)


if __name__ == "__main__":
    main()
