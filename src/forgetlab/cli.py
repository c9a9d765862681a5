"""Command-line interface: thin: parse -> config -> library call -> print.

    forgetlab run                       # embedded default: digits, 2 tasks x 5 classes
    forgetlab run --dataset cifar10 --data-dir ../shared/data
    forgetlab run --set train.lr=0.01 --set stream.head=single --json
    forgetlab run --method ewc --set method.lam=100
    forgetlab list
    forgetlab reproduce anatomy --profile quick --data-dir ../shared/data
    forgetlab report --store forgetlab-results
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
    _add_reproduce_parsers(commands)
    return parser


def _add_reproduce_parsers(commands: argparse._SubParsersAction) -> None:
    reproduce = commands.add_parser(
        "reproduce", help="run a paper's experiments end to end (runs, analyses, figures, HTML report)"
    )
    reproduce.add_argument("experiment", choices=["anatomy"], help="anatomy: Ramasesh et al., ICLR 2021")
    reproduce.add_argument("--profile", default="quick", help="quick (CPU, < 30 min), paper (GPU) or tiny (tests)")
    reproduce.add_argument("--only", help="comma-separated analyses: freeze,reset,cka,subspace,mitigation,class_pairs,mixup")
    reproduce.add_argument("--model", help="model family (vgg, resnet, densenet, mlp); default: the profile's")
    reproduce.add_argument("--dataset", help="cifar10 (split), cifar10-shift, cifar100-shift, fashion-mnist, mnist, digits")
    reproduce.add_argument("--seeds", type=int, help="number of seeds (error bands); default: the profile's")
    reproduce.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    reproduce.add_argument("--data-dir", help="folder with the dataset files (else $FORGETLAB_DATA, else the cache)")
    reproduce.add_argument("--store", help="result store folder (else $FORGETLAB_STORE, else ./forgetlab-results)")
    reproduce.add_argument("--report-dir", help="where the figures and anatomy.html go (default <store>/reports/anatomy)")
    reproduce.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")

    report = commands.add_parser("report", help="rebuild the HTML report and figures from the result store alone")
    report.add_argument("--store", help="result store folder (else $FORGETLAB_STORE, else ./forgetlab-results)")
    report.add_argument("--out", help="output folder (default <store>/reports/anatomy)")


def _command_reproduce(args: argparse.Namespace) -> int:
    from forgetlab.experiments import reproduce_anatomy

    quiet = args.quiet
    out = reproduce_anatomy(
        args.profile, store=args.store, only=args.only, model=args.model, dataset=args.dataset, seeds=args.seeds,
        device=args.device, data_dir=args.data_dir, progress=sys.stderr.isatty() and not quiet,
        report_dir=args.report_dir, log=None if quiet else (lambda line: print(line, file=sys.stderr, flush=True)),
    )
    computed = len(out.computed)
    total = sum(len(v) for v in out.results.values())
    print(f"anatomy: {total} analysis results ({computed} computed now, {total - computed} from the store) "
          f"in {out.wall_seconds:.0f} s")
    print(f"report: {out.report}")
    return 0


def _command_report(args: argparse.Namespace) -> int:
    from forgetlab.report import build_report
    from forgetlab.store import ResultStore, default_store_dir

    store = ResultStore(args.store or default_store_dir())
    path = build_report(store, args.out or store.root / "reports" / "anatomy")
    print(f"report: {path}")
    return 0


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
    handlers = {"run": _command_run, "list": _command_list, "reproduce": _command_reproduce, "report": _command_report}
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
