"""CLI smoke tests: in-process and through the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from forgetlab.cli import format_matrix, main

FAST = ["--set", "stream.train_per_task=200", "--set", "train.epochs=2", "--quiet"]


def test_run_json_is_the_whole_stdout(tmp_path, capsys):
    assert main(["run", "--store", str(tmp_path), "--json", *FAST]) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)  # stdout is one JSON document and nothing else
    assert {"run_id", "status", "accuracy_matrix", "acc", "bwt", "forgetting", "run_dir"} <= set(payload)
    matrix = payload["accuracy_matrix"]
    assert len(matrix) == 2 and all(0 <= v <= 1 for row in matrix for v in row)
    assert "Accuracy matrix" in captured.err and "forgetting" in captured.err  # the human text, on stderr
    # asking again reads the store
    assert main(["run", "--store", str(tmp_path), "--json", *FAST]) == 0
    again = capsys.readouterr()
    assert "read from the store" in again.err
    assert json.loads(again.out) == payload


def test_config_file_and_shortcuts(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('[stream]\nn_tasks = 5\ntrain_per_task = 100\n[train]\nepochs = 1\n')
    assert main(["run", "--config", str(config), "--seed", "2", "--store", str(tmp_path), "--json", "--quiet"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["accuracy_matrix"]) == 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--dataset", "cifar"], "Unknown dataset 'cifar'"),
        (["run", "--set", "train.lr=-1"], "'train.lr' parameter must be in (0, 1e30]"),
        (["run", "--model", "resnt"], "Did you mean 'resnet'"),
        (["run", "--device", "tpu"], "'device' parameter must be one of auto, cpu, cuda"),
        (["run", "--config", "/nonexistent.toml"], "Cannot read config file"),
    ],
)
def test_user_errors_are_one_line(argv, message, capsys, tmp_path):
    assert main([*argv, "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: --device cuda would run")
@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--device", "cuda"],
        ["sweep", "--grid", "train.seed=0,1", "--device", "cuda"],
        ["analyze", "cka", "a.pt", "b.pt", "--device", "cuda"],
        ["reproduce", "anatomy", "--profile", "quick", "--device", "cuda"],
    ],
)
def test_cuda_without_a_gpu_is_one_line(argv, capsys, tmp_path):
    code = main([*argv, "--store", str(tmp_path)] if argv[0] != "analyze" else argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "'device' parameter is 'cuda' but no CUDA device is available" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("control", ["\n", "\r", "\x1e", "\x0b", "\u2028", "\x85"])
def test_control_characters_in_user_input_keep_errors_on_one_line(control, capsys, tmp_path):
    # Errors quote what the user typed; every str.splitlines boundary in it is escaped,
    # in our own errors (an unknown --set key) and in argparse's (an unknown option).
    for argv in (["run", "--set", f"a{control}b=1"], ["run", f"--bo{control}gus"]):
        try:
            code = main([*argv, "--store", str(tmp_path)])
        except SystemExit as exit_:
            code = exit_.code
        err = capsys.readouterr().err.strip()
        assert code == 2
        assert len(err.splitlines()) == 1, err
        assert ascii(control)[1:-1] in err


def test_list_names_everything(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "mnist", "cifar10", "split", "one-vs-rest", "mlp", "vgg", "resnet", "densenet"):
        assert name in out


def test_format_matrix():
    text = format_matrix([[0.5, 0.25], [0.125, 1.0]])
    assert "50.0%" in text and "12.5%" in text and "100.0%" in text


def test_console_script(tmp_path):
    exe = shutil.which("forgetlab")
    command = [exe] if exe else [sys.executable, "-m", "forgetlab"]
    done = subprocess.run(
        [*command, "run", "--store", str(tmp_path), "--json", *FAST],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "run_id" in json.loads(done.stdout)  # stdout is the JSON alone
    assert "\r" not in done.stderr  # no progress bars when not a terminal
