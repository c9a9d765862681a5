"""Every mitigation method on split MNIST, task- and class-incremental (issue 5's evidence).

Protocol (after van de Ven & Tolias 2019, NOT theirs exactly: the published protocol is
configs/vandeven2019 + benchmarks/bench_published.py): MNIST cut into 5 tasks of 2 classes
in the natural order (0/1, 2/3, ...: the same split for every seed, where their code draws
a class-to-task permutation per seed), inputs standardised (theirs: [0, 1]); MLP with two
hidden layers of 400 ReLU units; Adam, lr 1e-3; 2,000 steps of batch 128 per task; a
fresh optimizer per task (theirs: Adam's state kept). Task-incremental = one 2-way head per task (multi-head);
class-incremental = one shared 10-way head (single-head). Reported: final average
accuracy ACC = mean_j R[T, j], mean ± sample std over seeds.

Runs go through ``forgetlab.run`` into a result store, keyed by config hash: a rerun
(or a second process) skips finished runs, so the benchmark can be stopped and resumed,
and split over processes::

    python benchmarks/bench_methods.py --shard 0/2 &     # two processes, one thread each
    python benchmarks/bench_methods.py --shard 1/2 &
    python benchmarks/bench_methods.py --report          # table -> benchmarks/RESULTS.md
    python benchmarks/bench_methods.py --keep-optimizer --only naive,ewc,si   # the third column

Runs are ordered seed-major (every method for seed 0 first), so a partial run still
covers every method.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from pathlib import Path

import torch

import forgetlab
from forgetlab.config import MethodConfig, ModelConfig, RunConfig, StreamConfig, TrainConfig
from forgetlab.resolve import resolve
from forgetlab.store import ResultStore
from forgetlab.strategies import format_params

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"task-IL": "multi", "class-IL": "single"}

# (row label, method, hyperparameters for task-IL, hyperparameters for class-IL).
# Regularisation strengths from the literature: EWC lambda and SI c are the per-scenario
# split-MNIST values of van de Ven's continual-learning repository (param_values.py), which
# belong to van de Ven, Tuytelaars & Tolias 2022 ("Three types of incremental learning"),
# not to the 2019 paper (its code: lambda 5000, c 0.1; configs/vandeven2019). L2 and MAS
# follow Hsu et al. 2018 (Adam, MLP400). Nothing else was tuned.
ROWS: list[tuple[str, str, dict, dict]] = [
    ("naive", "naive", {}, {}),
    ("freeze", "freeze", {"n_blocks": 1}, {"n_blocks": 1}),
    ("l2", "l2", {"lam": 0.02}, {"lam": 0.02}),
    ("ewc", "ewc", {"lam": 1e5}, {"lam": 1e9}),
    ("online-ewc", "ewc", {"lam": 1e5, "mode": "online", "gamma": 1.0}, {"lam": 1e9, "mode": "online", "gamma": 1.0}),
    ("si", "si", {"c": 10.0}, {"c": 5000.0}),
    ("mas", "mas", {"lam": 1.0}, {"lam": 1.0}),
    ("lwf", "lwf", {"lam": 1.0, "temperature": 2.0}, {"lam": 1.0, "temperature": 2.0}),
    ("replay", "replay", {"buffer_size": 1000, "fraction": 0.5}, {"buffer_size": 1000, "fraction": 0.5}),
    ("pseudo-rehearsal (old inputs)", "pseudo-rehearsal", {"revision_source": "old-inputs"}, {"revision_source": "old-inputs"}),
    ("agem", "agem", {"buffer_size": 1000, "memory_batch_size": 256}, {"buffer_size": 1000, "memory_batch_size": 256}),
    ("derpp", "derpp", {"buffer_size": 1000, "alpha": 0.5, "beta": 0.5}, {"buffer_size": 1000, "alpha": 0.5, "beta": 0.5}),
]
EXTRA_ROWS: list[tuple[str, str, dict, dict]] = [
    ("pseudo-rehearsal (new inputs)", "pseudo-rehearsal", {"revision_source": "new-inputs"}, {"revision_source": "new-inputs"}),
    ("pseudo-rehearsal (noise)", "pseudo-rehearsal", {"revision_source": "noise"}, {"revision_source": "noise"}),
    ("pseudo-rehearsal (old inputs, alternate)", "pseudo-rehearsal", {"mode": "alternate"}, {"mode": "alternate"}),
]


# A third column, run with --keep-optimizer: task-IL with Adam's state carried from task
# to task (not reset), where naive fine-tuning forgets more; regularisers only.
KEPT = "task-IL, Adam kept"
KEPT_ROWS = {"naive", "l2", "ewc", "online-ewc", "si", "mas", "lwf"}


def make_config(method: str, params: dict, head: str, seed: int, steps: int, reset_optimizer: bool = True) -> RunConfig:
    """The run config of one (method, setting, seed) cell."""
    return RunConfig(
        stream=StreamConfig(dataset="mnist", n_tasks=5, head=head),
        model=ModelConfig(name="mlp", width=400, depth=2),
        train=TrainConfig(optimizer="adam", lr=1e-3, steps=steps, batch_size=128, eval_every_steps=steps, seed=seed,
                          reset_optimizer=reset_optimizer),
        method=MethodConfig.from_dict({"name": method, **params}),
    )


def setting_config(row, setting: str, seed: int, steps: int) -> RunConfig | None:
    """The config of ``row`` in ``setting`` (``None``: not run in that setting)."""
    label, method, task_params, class_params = row
    if setting == KEPT:
        return make_config(method, task_params, "multi", seed, steps, reset_optimizer=False) if label in KEPT_ROWS else None
    head = SETTINGS[setting]
    return make_config(method, task_params if head == "multi" else class_params, head, seed, steps)


def cells(rows, seeds: int, steps: int, keep_optimizer: bool = False):
    """Every (label, setting, seed, config), seed-major."""
    settings = [KEPT] if keep_optimizer else list(SETTINGS)
    for seed in range(seeds):
        for row in rows:
            for setting in settings:
                config = setting_config(row, setting, seed, steps)
                if config is not None:
                    yield row[0], setting, seed, config


def run_shard(args: argparse.Namespace, rows) -> None:
    index, count = (int(v) for v in args.shard.split("/"))
    torch.set_num_threads(args.threads)
    for position, (label, setting, seed, config) in enumerate(cells(rows, args.seeds, args.steps, args.keep_optimizer)):
        if position % count != index:
            continue
        tick = time.perf_counter()
        result = forgetlab.run(config, device="cpu", data_dir=args.data_dir, store=args.store)
        how = "stored" if result.from_store else f"{time.perf_counter() - tick:.0f} s"
        print(f"[{args.shard}] {label:<42} {setting:<8} seed {seed}: ACC {100 * result.metrics['acc']:.1f}% ({how})", flush=True)


def _shown(task_params: MethodConfig, class_params: MethodConfig) -> str:
    """All hyperparameters for task-IL, then the class-IL ones that differ."""
    text = format_params(task_params.params) or "-"
    if class_params != task_params:
        other = format_params(class_params.params).split()
        text += "; class-IL: " + " ".join(item for item in other if item not in text.split())
    return text


def report(args: argparse.Namespace, rows) -> str:
    """The markdown section with every finished cell."""
    store = ResultStore(args.store)
    lines = [
        "## Methods",
        "",
        "`benchmarks/bench_methods.py` (issue 5). Split MNIST, 5 tasks x 2 classes, MLP 2x400 ReLU, "
        f"Adam lr 1e-3, {args.steps} steps of batch 128 per task, fresh optimizer per task, inputs standardised, "
        "no augmentation. Task-IL = one 2-way head per task (multi-head); class-IL = one shared 10-way head "
        "(single-head); the third column (`--keep-optimizer`, regularisers only) is task-IL with Adam's state "
        "carried over from task to task instead of reset. ACC = mean test accuracy over the 5 tasks after the "
        "last one, in %; mean ± sample std over n seeds (the seed drives initialisation, data order and the "
        f"methods' sampling). Machine: 2-core shared CPU, torch {torch.__version__}, one thread per run, two "
        "runs in parallel; wall seconds per run depend on the machine's load at the time, so they are not a "
        "cost comparison.",
        "",
        f"| method | task-IL ACC | class-IL ACC | {KEPT} ACC | n | wall s / run | hyperparameters |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, method, task_params, class_params in rows:
        settings = [*SETTINGS, KEPT]
        accs: dict[str, list[float]] = {setting: [] for setting in settings}
        seconds: list[float] = []
        for seed in range(args.seeds):
            for setting in settings:
                config = setting_config((label, method, task_params, class_params), setting, seed, args.steps)
                stored = store.get(resolve(config).run_id()) if config is not None else None
                if stored is not None and stored.status == "finished":
                    accs[setting].append(100 * stored.metrics["acc"])
                    if setting in SETTINGS:
                        seconds.append(stored.wall_seconds or 0.0)
        if not seconds:
            continue
        cols = []
        for setting in settings:
            values = accs[setting]
            if not values:
                cols.append("-")
            elif len(values) == 1:
                cols.append(f"{values[0]:.1f}")
            else:
                cols.append(f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}")
        counts = {len(accs[s]) for s in SETTINGS}
        n = str(counts.pop()) if len(counts) == 1 else "/".join(str(len(accs[s])) for s in SETTINGS)
        if accs[KEPT] and str(len(accs[KEPT])) != n:
            cols[2] += f" (n={len(accs[KEPT])})"
        shown = _shown(
            MethodConfig.from_dict({"name": method, **task_params}), MethodConfig.from_dict({"name": method, **class_params})
        )
        lines.append(f"| {label} | {cols[0]} | {cols[1]} | {cols[2]} | {n} | {statistics.mean(seconds):.0f} | {shown} |")
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the ``## Methods`` section of ``path``."""
    text = path.read_text() if path.is_file() else ""
    pattern = re.compile(r"^## Methods\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + section
    path.write_text(text.rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shard", default="0/1", help="run every COUNT-th cell starting at INDEX (INDEX/COUNT)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000, help="steps per task")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--extra", action="store_true", help="also the pseudo-rehearsal variants")
    parser.add_argument("--keep-optimizer", action="store_true",
                        help="run only the third column: task-IL with Adam's state kept across tasks (regularisers)")
    parser.add_argument("--only", default="", help="comma-separated row labels to run")
    parser.add_argument("--report", action="store_true", help="write the table to benchmarks/RESULTS.md and print it")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--store", default=str(ROOT / "forgetlab-results" / "bench_methods"))
    parser.add_argument(
        "--data-dir", default=os.environ.get("FORGETLAB_DATA", str(ROOT.parent / "shared" / "data"))
    )
    args = parser.parse_args()
    rows = ROWS + (EXTRA_ROWS if args.extra else [])
    if args.only:
        wanted = set(args.only.split(","))
        rows = [row for row in rows if row[0] in wanted]
    if args.report:
        section = report(args, ROWS + EXTRA_ROWS)
        write_section(Path(args.results), section)
        print(section)
    else:
        run_shard(args, rows)


if __name__ == "__main__":
    main()
