"""Command-line interface: thin: parse -> config -> library call -> print.

    forgetlab run                       # embedded default: digits, 2 tasks x 5 classes
    forgetlab run --dataset cifar10 --data-dir ../shared/data
    forgetlab run --set train.lr=0.01 --set stream.head=single --json
    forgetlab run --method ewc --set method.lam=100
    forgetlab list
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import NoReturn

from forgetlab.errors import ForgetlabError


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block, no traceback)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="forgetlab",
        description="Measure, explain and reduce catastrophic forgetting.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser("run", help="train a model task by task and print the accuracy matrix")
    run.add_argument("--config", metavar="FILE.toml", help="read the run config from a TOML file")
    run.add_argument("--dataset", help="data source (see `forgetlab list`); default digits")
    run.add_argument("--stream", help="how the dataset is cut into tasks; default split")
    run.add_argument("--model", help="model family (see `forgetlab list`); default: the dataset's")
    run.add_argument("--method", help="mitigation method (see `forgetlab list`); default naive")
    run.add_argument("--epochs", type=int, help="epochs per task; default: the dataset's")
    run.add_argument("--seed", type=int, help="random seed (default 0)")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="set any config field, e.g. --set train.lr=0.01 or --set method.lam=100 (repeatable)",
    )
    run.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    run.add_argument("--data-dir", help="folder with the dataset files (else $FORGETLAB_DATA, else the cache)")
    run.add_argument("--download", action="store_true", help="download missing dataset files (checksums verified)")
    run.add_argument("--store", help="result store folder (else $FORGETLAB_STORE, else ./forgetlab-results)")
    run.add_argument("--rerun", action="store_true", help="train again even if the store has this run")
    run.add_argument("--json", action="store_true", help="end the output with one JSON line of the results")
    run.add_argument("--quiet", action="store_true", help="no progress bars")

    commands.add_parser("list", help="name the datasets, streams, models and methods (with their hyperparameters)")

    analyze = commands.add_parser("analyze", help="compare two checkpoints block by block (CKA, subspace)")
    measures = analyze.add_subparsers(dest="measure", metavar="MEASURE", parser_class=_Parser, required=True)
    for measure, text in (("cka", "linear CKA (debiased and biased)"), ("subspace", "top-k subspace similarity")):
        sub = measures.add_parser(measure, help=f"{text} of every block, checkpoint A vs B")
        sub.add_argument("checkpoint_a", metavar="A.pt")
        sub.add_argument("checkpoint_b", metavar="B.pt")
        sub.add_argument("--dataset", help="read the inputs from this dataset (default: A's)")
        sub.add_argument("--task", type=int, default=1, help="whose test inputs to use (1-based; default 1)")
        sub.add_argument("--blocks", help="comma-separated block names (default: all shared blocks)")
        sub.add_argument("--pool", action="store_true", help="average-pool conv maps instead of flattening")
        sub.add_argument("--max-samples", type=int, default=0, help="use at most this many inputs (0 = all)")
        if measure == "subspace":
            sub.add_argument("--k", type=int, default=10, help="number of principal directions (default 10)")
        sub.add_argument("--data-dir", help="folder with the dataset files")
        sub.add_argument("--download", action="store_true", help="download missing dataset files")
        sub.add_argument("--out", help=f"figure path without suffix (default ./forgetlab-{measure})")
    return parser


def _config_from_args(args: argparse.Namespace):  # -> RunConfig
    from forgetlab.config import RunConfig, apply_overrides, load_config

    config = load_config(args.config) if args.config else RunConfig()
    shortcuts = []
    if args.dataset is not None:
        shortcuts.append(f"stream.dataset={args.dataset}")
    if args.stream is not None:
        shortcuts.append(f"stream.stream={args.stream}")
    if args.model is not None:
        shortcuts.append(f"model.name={args.model}")
    if args.method is not None:
        shortcuts.append(f"method.name={args.method}")
    if args.epochs is not None:
        shortcuts.append(f"train.epochs={args.epochs}")
    if args.seed is not None:
        shortcuts.append(f"train.seed={args.seed}")
    return apply_overrides(config, [*shortcuts, *args.overrides])


def format_matrix(matrix: Sequence[Sequence[float]]) -> str:
    """The accuracy matrix as a text table, in percent."""
    n_tasks = len(matrix)
    header = " " * 13 + "".join(f"{'task ' + str(j + 1):>9}" for j in range(n_tasks))
    lines = [header]
    for i, row in enumerate(matrix):
        lines.append(f"{'after task ' + str(i + 1):<13}" + "".join(f"{100 * value:>8.1f}%" for value in row))
    return "\n".join(lines)


def _command_run(args: argparse.Namespace) -> int:
    import forgetlab

    config = _config_from_args(args)
    progress = sys.stderr.isatty() and not args.quiet
    result = forgetlab.run(
        config,
        device=args.device,
        data_dir=args.data_dir,
        download=args.download,
        store=args.store,
        rerun=args.rerun,
        progress=progress,
    )
    cfg = result.config
    how = "read from the store" if result.from_store else f"trained in {result.wall_seconds:.1f} s on {result.device}"
    print(
        f"run {result.run_id}: {cfg.stream.dataset} / {cfg.stream.stream} ({cfg.stream.head}-head, "
        f"{len(result.accuracy_matrix)} tasks) / {cfg.model.name} / method {cfg.method.name}; {how}"
    )
    print("Accuracy matrix R[i, j]: test accuracy on task j after training through task i")
    print(format_matrix(result.accuracy_matrix))
    metrics = result.metrics
    print(
        f"ACC {100 * metrics['acc']:.1f}%   BWT {100 * metrics['bwt']:+.1f}%   "
        f"forgetting {100 * metrics['forgetting']:.1f}%"
    )
    print(f"run folder: {result.run_dir}")
    if args.json:
        print(
            json.dumps(
                {
                    "run_id": result.run_id,
                    "accuracy_matrix": [[float(v) for v in row] for row in result.accuracy_matrix],
                    "acc": metrics["acc"],
                    "bwt": metrics["bwt"],
                    "forgetting": metrics["forgetting"],
                }
            )
        )
    return 0


def _command_analyze(args: argparse.Namespace) -> int:
    from forgetlab.analysis.compare import compare_checkpoints, format_rows
    from forgetlab.analysis.tables import plot_block_similarity

    rows = compare_checkpoints(
        args.checkpoint_a,
        args.checkpoint_b,
        measure=args.measure,
        dataset=args.dataset,
        task=args.task,
        blocks=[b.strip() for b in args.blocks.split(",") if b.strip()] if args.blocks else None,
        k=getattr(args, "k", 10),
        pool=args.pool,
        data_dir=args.data_dir,
        download=args.download,
        max_samples=args.max_samples,
    )
    print(f"{args.measure} of {args.checkpoint_a} vs {args.checkpoint_b} on task {args.task}'s test inputs "
          f"(n = {rows[0].n_samples})")
    print(format_rows(rows))
    paths = plot_block_similarity(rows, args.out or f"forgetlab-{args.measure}")
    print("figure: " + ", ".join(str(p) for p in paths))
    return 0


def _command_list(args: argparse.Namespace) -> int:
    from forgetlab.data.sources import list_sources
    from forgetlab.data.streams import list_streams
    from forgetlab.models import list_models
    from forgetlab.strategies import list_methods

    sections = (
        ("datasets", list_sources()), ("streams", list_streams()), ("models", list_models()), ("methods", list_methods())
    )
    for title, entries in sections:
        print(f"{title}:")
        width = max(len(name) for name in entries)
        for name, description in entries.items():
            print(f"  {name:<{width}}  {description}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``forgetlab`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handlers = {"run": _command_run, "list": _command_list, "analyze": _command_analyze}
    try:
        return handlers[args.command](args)
    except ForgetlabError as exc:
        print(f"forgetlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "forgetlab: interrupted. Finished tasks are checkpointed; run the same command again to resume.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
