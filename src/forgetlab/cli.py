"""Command-line interface: thin: parse -> config -> library call -> print.

    forgetlab run                       # embedded default: digits, 2 tasks x 5 classes
    forgetlab run --dataset cifar10 --data-dir ../shared/data
    forgetlab run --set train.lr=0.01 --set stream.head=single --json
    forgetlab run --method ewc --set method.lam=100
    forgetlab sweep --method ewc --grid method.lam=1,100 --grid train.seed=0,1,2 --workers 2
    forgetlab list
    forgetlab diagnose old.pt new.pt --data old.npz --new-data new.npz --report diag/
    forgetlab finetune model.pt --new-data new.npz --method pseudo-rehearsal --out tuned.pt
    forgetlab finetune my-bert/ --new-data new.csv --old-data old.csv --lora 8 --out my-bert-v2/   # Hugging Face
    forgetlab reproduce anatomy --profile quick --data-dir ../shared/data
    forgetlab report --store forgetlab-results
    forgetlab runs --where method.name=ewc          # what the store holds; show RUN_ID; export --format csv
    forgetlab store check --store forgetlab-results
    forgetlab verify-data --dataset mnist --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from forgetlab._version import __version__
from forgetlab.errors import ForgetlabError


JSON_HELP = "print one JSON document on stdout and nothing else (human text goes to stderr)"


def _human(args: argparse.Namespace):  # -> a text stream
    """Where the human-readable output goes: stderr with --json (stdout is the JSON alone)."""
    return sys.stderr if getattr(args, "json", False) else sys.stdout


def _one_line(message: str) -> str:
    """``message`` with every non-printable character escaped (``\\n``, ``\\x1e``, ...).

    Error messages quote what the user typed; a control character in it (a newline, or
    one of the other line boundaries of ``str.splitlines``) must not break the one line.
    """
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in message)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block, no traceback)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, _one_line(f"{self.prog}: error: {message} (see `{self.prog} --help`)") + "\n")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE.toml", help="read the run config from a TOML file")
    parser.add_argument("--dataset", help="data source (see `forgetlab list`); default digits")
    parser.add_argument("--stream", help="how the dataset is cut into tasks; default split")
    parser.add_argument("--model", help="model family (see `forgetlab list`); default: the dataset's")
    parser.add_argument("--method", help="mitigation method (see `forgetlab list`); default naive")
    parser.add_argument("--epochs", type=int, help="epochs per task; default: the dataset's")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="set any config field, e.g. --set train.lr=0.01 or --set method.lam=100 (repeatable)",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--data-dir", help="folder with the dataset files (else $FORGETLAB_DATA, else the cache)")
    parser.add_argument("--download", action="store_true", help="download missing dataset files (checksums verified)")
    parser.add_argument("--store", help="result store folder (else $FORGETLAB_STORE, else ./forgetlab-results)")


def _add_executor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=1, help="runs trained at the same time (default 1)")
    parser.add_argument(
        "--executor", help="inprocess (default with 1 worker), processes (default with more), or ray"
    )
    parser.add_argument("--address", help="Ray cluster address (--executor ray; default: start a local Ray)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (default: CPUs / workers)")


def _executor_from_args(args: argparse.Namespace):  # -> ExecutorConfig
    from forgetlab.experiments import ExecutorConfig

    return ExecutorConfig(name=args.executor, workers=args.workers, threads=args.threads, address=args.address)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="forgetlab",
        description="Measure, explain and reduce catastrophic forgetting.",
    )
    parser.add_argument("--version", action="version", version=f"forgetlab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser("run", help="train a model task by task and print the accuracy matrix")
    _add_config_options(run)
    run.add_argument("--rerun", action="store_true", help="train again even if the store has this run")
    run.add_argument("--json", action="store_true", help=JSON_HELP)
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--no-figures", action="store_true", help="do not draw R and the learning curves into the run folder")
    run.add_argument("--log", metavar="csv,tensorboard", default="",
                     help="training logs written into the run folder: csv (train-log.csv), tensorboard (event files)")

    sweep = commands.add_parser("sweep", help="run a grid of configs (in parallel with --workers or on Ray)")
    _add_config_options(sweep)
    sweep.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2,...", required=True,
        help="a config key and its values, e.g. --grid method.lam=1,10,100 (repeatable: the cartesian product)",
    )
    _add_executor_options(sweep)
    sweep.add_argument("--json", action="store_true", help=JSON_HELP + " (an array, one object per run)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bars")
    sweep.add_argument("--no-figures", action="store_true", help="do not draw each run's R and learning curves")
    sweep.add_argument("--log", metavar="csv,tensorboard", default="", help="training logs per run folder, as for run")

    listing = commands.add_parser("list", help="name the datasets, streams, models and methods (with their hyperparameters)")
    listing.add_argument("--json", action="store_true", help=JSON_HELP)
    _add_store_parsers(commands)

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
        sub.add_argument("--device", default="cpu", help="cpu (default), cuda or auto: where the analysis runs")
        sub.add_argument("--download", action="store_true", help="download missing dataset files")
        sub.add_argument("--out", help=f"figure path without suffix (default ./forgetlab-{measure})")
        sub.add_argument("--data", help="Hugging Face model folders A and B: the texts to compare them on (CSV, JSONL or one per line)")
        sub.add_argument("--text-column", default="text", help="text column of CSV / JSONL --data (default: text)")
        sub.add_argument("--max-length", type=int, default=128, help="texts are truncated to this many tokens (default 128)")
        sub.add_argument("--token-pooling", choices=("auto", "mean", "last"), default="auto",
                         help="hidden states per text: mean over non-padding tokens or the last token (auto: by model kind)")
        sub.add_argument("--json", action="store_true", help=JSON_HELP)
    _add_user_parsers(commands)
    _add_reproduce_parsers(commands)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-class", metavar="MODULE:CLASS", help="architecture of a plain state_dict file, e.g. mynet:Net")
    parser.add_argument("--model-args", metavar="JSON", help="keyword arguments of --model-class, e.g. '{\"width\": 64}'")
    parser.add_argument("--blocks", metavar="A,B,...", help="block module paths, input side first (default: top-level children)")
    parser.add_argument("--head", metavar="PATH", help="the final linear layer's module path (default: the last nn.Linear)")
    parser.add_argument("--label-column", default="label", help="label column of CSV / JSONL data (default: label)")
    parser.add_argument("--text-column", default="text",
                        help="text column of CSV / JSONL data for a Hugging Face model folder (default: text; other files: one text per line)")
    parser.add_argument("--max-length", type=int, default=128, help="texts are truncated to this many tokens (default 128)")
    parser.add_argument("--token-pooling", choices=("auto", "mean", "last"), default="auto",
                        help="a transformer's hidden states per text for CKA: mean over non-padding tokens, or the last token "
                             "(auto: mean for classifiers, last for causal LMs)")
    parser.add_argument("--image-size", type=int, help="resize image-folder data to this size")
    parser.add_argument("--json", action="store_true", help=JSON_HELP)
    parser.add_argument(
        "--input-normalization", choices=("auto", "none"), default="auto",
        help="auto (default): apply the input normalisation a forgetlab checkpoint records to raw inputs (uint8 pixels "
             "0-255 or floats in [0, 1]); none: feed the inputs as given",
    )
    parser.add_argument(
        "--trust-pickle", action="store_true",
        help="allow a whole pickled model (torch.save(model)): unpickling runs code named by the file; only for files you trust",
    )


def _add_user_parsers(commands) -> None:
    diagnose = commands.add_parser(
        "diagnose", help="compare two checkpoints of your model on the old task: per-block change, CKA, reset analysis"
    )
    diagnose.add_argument("old", metavar="OLD", help="the model before fine-tuning (state_dict, whole model, forgetlab checkpoint, or a Hugging Face model folder)")
    diagnose.add_argument("new", metavar="NEW", help="the model after (a state_dict takes OLD's architecture)")
    diagnose.add_argument("--data", required=True, help="the old task's labelled data: .npz (x, y), .csv, or image folder "
                          "(a Hugging Face model: texts in .csv, .jsonl or one per line)")
    diagnose.add_argument("--new-data", help="the new task's labelled data (adds new-task accuracies)")
    diagnose.add_argument("--k", type=int, default=10, help="subspace dimension (default 10)")
    diagnose.add_argument("--max-samples", type=int, default=2000, help="old-task inputs for CKA / subspace (default 2000, at least 4)")
    diagnose.add_argument("--pool", action="store_true", help="average conv maps over space before CKA / subspace")
    diagnose.add_argument("--report", metavar="DIR", help="write report.html (+ PNG/SVG figures, diagnosis.json) there")
    _add_model_options(diagnose)

    finetune = commands.add_parser("finetune", help="fine-tune your model on new data while keeping its old behaviour")
    finetune.add_argument("model", metavar="MODEL", help="your trained model (state_dict, whole model, forgetlab checkpoint, or a Hugging Face model folder)")
    finetune.add_argument("--new-data", required=True, help="the new labelled data: .npz (x, y), .csv, or image folder")
    finetune.add_argument("--method", default="pseudo-rehearsal", help="pseudo-rehearsal (default), ewc, l2, replay, lwf, naive")
    finetune.add_argument("--old-data", help="labelled old-task data: true old-task accuracy; EWC / replay use it")
    finetune.add_argument("--revision-data", help="inputs the original model labels for pseudo-rehearsal (labels ignored)")
    finetune.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="a method hyperparameter, the same keys as `run`: --set method.lam=1000 (or lam=1000), "
                               "--set method.mode=alternate (repeatable)")
    finetune.add_argument("--epochs", type=int, default=5, help="epochs over the new data (default 5)")
    finetune.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    finetune.add_argument("--optimizer", default="adam", help="adam (default) or sgd")
    finetune.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    finetune.add_argument("--test-fraction", type=float, default=0.2, help="held-out share of the new (and old) data (default 0.2)")
    finetune.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    finetune.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    finetune.add_argument("--out", required=True, help="where to save the fine-tuned state_dict (+ OUT.json metadata); "
                          "for a Hugging Face model folder: a folder (save_pretrained)")
    finetune.add_argument("--lora", type=int, metavar="R", help="Hugging Face models: train rank-R LoRA adapters (peft) "
                          "instead of the weights, with the method; merged into the weights afterwards")
    finetune.add_argument("--lora-alpha", type=float, help="LoRA scale alpha (default 2 R)")
    finetune.add_argument("--lora-targets", metavar="A,B", help="module names LoRA adapts (default: peft's for the model type)")
    _add_model_options(finetune)


def _add_reproduce_parsers(commands: argparse._SubParsersAction) -> None:
    reproduce = commands.add_parser(
        "reproduce", help="run a paper's experiments end to end (runs, analyses, figures, HTML report)"
    )
    reproduce.add_argument("experiment", choices=["anatomy"], help="anatomy: Ramasesh et al., ICLR 2021")
    reproduce.add_argument("--profile", default="quick", help="quick (converged, 2-core CPU), cifar, cifar-resnet (full split CIFAR-10), paper (GPU), quick-v1 (the unconverged quick of <= 0.5) or tiny (tests)")
    reproduce.add_argument("--only", help="comma-separated analyses: freeze,reset,cka,subspace,mitigation,class_pairs,mixup")
    reproduce.add_argument("--model", help="model family (vgg, resnet, densenet, mlp); default: the profile's")
    reproduce.add_argument("--dataset", help="cifar10 (split), cifar10-shift, cifar100-shift, fashion-mnist, mnist, digits")
    reproduce.add_argument("--seeds", type=int, help="number of seeds (error bands); default: the profile's")
    reproduce.add_argument("--mixup-head", choices=["shared", "separate"],
                           help="mixup-fraction sweep: one head for both tasks (shared) or a fresh task-2 head with "
                                "task 1's head kept (separate: Lee, Goldt & Saxe 2021); default: the profile's")
    reproduce.add_argument("--precision", choices=["fp32", "bf16", "fp16"],
                           help="train.precision of every run; default: the profile's (quick, cifar, paper: bf16)")
    reproduce.add_argument("--memory-format", choices=["contiguous", "channels_last"],
                           help="train.memory_format of every run; default: the profile's (quick, cifar, paper: "
                                "channels_last)")
    reproduce.add_argument("--batch-norm", choices=["on", "off"],
                           help="BatchNorm in the model's blocks (model.batch_norm); default: the profile's (quick, "
                                "cifar: on). off: the BN-free check of the reset finding (REPRODUCTION.md)")
    reproduce.add_argument("--epochs", type=int,
                           help="epochs per task of every run; default: the profile's (quick 16, cifar 12). With "
                                "--check-convergence: are that many enough for your model and data?")
    reproduce.add_argument("--batch-size", type=int,
                           help="training batch size of every run; default: the profile's")
    reproduce.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    reproduce.add_argument("--data-dir", help="folder with the dataset files (else $FORGETLAB_DATA, else the cache)")
    reproduce.add_argument("--store", help="result store folder (else $FORGETLAB_STORE, else ./forgetlab-results)")
    reproduce.add_argument("--report-dir", help="where the figures and anatomy.html go (default <store>/reports/anatomy)")
    _add_executor_options(reproduce)
    reproduce.add_argument("--check-convergence", action="store_true",
                           help="also train task 1 alone for the profile's epochs and twice as many, and say whether "
                                "the longer training gains less than 1.5 points (converged)")
    reproduce.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    reproduce.add_argument("--json", action="store_true",
                           help=JSON_HELP + ": profile, seeds, task1_accuracy, convergence and the six findings' verdicts")

    verify = commands.add_parser(
        "verify-data", help="rehash every dataset file against its official MD5 (runs trust a remembered check)"
    )
    verify.add_argument("--dataset", action="append", help="a dataset to check (repeatable; default: every one found)")
    verify.add_argument("--data-dir", help="folder with the dataset files (else $FORGETLAB_DATA, else the cache)")
    verify.add_argument("--json", action="store_true", help=JSON_HELP)

    store = commands.add_parser("store", help="inspect the result store")
    store_commands = store.add_subparsers(dest="store_command", metavar="ACTION", parser_class=_Parser, required=True)
    check = store_commands.add_parser(
        "check", help="report inconsistencies: metrics vs R, rows vs run folders, checkpoint hashes"
    )
    check.add_argument("--store", help="result store folder (else $FORGETLAB_STORE, else ./forgetlab-results); must exist")
    check.add_argument("--json", action="store_true", help=JSON_HELP)

    report = commands.add_parser("report", help="rebuild the HTML report and figures from the result store alone")
    report.add_argument("--store", help="result store folder (else $FORGETLAB_STORE, else ./forgetlab-results)")
    report.add_argument("--out", help="output folder (default <store>/reports/anatomy)")
    report.add_argument("--json", action="store_true", help=JSON_HELP)


def _add_store_parsers(commands: argparse._SubParsersAction) -> None:
    store_help = "result store folder (else $FORGETLAB_STORE, else ./forgetlab-results); must exist"
    runs = commands.add_parser("runs", help="list the runs a result store holds, one line each")
    runs.add_argument("--store", help=store_help)
    runs.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                      help="keep runs whose config key has this value, e.g. --where method.name=ewc (repeatable)")
    runs.add_argument("--status", choices=["finished", "failed", "running"], help="keep runs with this status")
    runs.add_argument("--json", action="store_true", help=JSON_HELP + " (an array, one object per run)")

    show = commands.add_parser("show", help="one stored run: its config, accuracy matrix, metrics and figures")
    show.add_argument("run_id", metavar="RUN_ID", help="the run's id (a unique prefix is enough)")
    show.add_argument("--store", help=store_help)
    show.add_argument("--json", action="store_true", help=JSON_HELP)

    export = commands.add_parser("export", help="every stored run as one table row: CSV, JSON or Parquet (for pandas)")
    export.add_argument("--store", help=store_help)
    export.add_argument("--format", default="csv", help="csv (default), json or parquet (needs pyarrow)")
    export.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    export.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="as for `forgetlab runs`")
    export.add_argument("--status", choices=["finished", "failed", "running"], help="keep runs with this status")
    export.add_argument("--json", action="store_true", help=JSON_HELP)


def _command_reproduce(args: argparse.Namespace) -> int:
    from forgetlab.experiments import reproduce_anatomy

    quiet = args.quiet
    out = reproduce_anatomy(
        args.profile, store=args.store, only=args.only, model=args.model, dataset=args.dataset, seeds=args.seeds,
        mixup_head=args.mixup_head, precision=args.precision, memory_format=args.memory_format,
        batch_norm=None if args.batch_norm is None else args.batch_norm == "on", epochs=args.epochs,
        batch_size=args.batch_size, device=args.device,
        data_dir=args.data_dir, executor=_executor_from_args(args),
        progress=sys.stderr.isatty() and not quiet,
        report_dir=args.report_dir, log=None if quiet else (lambda line: print(line, file=sys.stderr, flush=True)),
        check_convergence=args.check_convergence,
    )
    computed = sum(1 for name, _ in out.computed if name in out.results)  # the convergence check is not an analysis
    total = sum(len(v) for v in out.results.values())
    human = _human(args)
    print(f"anatomy: {total} analysis results ({computed} computed now, {total - computed} from the store) "
          f"in {out.wall_seconds:.0f} s", file=human)
    print(f"report: {out.report}", file=human)
    if out.convergence is not None:
        c = out.convergence
        print(f"convergence (task 1 alone, seed {c['seed']}): {c['epochs']} epochs {100 * c['accuracy']:.1f}%, "
              f"{c['epochs_2x']} epochs {100 * c['accuracy_2x']:.1f}% (gain {100 * c['gain']:+.1f} points; "
              f"converged = gain < {100 * c['threshold']:.1f}): {'passed' if c['passed'] else 'NOT passed'}", file=human)
    for finding in out.summary["findings"]:
        print(f"finding {finding['id']} ({finding['name']}): {finding['verdict']}"
              + (f" -- {finding['measured']}" if finding["verdict"] != "not run" else ""), file=human)
    if args.json:
        print(json.dumps(out.summary))
    return 0


def _command_verify_data(args: argparse.Namespace) -> int:
    from forgetlab.data.files import verify_data

    statuses = verify_data(args.dataset, args.data_dir)
    if args.json:
        print(json.dumps(statuses))
        return 0
    for name, status in statuses.items():
        print(f"{name}: {status}")
    return 0


def _command_store(args: argparse.Namespace) -> int:
    from forgetlab.report.runs import existing_store
    from forgetlab.store import default_store_dir

    store = existing_store(args.store or default_store_dir())
    problems = store.check()
    if args.json:
        print(json.dumps({"store": str(store.root), "runs": len(store.list_runs()), "problems": problems}))
        return 1 if problems else 0
    for problem in problems:
        print(_one_line(problem))
    print(f"store {store.root}: {len(store.list_runs())} runs, {len(problems)} problem(s)")
    return 1 if problems else 0


def _command_report(args: argparse.Namespace) -> int:
    from forgetlab.report import build_report
    from forgetlab.report.runs import existing_store
    from forgetlab.store import default_store_dir

    store = existing_store(args.store or default_store_dir())
    path = build_report(store, args.out or store.root / "reports" / "anatomy")
    print(f"report: {path}", file=_human(args))
    if args.json:
        print(json.dumps({"report": str(path)}))
    return 0


def _command_runs(args: argparse.Namespace) -> int:
    from forgetlab.report.runs import existing_store, format_runs, parse_filters, run_rows
    from forgetlab.store import default_store_dir

    store = existing_store(args.store or default_store_dir())
    rows = run_rows(store, where=parse_filters(args.where), status=args.status)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(format_runs(rows) if rows else f"The store {str(store.root)!r} holds no run that matches.")
    print(f"{len(rows)} runs; store: {store.root}")
    return 0


def _command_show(args: argparse.Namespace) -> int:
    from forgetlab.errors import StoreError
    from forgetlab.report.runs import existing_store, run_figures, run_row
    from forgetlab.store import default_store_dir

    store = existing_store(args.store or default_store_dir())
    matches = [run_id for run_id, _ in store.list_runs() if run_id.startswith(args.run_id)]
    if len(matches) != 1:
        found = "no run" if not matches else f"{len(matches)} runs ({', '.join(matches[:5])})"
        raise StoreError(f"The RUN_ID {args.run_id!r} names {found} in the store {str(store.root)!r}. "
                         f"`forgetlab runs` lists them.")
    run = store.get(matches[0])
    assert run is not None  # listed just now
    figures = [str(p) for p in run_figures(store, run.run_id)]
    if args.json:
        print(json.dumps({**run_row(run), "R": run.accuracy_matrix, "config": run.config,
                          "run_dir": str(store.run_dir(run.run_id)), "figures": figures}))
        return 0
    print(f"run {run.run_id} ({run.status}); folder {store.run_dir(run.run_id)}")
    for section, values in run.config.items():
        shown = ", ".join(f"{k}={v}" for k, v in values.items()) if isinstance(values, dict) else values
        print(f"  {section}: {shown}")
    if run.accuracy_matrix is not None:
        print("Accuracy matrix R[i, j]: test accuracy on task j after training through task i")
        print(format_matrix(run.accuracy_matrix))
    if run.metrics:
        print("   ".join(f"{name} {100 * value:.1f}%" for name, value in sorted(run.metrics.items())))
    if run.error:
        print(f"error: {run.error}")
    print("figures: " + (", ".join(figures) if figures else "none in the run folder"))
    return 0


def _command_export(args: argparse.Namespace) -> int:
    from forgetlab.report.runs import existing_store, export_runs, parse_filters, run_rows
    from forgetlab.store import default_store_dir

    store = existing_store(args.store or default_store_dir())
    rows = run_rows(store, where=parse_filters(args.where), status=args.status)
    path = export_runs(rows, args.out, args.format)
    print(f"exported {len(rows)} runs to {path} ({args.format})", file=_human(args))
    if args.json:
        print(json.dumps({"path": str(path), "format": args.format, "runs": len(rows)}))
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
    from forgetlab.api import run

    config = _config_from_args(args)
    progress = sys.stderr.isatty() and not args.quiet
    result = run(
        config,
        device=args.device,
        data_dir=args.data_dir,
        download=args.download,
        store=args.store,
        rerun=args.rerun,
        progress=progress,
        log=[name.strip() for name in args.log.split(",") if name.strip()],
    )
    cfg = result.config
    out = _human(args)
    how = "read from the store" if result.from_store else f"trained in {result.wall_seconds:.1f} s on {result.device}"
    print(
        f"run {result.run_id}: {cfg.stream.dataset} / {cfg.stream.stream} ({cfg.stream.head}-head, "
        f"{len(result.accuracy_matrix)} tasks) / {cfg.model.name} / method {cfg.method.name}; {how}", file=out,
    )
    print("Accuracy matrix R[i, j]: test accuracy on task j after training through task i", file=out)
    print(format_matrix(result.accuracy_matrix), file=out)
    metrics = result.metrics
    print(
        f"ACC {100 * metrics['acc']:.1f}%   BWT {100 * metrics['bwt']:+.1f}%   "
        f"forgetting {100 * metrics['forgetting']:.1f}%", file=out,
    )
    print(f"run folder: {result.run_dir}", file=out)
    if not args.no_figures:
        figures = _draw_run_figures(args.store, result.run_id)
        print(f"figures: {', '.join(str(p) for p in figures if p.suffix == '.png')} (+ .svg)", file=out)
    if args.json:
        print(json.dumps({
            "run_id": result.run_id,
            "status": "finished",
            "accuracy_matrix": [[float(v) for v in row] for row in result.accuracy_matrix],
            "acc": metrics["acc"],
            "bwt": metrics["bwt"],
            "forgetting": metrics["forgetting"],
            "run_dir": str(result.run_dir),
        }))
    return 0


def _draw_run_figures(store, run_id: str) -> list:
    """Draw a stored run's R heatmap and learning curves into its run folder (once: kept if there);
    ``store`` is a ResultStore or its folder (None: the default)."""
    from forgetlab.report.runs import plot_run, run_figures
    from forgetlab.store import ResultStore, default_store_dir

    if not isinstance(store, ResultStore):
        store = ResultStore(store or default_store_dir())
    existing = run_figures(store, run_id)
    if len(existing) >= 4:
        return existing
    run = store.get(run_id)
    return plot_run(run, store.run_dir(run_id)) if run is not None else []


def _command_sweep(args: argparse.Namespace) -> int:
    from forgetlab.api import RunFailure
    from forgetlab.experiments import execute, expand, parse_grid
    from forgetlab.store import ResultStore, default_store_dir

    executor = _executor_from_args(args)
    grid = parse_grid(args.grid)
    configs = expand(_config_from_args(args), grid)
    store = ResultStore(args.store or default_store_dir())
    progress = sys.stderr.isatty() and not args.quiet
    log = None if progress or args.quiet else _log_run
    results = execute(configs, store, executor=executor, device=args.device, data_dir=args.data_dir,
                      download=args.download, progress=progress, on_done=log,
                      log=[name.strip() for name in args.log.split(",") if name.strip()])
    keys = list(grid)
    chosen = [_values(result.config, keys) for result in results]
    rows = []
    for values, result in zip(chosen, results):
        values = ["-" if value is None else str(value) for value in values.values()]
        if isinstance(result, RunFailure):
            rows.append([result.run_id, *values, "failed", "", "", "", "", ""])
        else:
            m = result.metrics
            how = "stored" if result.from_store else "trained"
            rows.append([result.run_id, *values, how, f"{100 * m['acc']:.1f}", f"{100 * m['bwt']:+.1f}",
                         f"{100 * m['forgetting']:.1f}", f"{result.wall_seconds:.1f}", result.device])
    header = ["run", *keys, "status", "ACC %", "BWT %", "forgetting %", "wall s", "device"]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    out = _human(args)
    for row in [header, *rows]:
        print("  ".join(f"{str(cell):<{width}}" for cell, width in zip(row, widths)).rstrip(), file=out)
    failures = [r for r in results if isinstance(r, RunFailure)]
    for failure in failures:
        print(f"failed {failure.run_id}: {failure.error}", file=sys.stderr)
    print(f"{len(results)} runs ({len(failures)} failed) on the {executor.resolved_name} executor; store: {store.root}",
          file=out)
    if not args.no_figures:
        for result in results:
            if not isinstance(result, RunFailure):
                _draw_run_figures(store, result.run_id)
        print(f"figures: accuracy-matrix and learning-curves (.png, .svg) in each run folder under {store.root / 'runs'}",
              file=out)
    if args.json:
        entries = []
        for values, result in zip(chosen, results):
            entry = {"run_id": result.run_id, **values}
            if isinstance(result, RunFailure):
                entry.update(status="failed", error=result.error)
            else:
                entry.update(status="finished", **{k: result.metrics[k] for k in ("acc", "bwt", "forgetting")})
            entries.append(entry)
        print(json.dumps(entries))
    return 1 if failures else 0


def _log_run(result) -> None:
    """One line on stderr per finished or failed run (a sweep's log when there is no terminal)."""
    from forgetlab.api import RunFailure

    if isinstance(result, RunFailure):
        print(f"run {result.run_id} failed: {result.error}", file=sys.stderr, flush=True)
    else:
        print(f"run {result.run_id} done: ACC {100 * result.metrics['acc']:.1f}% in {result.wall_seconds:.1f} s "
              f"on {result.device}", file=sys.stderr, flush=True)


def _values(config, keys: list[str]) -> dict:
    """``{"method.lam": 100.0, ...}``: the resolved config's values of the grid keys."""
    data = config.to_dict()  # method hyperparameters sit beside method.name
    return {key: data[key.partition(".")[0]].get(key.partition(".")[2]) for key in keys}  # None: not this method's


def _command_analyze(args: argparse.Namespace) -> int:
    from forgetlab.experiments.compare import checkpoint_comparison, format_rows
    from forgetlab.report.figures import plot_block_similarity
    from forgetlab.user.transformers import is_hf_folder

    if is_hf_folder(args.checkpoint_a):
        return _analyze_hf(args)
    comparison = checkpoint_comparison(
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
        device=args.device,
    )
    rows = comparison.rows
    out = _human(args)
    print(f"{args.measure} of {args.checkpoint_a} vs {args.checkpoint_b} on task {args.task}'s test inputs "
          f"(n = {rows[0].n_samples})", file=out)
    print(f"input normalisation: {comparison.normalization}", file=out)
    print(format_rows(rows), file=out)
    paths = plot_block_similarity(rows, args.out or f"forgetlab-{args.measure}")
    print("figure: " + ", ".join(str(p) for p in paths), file=out)
    if args.json:
        print(json.dumps({"measure": args.measure, "a": args.checkpoint_a, "b": args.checkpoint_b, "task": args.task,
                          "rows": [dataclasses.asdict(row) for row in rows], "figures": [str(p) for p in paths],
                          "input_normalization": {"mean": list(comparison.mean), "std": list(comparison.std),
                                                  "description": comparison.normalization}}))
    return 0


def _analyze_hf(args: argparse.Namespace) -> int:
    from forgetlab.errors import ConfigError
    from forgetlab.experiments.compare import format_rows
    from forgetlab.report.figures import plot_block_similarity
    from forgetlab.user.transformers import block_similarity, load_hf_model, load_text_data

    if not args.data:
        raise ConfigError(f"The --data option is required for Hugging Face model folders: the texts to compare "
                          f"{args.checkpoint_a} and {args.checkpoint_b} on.")
    blocks = [b.strip() for b in args.blocks.split(",") if b.strip()] if args.blocks else None
    a = load_hf_model(args.checkpoint_a, blocks=blocks, token_pooling=args.token_pooling)
    b = load_hf_model(args.checkpoint_b, blocks=a.block_names, token_pooling=args.token_pooling)
    data = load_text_data(args.data, a, text_column=args.text_column, max_length=args.max_length, require_labels=False)
    rows = block_similarity(a, b, data, measure=args.measure, k=getattr(args, "k", 10), max_samples=args.max_samples)
    out = _human(args)
    print(f"{args.measure} of {args.checkpoint_a} vs {args.checkpoint_b} on {args.data} (n = {rows[0].n_samples}); "
          f"{a.describe_pooling()}", file=out)
    print(format_rows(rows), file=out)
    paths = plot_block_similarity(rows, args.out or f"forgetlab-{args.measure}")
    print("figure: " + ", ".join(str(p) for p in paths), file=out)
    if args.json:
        print(json.dumps({"measure": args.measure, "a": args.checkpoint_a, "b": args.checkpoint_b, "data": args.data,
                          "rows": [{**dataclasses.asdict(row), "value": None if row.value != row.value else row.value}  # NaN: none
                                   for row in rows],
                          "figures": [str(p) for p in paths], "token_pooling": a.token_pooling}))
    return 0


def _command_list(args: argparse.Namespace) -> int:
    from forgetlab.data.sources import list_sources
    from forgetlab.data.streams import list_streams
    from forgetlab.models import list_models
    from forgetlab.strategies import list_methods

    sections = (
        ("datasets", list_sources()), ("streams", list_streams()), ("models", list_models()), ("methods", list_methods())
    )
    if args.json:
        print(json.dumps({title: entries for title, entries in sections}))
        return 0
    for title, entries in sections:
        print(f"{title}:")
        width = max(len(name) for name in entries)
        for name, description in entries.items():
            print(f"  {name:<{width}}  {description}")
    return 0


def _load_model_args(args: argparse.Namespace, path: str, architecture=None):  # -> WrappedModel
    from forgetlab.errors import ConfigError
    from forgetlab.user import load_user_model

    model_args = None
    if args.model_args:
        try:
            model_args = json.loads(args.model_args)
        except ValueError as exc:
            raise ConfigError(f"The --model-args option must be a JSON object. Got {args.model_args!r} ({exc}).") from None
        if not isinstance(model_args, dict):
            raise ConfigError(f"The --model-args option must be a JSON object. Got {args.model_args!r}.")
    blocks = [b.strip() for b in args.blocks.split(",") if b.strip()] if args.blocks else None
    return load_user_model(
        path, module=architecture, model_class=args.model_class, model_args=model_args, blocks=blocks, head=args.head,
        trust_pickle=args.trust_pickle,
    )


def _blocks_option(args: argparse.Namespace) -> list[str] | None:
    return [b.strip() for b in args.blocks.split(",") if b.strip()] if args.blocks else None


def _diagnose_hf(args: argparse.Namespace):  # -> Diagnosis
    from forgetlab.errors import ConfigError
    from forgetlab.user import diagnose
    from forgetlab.user.transformers import is_hf_folder, load_hf_model, load_text_data, truncation_notes

    if not is_hf_folder(args.new):
        raise ConfigError(f"NEW must be a Hugging Face model folder like OLD ({args.old}). Got {args.new!r}.")
    old = load_hf_model(args.old, blocks=_blocks_option(args), token_pooling=args.token_pooling)
    new = load_hf_model(args.new, blocks=old.block_names, token_pooling=args.token_pooling)
    load = lambda path: load_text_data(path, new, text_column=args.text_column, label_column=args.label_column,  # noqa: E731
                                       max_length=args.max_length) if path else None
    data, new_data = load(args.data), load(args.new_data)
    result = diagnose(old, new, data, new_data, k=args.k, max_samples=args.max_samples)
    result.notes += truncation_notes([data, new_data])
    return result


def _command_diagnose(args: argparse.Namespace) -> int:
    from forgetlab.user import diagnose, load_user_data
    from forgetlab.user.transformers import is_hf_folder

    if is_hf_folder(args.old):
        return _print_diagnosis(args, _diagnose_hf(args))
    old = _load_model_args(args, args.old)
    new = _load_model_args(args, args.new, architecture=old.module)
    if old.input_shape is not None and new.input_shape is None:
        new.input_shape = old.input_shape
    if not args.blocks and new.block_names != old.block_names:
        new = type(new)(new, blocks=old.block_names, head=old.head_name, input_shape=old.input_shape)
    data = load_user_data(args.data, label_column=args.label_column, image_size=args.image_size)
    new_data = load_user_data(args.new_data, label_column=args.label_column, image_size=args.image_size) if args.new_data else None
    result = diagnose(old, new, data, new_data, k=args.k, max_samples=args.max_samples, pool=args.pool,
                      input_normalization=args.input_normalization)
    return _print_diagnosis(args, result)


def _print_diagnosis(args: argparse.Namespace, result: Any) -> int:
    """The diagnosis table (stdout, or stderr with --json), the HTML report, the JSON document."""
    from forgetlab.user import write_report

    print(result.format_table(), file=_human(args))
    if args.report:
        print(f"report: {write_report(result, args.report)}", file=_human(args))
    if args.json:
        print(json.dumps(result.to_dict()))
    return 0


def _parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _command_finetune(args: argparse.Namespace) -> int:
    from forgetlab.errors import ConfigError
    from forgetlab.user import finetune, load_user_data, save_user_model

    params = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"The --set option must look like KEY=VALUE (e.g. lam=100). Got {item!r}.")
        params[key.strip()] = _parse_value(value.strip())
    from forgetlab.user.transformers import is_hf_folder

    if is_hf_folder(args.model):
        return _finetune_hf(args, params)
    if args.lora:
        raise ConfigError(f"The --lora option needs a Hugging Face model folder (peft adapters). Got {args.model!r}.")
    if Path(args.out).is_dir():  # before any training
        raise ConfigError(f"The 'out' parameter must be a file path. Got {args.out!r}, which is a folder.")
    model = _load_model_args(args, args.model)
    load = lambda path: load_user_data(path, label_column=args.label_column, image_size=args.image_size) if path else None  # noqa: E731
    result = finetune(
        model, load(args.new_data), method=args.method, params=params, old_data=load(args.old_data),
        revision_data=load(args.revision_data), epochs=args.epochs, lr=args.lr, optimizer=args.optimizer,
        batch_size=args.batch_size, test_fraction=args.test_fraction, seed=args.seed, device=args.device,
        input_normalization=args.input_normalization,
    )
    return _report_finetune(args, result, save_user_model, "(state_dict) and {path}.json")


def _finetune_hf(args: argparse.Namespace, params: dict) -> int:
    from forgetlab.errors import ConfigError
    from forgetlab.user import finetune
    from forgetlab.user.transformers import LoRA, load_hf_model, load_text_data, save_hf_model, truncation_notes

    if Path(args.out).is_file():  # before any training
        raise ConfigError(f"The 'out' parameter must be a folder for a Hugging Face model. Got {args.out!r}, which is a file.")
    model = load_hf_model(args.model, blocks=_blocks_option(args), token_pooling=args.token_pooling)
    load = lambda path, labels=True: load_text_data(  # noqa: E731
        path, model, text_column=args.text_column, label_column=args.label_column, max_length=args.max_length,
        require_labels=labels) if path else None
    old_data = load(args.old_data)  # first: the old labels keep their ids, new names get the next ones
    new_data, revision_data = load(args.new_data), load(args.revision_data, False)
    lora = None
    if args.lora:
        targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()) if args.lora_targets else ()
        lora = LoRA(r=args.lora, alpha=args.lora_alpha or 2.0 * args.lora, target_modules=targets)
    result = finetune(
        model, new_data, method=args.method, params=params, old_data=old_data, revision_data=revision_data,
        epochs=args.epochs, lr=args.lr, optimizer=args.optimizer, batch_size=args.batch_size,
        test_fraction=args.test_fraction, seed=args.seed, device=args.device, lora=lora,
    )
    result.notes += truncation_notes([new_data, old_data, revision_data])
    return _report_finetune(args, result, save_hf_model, "(save_pretrained folder: config, weights, tokenizer, forgetlab.json)")


def _report_finetune(args: argparse.Namespace, result: Any, save: Any, what: str) -> int:
    """The finetune report (stdout, or stderr with --json), the saved model, the JSON document."""
    print(result.format_report(), file=_human(args))
    path = save(result.model, args.out, {"finetune": result.to_dict(), "original": str(args.model)})
    print(f"saved: {path} " + what.format(path=path), file=_human(args))
    if args.json:
        print(json.dumps(result.to_dict()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``forgetlab`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handlers = {
        "run": _command_run,
        "sweep": _command_sweep,
        "list": _command_list,
        "analyze": _command_analyze,
        "diagnose": _command_diagnose,
        "finetune": _command_finetune,
        "reproduce": _command_reproduce,
        "report": _command_report,
        "runs": _command_runs,
        "show": _command_show,
        "export": _command_export,
        "verify-data": _command_verify_data,
        "store": _command_store,
    }
    try:
        return handlers[args.command](args)
    except ForgetlabError as exc:
        print(_one_line(f"forgetlab: error: {exc}"), file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed early (`forgetlab runs | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # as the Python docs advise (SIGPIPE)
        return 0
    except KeyboardInterrupt:
        print(
            "forgetlab: interrupted. Finished tasks are checkpointed; run the same command again to resume.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
