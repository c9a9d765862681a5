"""Every Anatomy analysis on the tiny digits profile (one shared store; seconds)."""

from __future__ import annotations

import json

import pytest
import torch

from forgetlab.cli import main
from forgetlab.errors import ConfigError, IncompatibleError
from forgetlab.experiments import ANALYSES, reproduce_anatomy, reset_blocks, task2_only_config
from forgetlab.experiments.anatomy import parse_only
from forgetlab.experiments.profiles import get_profile
from forgetlab.models import create_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    store = tmp_path_factory.mktemp("anatomy-store")
    out = reproduce_anatomy("tiny", store=store, report=False)
    return store, {name: values[0]["data"] for name, values in out.results.items()}


def _fraction(value: float) -> bool:
    return 0.0 <= value <= 1.0


def test_every_analysis_ran(tiny):
    _, data = tiny
    assert sorted(data) == sorted(ANALYSES)


def test_freeze_sweep_covers_k_zero_to_l(tiny):
    freeze = tiny[1]["freeze"]
    assert freeze["k"] == list(range(len(freeze["blocks"]) + 1))
    assert all(map(_fraction, freeze["task1_accuracy"] + freeze["task2_accuracy"]))


def test_reset_sweep_full_reset_restores_task_one(tiny):
    reset = tiny[1]["reset"]
    assert len(reset["top_down"]) == len(reset["bottom_up"]) == len(reset["blocks"])
    # resetting every block (multi-head: task 1's head untouched) = the post-task-1 model
    assert reset["top_down"][-1] == reset["bottom_up"][-1] == reset["task1_before_task2"]


def test_cka_rows_and_matrix(tiny):
    cka = tiny[1]["cka"]
    n = len(cka["blocks"])
    assert len(cka["cka_debiased"]) == len(cka["cka_biased"]) == n
    assert len(cka["matrix"]) == n and all(len(row) == n for row in cka["matrix"])
    assert cka["matrix"][0][0] == pytest.approx(cka["cka_debiased"][0])


def test_subspace_three_conditions(tiny):
    sub = tiny[1]["subspace"]
    assert list(sub["conditions"]) == ["task1 vs task2_only", "task1 vs task1_then_2", "task2_only vs task1_then_2"]
    assert all(_fraction(v) for values in sub["conditions"].values() for v in values)


def test_mitigation_grids(tiny):
    mit = tiny[1]["mitigation"]
    assert set(mit["methods"]) == {"ewc", "si", "replay"}
    for info in mit["methods"].values():
        assert len(info["points"]) == len(info["values"])
        assert len(info["points"][0]["cka_debiased"]) == len(mit["blocks"])


def test_class_pairs_per_class_forgetting(tiny):
    variants = tiny[1]["class_pairs"]["variants"]
    assert [v["label"] for v in variants] == ["similar", "dissimilar"]
    for v in variants:
        assert v["forgetting"] == pytest.approx([b - a for b, a in zip(v["before"], v["after"])])


def test_mixup_forgetting_and_both_overlaps(tiny):
    mix = tiny[1]["mixup"]
    assert mix["head"] == "shared"
    assert len(mix["forgetting"]) == len(mix["trace_overlap_fisher"]) == len(mix["trace_overlap_gram"]) == len(mix["alpha"])
    assert all(map(_fraction, mix["trace_overlap_fisher"] + mix["trace_overlap_gram"]))
    assert mix["trace_overlap_fisher"] != mix["trace_overlap_gram"]


def test_mixup_separate_heads_keep_task_one_head(tmp_path):
    from dataclasses import replace

    from forgetlab.engine.checkpoint import checkpoint_path, load_model
    from forgetlab.experiments.anatomy import AnatomyContext, mixup_analysis
    from forgetlab.store import ResultStore

    profile = replace(get_profile("tiny"), mixup_alphas=(0.5,), mixup_head="separate")
    store = ResultStore(tmp_path)
    out = mixup_analysis(AnatomyContext(profile, store, "digits", "mlp"), 0)
    assert out["head"] == "separate" and out["alpha"] == [0.5] and len(out["trace_overlap_gram"]) == 1
    folder = store.run_dir(out["run_ids"][0]) / "checkpoints"
    (after1, _), (after2, _) = (load_model(checkpoint_path(folder, i)) for i in (0, 1))
    assert len(after1.heads) == 2  # task 2 trained a head of its own
    assert all(torch.equal(a, b) for a, b in zip(after1.heads[0].state_dict().values(), after2.heads[0].state_dict().values()))
    assert not torch.equal(after1.heads[1].weight, after2.heads[1].weight)
    with pytest.raises(ConfigError, match="'mixup_head' parameter of AnatomyProfile must be one of.*Did you mean 'separate'"):
        replace(profile, mixup_head="seperate")


def test_default_mixup_head_keeps_stored_keys():
    from dataclasses import replace

    from forgetlab.experiments.anatomy import analysis_key

    tiny = get_profile("tiny")
    # the key before mixup_head (and the later profile fields) existed
    assert analysis_key("freeze", tiny, "digits", "mlp", 0) == "8fe10b87296898f9"
    # mixup version 2 (overlaps on random samples): its version-1 results are recomputed
    assert analysis_key("mixup", tiny, "digits", "mlp", 0) != "9ea73b927a881060"
    assert analysis_key("freeze", replace(tiny, mixup_head="separate"), "digits", "mlp", 0) != "8fe10b87296898f9"


def test_cli_reproduce_json_is_one_line_of_verdicts(tiny, tmp_path, capsys):
    import json

    store, data = tiny
    assert main(["reproduce", "anatomy", "--profile", "tiny", "--store", str(store), "--only", "freeze,reset",
                 "--report-dir", str(tmp_path / "r"), "--quiet", "--json"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert list(out) == ["profile", "seeds", "task1_accuracy", "convergence", "findings"]
    assert (out["profile"], out["seeds"], out["convergence"]) == ("tiny", 1, None)
    assert out["task1_accuracy"] == data["freeze"]["task1_before_task2"]
    findings = out["findings"]
    assert [(f["id"], f["name"]) for f in findings] == [
        (1, "freeze"), (2, "cka"), (3, "reset"), (4, "subspace"), (5, "mitigation"), (6, "mixup")]
    assert [f["verdict"] == "not run" for f in findings] == [False, True, False, True, True, True]
    assert {f["verdict"] for f in findings[:3:2]} <= {"reproduced", "partly", "not reproduced"}
    assert set(findings[0]["values"]) == {"k", "task2", "task1"}
    assert findings[0]["values"]["task2"] == data["freeze"]["task2_accuracy"]
    assert {"n", "top_down", "bottom_up", "after_task1", "after_task2"} <= set(findings[2]["values"])
    assert all(f["criterion"] and f["claim"] for f in findings)
    assert "finding 3 (reset):" in captured.err


def test_cli_reproduce_reads_the_store_and_report_rebuilds(tiny, tmp_path, capsys):
    store, _ = tiny
    assert main(["reproduce", "anatomy", "--profile", "tiny", "--store", str(store), "--only", "reset,cka",
                 "--report-dir", str(tmp_path / "r"), "--quiet"]) == 0
    assert "0 computed now" in capsys.readouterr().out
    assert main(["report", "--store", str(store), "--out", str(tmp_path / "all")]) == 0
    text = (tmp_path / "all" / "anatomy.html").read_text()
    assert "data:image/png;base64," in text and "Mixup-fraction" in text and "&quot;dataset&quot;: &quot;digits&quot;" in text
    assert (tmp_path / "all").glob("freeze-*.svg")


def test_cli_reproduce_bad_analysis_is_one_line(capsys):
    assert main(["reproduce", "anatomy", "--profile", "tiny", "--only", "frezee"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'freeze'" in err or "freeze" in err


def test_parse_only_and_profile_errors():
    assert parse_only("mixup,freeze") == ("freeze", "mixup")
    with pytest.raises(ConfigError, match="'profile' parameter"):
        get_profile("quik")


def test_reset_blocks_copies_and_keeps_models():
    a = create_model("vgg", input_shape=(1, 8, 8), head_sizes=(2,), width=4, depth=1)
    b = create_model("vgg", input_shape=(1, 8, 8), head_sizes=(2,), width=4, depth=1)
    b.blocks["conv1"][1].running_mean.fill_(3.0)
    kept = a.blocks["conv1"][1].running_mean.clone()
    m = reset_blocks(a, b, ["conv1"], rewind_bn_stats=False)
    assert torch.equal(m.blocks["conv1"][0].weight, b.blocks["conv1"][0].weight)
    assert torch.equal(m.blocks["conv1"][1].running_mean, kept)
    assert torch.equal(reset_blocks(a, b, ["conv1"]).blocks["conv1"][1].running_mean, b.blocks["conv1"][1].running_mean)
    with pytest.raises(IncompatibleError, match="Unknown block"):
        reset_blocks(a, b, ["nope"])


def test_task2_only_needs_a_split_stream():
    from forgetlab.config import RunConfig, apply_overrides
    from forgetlab.resolve import resolve

    with pytest.raises(IncompatibleError, match="split"):
        task2_only_config(resolve(apply_overrides(RunConfig(), ["stream.stream=one-vs-rest"])))


def test_a_diverged_mitigation_run_is_a_nan_point(tmp_path, monkeypatch):
    import math

    from forgetlab.api import RunFailure
    from forgetlab.experiments.anatomy import AnatomyContext, mitigation_analysis
    from forgetlab.store import ResultStore

    original = AnatomyContext.execute_allowing_failures

    def execute(self, configs):
        if any(c.method.name == "ewc" for c in configs):
            message = "Training diverged on task 2 at step 3: loss is nan."
            return [RunFailure(c.run_id(), c, message, kind="diverged") for c in configs]
        return original(self, configs)

    monkeypatch.setattr(AnatomyContext, "execute_allowing_failures", execute)
    ctx = AnatomyContext(get_profile("tiny"), ResultStore(tmp_path), "digits", "mlp")
    out = mitigation_analysis(ctx, 0)
    point = out["methods"]["ewc"]["points"][0]
    assert point["diverged"] and math.isnan(point["task1_accuracy"])
    assert not out["methods"]["si"]["points"][0].get("diverged")


def test_cli_reproduce_with_two_workers_matches_in_process(tiny, tmp_path, capsys):
    assert main(["reproduce", "anatomy", "--profile", "tiny", "--store", str(tmp_path), "--only", "freeze",
                 "--workers", "2", "--threads", "1", "--report-dir", str(tmp_path / "r"), "--quiet"]) == 0
    assert "1 computed now" in capsys.readouterr().out
    from forgetlab.store import ResultStore

    ((_, _, value),) = ResultStore(tmp_path).list_analyses("anatomy/freeze")
    ours, reference = value["data"], tiny[1]["freeze"]
    assert ours["task1_accuracy"] == reference["task1_accuracy"]
    assert ours["task2_accuracy"] == reference["task2_accuracy"]


def test_convergence_check_trains_task_one_alone_at_e_and_2e_epochs(tmp_path):
    import dataclasses

    import forgetlab
    from forgetlab.experiments.anatomy import base_config, first_task_config
    from forgetlab.store import ResultStore

    profile = dataclasses.replace(get_profile("tiny"), epochs=2, convergence_threshold=0.5)
    store = ResultStore(tmp_path)
    out = reproduce_anatomy(profile, store=store, only=["reset"], report=False, check_convergence=True)
    check = out.convergence
    assert (check["epochs"], check["epochs_2x"]) == (2, 4)
    # the numbers are those of two plain one-task runs on task 1's classes (digits 0-4)
    base = base_config(profile, 0)
    for epochs, key in ((2, "accuracy"), (4, "accuracy_2x")):
        config = first_task_config(base, epochs)
        assert config.stream.class_order == (0, 1, 2, 3, 4) and config.stream.n_tasks == 1
        assert check[key] == forgetlab.run(config, store=store).metrics["acc"]
    assert check["passed"] == (check["accuracy_2x"] - check["accuracy"] < 0.5)
    strict = dataclasses.replace(profile, convergence_threshold=-1.0)  # no gain can be below -1
    assert reproduce_anatomy(strict, store=store, only=["reset"], report=False, check_convergence=True).convergence["passed"] is False
    # stored: a second call trains nothing
    again = reproduce_anatomy(profile, store=store, only=["reset"], report=False, check_convergence=True)
    assert again.computed == [] and again.convergence == check
    with pytest.raises(IncompatibleError, match="2-task 'split' streams"):
        first_task_config(dataclasses.replace(base, stream=dataclasses.replace(base.stream, n_tasks=3)), 2)


def test_mixup_overlap_of_task_one_with_itself_is_near_one(tiny):
    # alpha = 0: task 2 is task 1's distribution again, so both trace overlaps of random
    # samples of the two are ~1 (version 1 compared task 1 with task 2's first examples,
    # one class only: Gram overlap 0.964 here, 0.51 on CIFAR-10). At alpha = 1 the tasks differ.
    mixup = tiny[1]["mixup"]
    at = dict(zip(mixup["alpha"], zip(mixup["trace_overlap_gram"], mixup["trace_overlap_fisher"])))
    gram0, fisher0 = at[0.0]
    assert gram0 > 0.99 and fisher0 > 0.9995
    assert at[1.0][0] < gram0


def test_analysis_runs_are_the_runs_each_analysis_uses(tiny):
    # The up-front sweep trains analysis_runs(); an analysis that used another run would
    # train it afterwards, alone. Each analysis records the runs it read.
    from forgetlab.experiments.anatomy import AnatomyContext, analysis_runs
    from forgetlab.store import ResultStore

    store, data = tiny
    ctx = AnatomyContext(get_profile("tiny"), ResultStore(store), "digits", "mlp")
    for name in ANALYSES:
        planned = {config.run_id() for config in analysis_runs(ctx, name, 0)}
        assert planned == set(data[name]["run_ids"]), name


def test_a_reproduction_trains_every_run_in_one_sweep_first(tmp_path, monkeypatch):
    import forgetlab.experiments.anatomy as anatomy
    from forgetlab.api import stored_result
    from forgetlab.resolve import resolve
    from forgetlab.store import ResultStore

    store = ResultStore(tmp_path)
    calls = []
    original = anatomy.execute

    def spy(configs, *args, **kwargs):
        calls.append(sum(stored_result(store, resolve(c)) is None for c in configs))
        return original(configs, *args, **kwargs)

    monkeypatch.setattr(anatomy, "execute", spy)
    out = reproduce_anatomy("tiny", store=store, seeds=2, only=["freeze", "mitigation", "mixup"], report=False,
                            check_convergence=True)
    assert sorted(out.computed) == sorted([(n, s) for n in ("freeze", "mitigation", "mixup") for s in (0, 1)] + [("convergence", 0)])
    # the first call trains everything (both seeds, every analysis): per seed the naive run,
    # freeze k = 0..L, one mitigation run per grid point (3 in tiny), one mixup run per alpha
    # (2 in tiny); then the 2 convergence runs
    n_blocks = len(out.results["freeze"][0]["data"]["blocks"])
    assert calls[0] == 2 * (1 + (n_blocks + 1) + 3 + 2) + 2
    assert calls[1:] and all(todo == 0 for todo in calls[1:])  # the analyses only read runs back


def _stored_values(store_root, section: str, key: str) -> set:
    """``config[section][key]`` over every run stored under ``store_root``."""
    from forgetlab.store import ResultStore

    store = ResultStore(store_root)
    return {store.get(run_id).config[section][key] for run_id, _ in store.list_runs()}


def test_cli_reproduce_batch_norm_switches_every_run(tiny, tmp_path, capsys):
    store, _ = tiny
    assert _stored_values(store, "model", "batch_norm") == {False}
    on = tmp_path / "bn"
    assert main(["reproduce", "anatomy", "--profile", "tiny", "--only", "reset", "--batch-norm", "on",
                 "--store", str(on), "--report-dir", str(tmp_path / "r"), "--quiet"]) == 0
    assert _stored_values(on, "model", "batch_norm") == {True}
    assert _stored_values(on, "model", "name") == {"mlp"}
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "anatomy", "--profile", "tiny", "--batch-norm", "of"])
    assert exit_info.value.code == 2
    assert "--batch-norm" in capsys.readouterr().err


def test_cli_reproduce_epochs_and_batch_size_set_every_run_and_the_convergence_check(tmp_path, capsys):
    store = tmp_path / "e"
    assert main(["reproduce", "anatomy", "--profile", "tiny", "--only", "reset", "--epochs", "2", "--check-convergence",
                 "--store", str(store), "--report-dir", str(tmp_path / "r"), "--quiet", "--json"]) == 0
    # the plain two-task run at 2 epochs; task 1 alone at 2 and at 2 x 2 (the check)
    assert _stored_values(store, "train", "epochs") == {2, 4}
    assert _stored_values(store, "train", "batch_size") == {get_profile("tiny").batch_size}
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (line["convergence"]["epochs"], line["convergence"]["epochs_2x"]) == (2, 4)
    sized = tmp_path / "b"
    assert main(["reproduce", "anatomy", "--profile", "tiny", "--only", "reset", "--batch-size", "16",
                 "--store", str(sized), "--report-dir", str(tmp_path / "r"), "--quiet"]) == 0
    assert _stored_values(sized, "train", "batch_size") == {16} != {get_profile("tiny").batch_size}
    assert main(["reproduce", "anatomy", "--profile", "tiny", "--only", "reset", "--epochs", "0",
                 "--store", str(tmp_path / "bad"), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "'epochs'" in err and ">= 1" in err and "Traceback" not in err


def test_a_bf16_profile_trains_in_fp32_on_a_cpu_without_native_bf16(tmp_path, monkeypatch):
    from dataclasses import replace

    import forgetlab.experiments.anatomy as anatomy
    from forgetlab.engine.device import native_bf16

    assert native_bf16(torch.device("cuda")) is True
    profile = replace(get_profile("tiny"), precision="bf16")
    monkeypatch.setattr(anatomy, "native_bf16", lambda device: False)
    lines = []
    reproduce_anatomy(profile, store=tmp_path / "a", only="reset", device="cpu", report=False, log=lines.append)
    assert _stored_values(tmp_path / "a", "train", "precision") == {"fp32"}
    assert any("no native bf16" in line for line in lines)
    reproduce_anatomy(profile, store=tmp_path / "b", only="reset", device="cpu", precision="bf16", report=False)
    assert _stored_values(tmp_path / "b", "train", "precision") == {"bf16"}
    monkeypatch.setattr(anatomy, "native_bf16", lambda device: True)
    reproduce_anatomy(profile, store=tmp_path / "c", only="reset", device="cpu", report=False)
    assert _stored_values(tmp_path / "c", "train", "precision") == {"bf16"}


def test_the_training_sweep_logs_slow_runs_one_line_each(tmp_path, monkeypatch):
    import re

    import forgetlab.experiments.anatomy as anatomy

    lines = []
    reproduce_anatomy("tiny", store=tmp_path / "a", only="freeze", device="cpu", report=False, log=lines.append)
    progress = [line for line in lines if "runs done" in line]
    assert len(progress) == 1  # tiny runs are fast: only the last one is logged
    n_runs = int(re.search(r"/ (\d+) runs done", progress[0]).group(1))
    assert n_runs >= 3
    monkeypatch.setattr(anatomy, "PROGRESS_LINE_SECONDS", 0.0)  # every run counts as slow
    lines = []
    reproduce_anatomy("tiny", store=tmp_path / "b", only="freeze", device="cpu", report=False, log=lines.append)
    progress = [line for line in lines if "runs done" in line]
    assert [int(re.match(r"\s*(\d+) /", line).group(1)) for line in progress] == list(range(1, n_runs + 1))
    assert all(re.search(r"run [0-9a-f]{16}: ACC \d+\.\d%\)$", line) for line in progress)
