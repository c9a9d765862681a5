"""Fuzzing the CLI and the config loader: every bad input is a one-line error."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import forgetlab
from forgetlab.engine.device import resolve_device
from forgetlab.cli import main
from forgetlab.config import RunConfig
from forgetlab.resolve import resolve

KEYS = [
    f"{section.name}.{field.name}"
    for section in dataclasses.fields(RunConfig) if section.name != "inputs"  # not a section
    for field in dataclasses.fields(getattr(RunConfig(), section.name))
]
VALUES = st.one_of(
    st.sampled_from(["", "auto", "-1", "0", "1", "2", "1e9", "nan", "inf", "true", "x", "1,2", "1,1", "mlp", "multi", "a+b"]),
    st.text(max_size=8),
    st.integers(-5, 5).map(str),
    st.floats(allow_nan=True).map(str),
)
SET_ITEMS = st.tuples(st.sampled_from(KEYS + ["train.lrr", "lr", "stream", "model.x.y"]), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}")
OPTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("--set"), SET_ITEMS),
        st.tuples(st.sampled_from(["--dataset", "--stream", "--model", "--epochs", "--seed", "--device"]), VALUES),
        st.tuples(st.just("--set"), st.text(max_size=10)),
        st.tuples(st.sampled_from(["--bogus", "--json", "--quiet", "--rerun"]),),
    ),
    max_size=4,
)


def _assert_ok_or_one_line_error(argv, capsys) -> None:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code in (0, 2), (argv, err)
    if code == 2:
        assert len(err.splitlines()) == 1 and err.startswith("forgetlab"), (argv, err)
        assert "Traceback" not in err


def _validate_only(config, *, device, **_options):
    """Stand-in for forgetlab.run: everything the CLI checks before training starts."""
    resolve(config)
    resolve_device(device)
    raise SystemExit(0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(OPTIONS)
def test_run_options_fail_cleanly(monkeypatch, capsys, options):
    monkeypatch.setattr(forgetlab, "run", _validate_only)
    argv = ["run"] + [part for option in options for part in option]
    _assert_ok_or_one_line_error(argv, capsys)


SWEEP_OPTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("--grid"), SET_ITEMS),
        st.tuples(st.just("--grid"), st.text(max_size=10)),
        st.tuples(st.sampled_from(["--workers", "--threads", "--executor", "--address"]), VALUES),
        st.tuples(st.just("--set"), SET_ITEMS),
    ),
    max_size=4,
)


def _validate_sweep(configs, store, *, executor, device, **_options):
    """Stand-in for execute: everything the sweep command checks before training starts."""
    for config in configs:
        resolve(config)
    resolve_device(device)
    raise SystemExit(0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(SWEEP_OPTIONS)
def test_sweep_options_fail_cleanly(monkeypatch, capsys, tmp_path, options):
    import forgetlab.experiments

    monkeypatch.setattr(forgetlab.experiments, "execute", _validate_sweep)
    argv = ["sweep", "--store", str(tmp_path)] + [part for option in options for part in option]
    _assert_ok_or_one_line_error(argv, capsys)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_config_files_fail_cleanly(tmp_path, capsys, text):
    path = tmp_path / "fuzz.toml"
    path.write_text(text)
    try:
        code = main(["run", "--config", str(path), "--store", str(tmp_path / "store"), "--set", "train.epochs=0"])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip()
    # train.epochs=0 is always invalid, so nothing trains: every outcome is a one-line error
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (text, err)


@pytest.mark.parametrize("argv", [["rn"], ["run", "--epochs", "x"], ["run", "--bogus"], ["list", "extra"]])
def test_argparse_errors_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--help" in err


REPRODUCE_OPTIONS = st.lists(
    st.tuples(
        st.sampled_from(["--profile", "--only", "--model", "--dataset", "--seeds", "--device", "--workers",
                         "--executor", "--threads", "--address"]),
        st.one_of(VALUES, st.sampled_from(["quick", "tiny", "paper", "freeze,cka", "vgg", "cifar10-shift", "ray"])),
    ),
    max_size=4,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(REPRODUCE_OPTIONS)
def test_reproduce_options_fail_cleanly(monkeypatch, capsys, tmp_path, options):
    from forgetlab.experiments import anatomy

    def stop(*_args, **_kwargs):
        raise SystemExit(0)  # everything before the first analysis was validated

    monkeypatch.setattr(anatomy, "_run_analyses", stop)
    argv = ["reproduce", "anatomy", "--store", str(tmp_path), "--quiet"] + [part for option in options for part in option]
    _assert_ok_or_one_line_error(argv, capsys)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    from forgetlab.config import apply_overrides

    result = forgetlab.run(apply_overrides(RunConfig(), ["train.epochs=1", "stream.train_per_task=100"]),
                           store=tmp_path_factory.mktemp("fuzz-store"))
    return [str(result.run_dir / "checkpoints" / f"task-{i}.pt") for i in (1, 2)]


ANALYZE_OPTIONS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["--dataset", "--task", "--blocks", "--max-samples", "--k", "--device"]),
                  st.one_of(VALUES, st.sampled_from(["block1,block2", "head", "fashion-mnist", "cifar10"]))),
        st.tuples(st.just("--pool")),
    ),
    max_size=3,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["cka", "subspace"]), ANALYZE_OPTIONS)
def test_analyze_options_fail_cleanly(capsys, tmp_path, two_checkpoints, measure, options):
    argv = ["analyze", measure, *two_checkpoints, "--out", str(tmp_path / "figure")]
    _assert_ok_or_one_line_error(argv + [part for option in options for part in option], capsys)


FAST_RUN = ["--set", "train.steps=1", "--set", "stream.train_per_task=40", "--set", "model.width=8", "--quiet"]


@pytest.fixture
def fuzz_files(tmp_path, monkeypatch):
    """The files the issue-18 fuzz cases need, in the working directory."""
    import numpy as np
    import torch

    monkeypatch.chdir(tmp_path)
    (tmp_path / "binary.toml").write_bytes(bytes(range(256)))
    (tmp_path / "epochs.toml").write_text("[train]\nepochs = 1e12\n")
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 64), np.float32), y=np.arange(10) % 2)
    torch.save(torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).state_dict(), tmp_path / "m.pt")
    (tmp_path / "fuzznet.py").write_text(
        "from torch import nn\nclass Net(nn.Sequential):\n    def __init__(self, width=8):\n"
        "        super().__init__(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 2))\n"
    )
    (tmp_path / "somedir").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


MODEL = ["--model-class", "fuzznet:Net"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--config", "binary.toml"], "is not a UTF-8 TOML text file"),
        (["run", "--set", "train.lr=1e308", *FAST_RUN], "'train.lr' parameter must be in"),
        (["run", "--set", "train.weight_decay=1e308", *FAST_RUN], "'train.weight_decay' parameter must be in"),
        (["run", "--seed", "18446744073709551616", *FAST_RUN], "'train.seed' parameter must be in"),
        (["run", "--set", "model.width=10000000000", *FAST_RUN[:-3]], "'model.width' parameter must be in"),
        (["run", "--set", "model.width=1000000", "--set", "train.steps=1"], "parameters: about .* GiB .* Lower model.width"),
        (["run", "--set", "model.depth=1000000", *FAST_RUN], "'model.depth' parameter must be in"),
        (["run", "--config", "epochs.toml", *FAST_RUN], "'train.epochs' parameter must be an integer"),
        (["diagnose", "m.pt", "m.pt", "--data", "d.npz", *MODEL, "--model-args", '{"width": -1}'], "cannot build Net"),
        (["finetune", "m.pt", *MODEL, "--new-data", "d.npz", "--epochs", "1", "--out", "somedir"], "'out' parameter must be a file"),
        (["finetune", "m.pt", *MODEL, "--new-data", "d.npz", "--device", "cuda", "--out", "o.pt"], "no CUDA device"),
    ],
    ids=["binary-config", "lr", "weight-decay", "seed", "width", "width-memory", "depth", "toml-epochs", "model-args",
         "out-dir", "cuda"],
)
def test_issue_18_fuzz_cases_are_one_line_errors(argv, message, fuzz_files, capsys, one_torch_thread):
    import torch

    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("has a GPU")
    store = [] if argv[0] != "run" else ["--store", str(fuzz_files / "store")]
    assert main([*argv, *store]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("forgetlab: error:"), err
    assert __import__("re").search(message, err), err
    assert not (fuzz_files / "somedir.tmp").exists()


def test_analyze_negative_max_samples_and_mps_for_a_stored_result(fuzz_files, capsys, one_torch_thread):
    assert main(["run", "--store", "store", *FAST_RUN]) == 0
    capsys.readouterr()
    assert main(["run", "--store", "store", "--device", "mps", *FAST_RUN]) == 2
    assert "'device' parameter must be one of" in capsys.readouterr().err
    checkpoint = str(next((fuzz_files / "store").glob("runs/*/checkpoints/task-1.pt")))
    assert main(["analyze", "cka", checkpoint, checkpoint, "--max-samples", "-5", "--out", "fig"]) == 2
    assert "'max_samples' parameter must be >= 0" in capsys.readouterr().err


def test_a_model_that_cannot_fit_is_refused_before_the_run_is_registered(tmp_path, capsys):
    """Like any other config error, nothing is stored: not the run, not a failed row (issue 18)."""
    from forgetlab.config import apply_overrides
    from forgetlab.errors import ConfigError
    from forgetlab.experiments import ExecutorConfig, execute
    from forgetlab.store import ResultStore

    assert main(["run", "--set", "model.width=1000000", "--set", "train.steps=1", "--store", str(tmp_path / "a")]) == 2
    assert "Lower model.width" in capsys.readouterr().err
    assert ResultStore(tmp_path / "a").list_runs() == []
    huge = apply_overrides(RunConfig(), ["model.width=1000000", "train.steps=1"])
    small = apply_overrides(RunConfig(), ["train.steps=1", "stream.train_per_task=40", "model.width=8"])
    for executor in (ExecutorConfig(), ExecutorConfig(workers=2, threads=1)):
        with pytest.raises(ConfigError, match=r"parameters: about .* GiB .* Lower model.width"):
            execute([small, huge], ResultStore(tmp_path / executor.resolved_name), executor=executor)
        assert ResultStore(tmp_path / executor.resolved_name).list_runs() == []
