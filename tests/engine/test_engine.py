"""The training loop: determinism, learning curves, checkpoints, resume, divergence."""

from __future__ import annotations

import dataclasses
import numpy as np
import pytest
import torch

from forgetlab.config import ModelConfig, RunConfig, StreamConfig, TrainConfig
from forgetlab.data.streams import build_stream
from forgetlab.engine import DivergedError, load_model, train_stream
from forgetlab.engine.checkpoint import checkpoint_path, read_checkpoint, save_checkpoint
from forgetlab.engine.train import lr_factor
from forgetlab.errors import DataError
from forgetlab.models import build_model
from forgetlab.resolve import resolve
from forgetlab.strategies import Strategy

CONFIG = resolve(
    RunConfig(
        stream=StreamConfig(n_tasks=3, train_per_task=150),
        model=ModelConfig(name="mlp", width=32),
        train=TrainConfig(epochs=2, batch_size=32, seed=3),
    )
)


def _fresh(config=CONFIG, data=None):
    stream = build_stream(config.stream, data, seed=config.train.seed)
    torch.manual_seed(config.train.seed)
    return build_model(config.model, input_shape=stream.input_shape, head_sizes=stream.head_sizes), stream


def test_same_seed_same_matrix(digits_data):
    first = train_stream(*_fresh(data=digits_data), CONFIG.train)
    second = train_stream(*_fresh(data=digits_data), CONFIG.train)
    np.testing.assert_array_equal(first.accuracy_matrix, second.accuracy_matrix)
    assert [c.accuracies for c in first.curves] == [c.accuracies for c in second.curves]
    other = CONFIG.__class__(stream=CONFIG.stream, model=CONFIG.model, train=CONFIG.train.__class__(
        **{**CONFIG.train.__dict__, "seed": 4}))
    third = train_stream(*_fresh(other, digits_data), other.train)
    assert not np.array_equal(first.accuracy_matrix, third.accuracy_matrix)


def test_matrix_and_curves(digits_data):
    result = train_stream(*_fresh(data=digits_data), CONFIG.train)
    R = result.accuracy_matrix
    assert R.shape == (3, 3) and ((0 <= R) & (R <= 1)).all()
    assert np.diag(R).min() > 0.6  # each task is learnt (chance is 1/3 or 1/4)
    # one curve point per epoch per task, every task evaluated at each point
    assert [(c.task_index, c.epoch) for c in result.curves] == [(t, e) for t in range(3) for e in (1.0, 2.0)]
    assert all(len(c.accuracies) == 3 for c in result.curves)
    # R's rows are the last curve point of each task
    for t in range(3):
        assert tuple(R[t]) == result.curves[2 * t + 1].accuracies
    assert result.initial_accuracy.shape == (3,)
    assert result.train_seconds > 0 and result.eval_seconds > 0


def test_steps_and_eval_every(digits_data):
    train = TrainConfig(**{**CONFIG.train.__dict__, "steps": 7, "eval_every_steps": 3})
    result = train_stream(*_fresh(data=digits_data), train)
    assert [c.step for c in result.curves] == [3, 6, 10, 13, 17, 20]


class _Interrupt(Strategy):
    """Raises KeyboardInterrupt when task ``at`` starts (a Ctrl-C between tasks)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def before_task(self, model, context):
        if context.task_index == self.at:
            raise KeyboardInterrupt


def test_resume_after_interruption_equals_straight_run(digits_data, tmp_path):
    straight = train_stream(*_fresh(data=digits_data), CONFIG.train, checkpoint_dir=tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train_stream(*_fresh(data=digits_data), CONFIG.train, checkpoint_dir=tmp_path / "b", strategy=_Interrupt(2))
    assert checkpoint_path(tmp_path / "b", 1).is_file() and not checkpoint_path(tmp_path / "b", 2).is_file()
    resumed = train_stream(*_fresh(data=digits_data), CONFIG.train, checkpoint_dir=tmp_path / "b")
    assert resumed.resumed_from == 2
    np.testing.assert_array_equal(resumed.accuracy_matrix, straight.accuracy_matrix)
    assert [c.accuracies for c in resumed.curves] == [c.accuracies for c in straight.curves]


def test_adopted_prefix_continues_like_the_source_run(digits_data, tmp_path):
    source_model, stream = _fresh(data=digits_data)
    straight = train_stream(source_model, stream, CONFIG.train, checkpoint_dir=tmp_path / "source")
    prefix = read_checkpoint(checkpoint_path(tmp_path / "source", 0))
    torch.manual_seed(123)  # a different untrained model: the prefix replaces it
    model = build_model(CONFIG.model, input_shape=stream.input_shape, head_sizes=stream.head_sizes)
    adopted = train_stream(model, stream, CONFIG.train, checkpoint_dir=tmp_path / "own", prefix_checkpoint=prefix)
    assert adopted.resumed_from == 1 and checkpoint_path(tmp_path / "own", 0).is_file()
    np.testing.assert_array_equal(adopted.accuracy_matrix, straight.accuracy_matrix)
    assert [c.accuracies for c in adopted.curves] == [c.accuracies for c in straight.curves]
    for key, value in source_model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_divergence_is_reported(digits_data):
    class NaNPenalty(Strategy):
        def penalty(self, model, context):
            return torch.tensor(float("nan"))

    with pytest.raises(DivergedError, match="diverged on task 1 .* loss is nan"):
        train_stream(*_fresh(data=digits_data), CONFIG.train, strategy=NaNPenalty())


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_a_kept_optimizer_starts_every_task_at_the_configured_rate(schedule, digits_data, monkeypatch):
    # With train.reset_optimizer=false the schedule must restart from train.lr at each
    # task, not from the previous task's decayed rate (which compounded: 1e-3 -> 1e-6 -> 1e-9).
    import forgetlab.engine.train as engine_train

    config = dataclasses.replace(CONFIG.train, lr=1e-3, optimizer="adam", lr_schedule=schedule, reset_optimizer=False, steps=20)
    seen: list[tuple[int, float]] = []
    original = engine_train._step

    def recording_step(loop, optimizer, batch, context):
        seen.append((context.task_index, optimizer.param_groups[0]["lr"]))
        return original(loop, optimizer, batch, context)

    monkeypatch.setattr(engine_train, "_step", recording_step)
    train_stream(*_fresh(data=digits_data), config)
    first = {task: lr for task, lr in reversed(seen)}  # the first step of each task
    assert sorted(first) == [0, 1, 2]
    assert all(lr == pytest.approx(1e-3) for lr in first.values()), first
    assert min(lr for _, lr in seen) < 1e-4  # the schedule did decay within each task


def test_lr_schedules():
    assert lr_factor("constant", 50, 100) == 1.0
    assert lr_factor("cosine", 0, 100) == pytest.approx(1.0)
    assert lr_factor("cosine", 50, 100) == pytest.approx(0.5)
    assert lr_factor("cosine", 100, 100) == pytest.approx(0.0)
    assert [lr_factor("step", s, 100) for s in (0, 49, 50, 74, 75)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    # onecycle: linear up over the first 20 of 100 steps (never 0 at the first step), then linear down to 0
    assert [lr_factor("onecycle", s, 100) for s in (0, 9, 19, 20, 60, 100)] == pytest.approx([0.05, 0.5, 1, 1, 0.5, 0])
    assert lr_factor("onecycle", 0, 1) == pytest.approx(1.0)  # a one-step task trains at lr


def test_checkpoint_errors_and_model_loading(digits_data, tmp_path):
    model, stream = _fresh(data=digits_data)
    spec = {"input_shape": list(stream.input_shape), "head_sizes": list(stream.head_sizes)}
    train_stream(model, stream, CONFIG.train, checkpoint_dir=tmp_path,
                 checkpoint_extra={"config": CONFIG.to_dict(), "model_spec": spec})
    payload = read_checkpoint(checkpoint_path(tmp_path, 2))
    assert {"model_state", "optimizer_state", "strategy_state", "config", "task_index", "global_step", "rng"} <= set(payload)
    loaded, config = load_model(checkpoint_path(tmp_path, 2))
    assert config == CONFIG
    x = torch.randn(5, *stream.input_shape)
    torch.testing.assert_close(loaded(x, 1), model.eval()(x, 1))

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="junk.pt' cannot be read"):
        read_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="is not a forgetlab checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
    with pytest.raises(DataError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    payload["model_state"].pop("heads.0.weight")
    save_checkpoint(tmp_path / "broken.pt", {k: v for k, v in payload.items() if k not in ("format", "version")})
    with pytest.raises(Exception, match=r"missing keys \['heads.0.weight'\]"):
        load_model(tmp_path / "broken.pt")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_matches_cpu_shape(digits_data):
    cfg = resolve(RunConfig(stream=StreamConfig(dataset="digits", augment="on"), train=TrainConfig(epochs=1)))
    result = train_stream(*_fresh(cfg, digits_data), cfg.train, device="cuda")
    assert result.accuracy_matrix.shape == (2, 2) and np.diag(result.accuracy_matrix).min() > 0.5
    for precision in ("bf16", "fp16"):
        mixed = resolve(RunConfig(stream=cfg.stream, train=TrainConfig(epochs=1, precision=precision)))
        result = train_stream(*_fresh(mixed, digits_data), mixed.train, device="cuda")
        assert np.diag(result.accuracy_matrix).min() > 0.5, precision


def test_bf16_mixed_precision_on_cpu(digits_data):
    fp32 = resolve(RunConfig(train=TrainConfig(epochs=3)))
    bf16 = resolve(RunConfig(train=TrainConfig(epochs=3, precision="bf16")))
    calls = []
    real_autocast = torch.autocast

    def spy(*args, **kwargs):
        calls.append(kwargs.get("dtype"))
        return real_autocast(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "autocast", spy)
        mixed = train_stream(*_fresh(bf16, digits_data), bf16.train)
    assert calls == [torch.bfloat16]
    plain = train_stream(*_fresh(fp32, digits_data), fp32.train)
    # Same learning, not the same bits: bfloat16 has an 8-bit mantissa.
    assert np.abs(mixed.accuracy_matrix - plain.accuracy_matrix).max() < 0.1
    assert np.diag(mixed.accuracy_matrix).min() > 0.8


class _GradientNorms(Strategy):
    """Naive fine-tuning that records the gradient norm each time a strategy may read gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.norms: list[float] = []

    def after_backward(self, model, batch, context):
        self.norms.append(float(torch.sqrt(sum(p.grad.double().square().sum() for p in model.parameters()
                                                if p.grad is not None))))


def test_fp16_scaler_path_on_cpu(digits_data, monkeypatch):
    # The fp16 branch (GradScaler: scale, unscale before the strategy, step, update) is the
    # CUDA path; torch also runs it on the CPU, so it is tested here with CPU autocast. The
    # strategy must see true gradients, not gradients times the loss scale (2**16).
    from forgetlab.engine import train as train_module

    scalers = []

    def cpu_fp16(precision, device):
        assert precision == "fp16"
        scalers.append(torch.amp.GradScaler("cpu", init_scale=2.0**16))
        return torch.autocast(device_type="cpu", dtype=torch.float16), scalers[-1]

    fp32 = resolve(RunConfig(train=TrainConfig(epochs=2)))
    fp16 = resolve(RunConfig(train=TrainConfig(epochs=2, precision="fp16")))
    plain_strategy, mixed_strategy = _GradientNorms(), _GradientNorms()
    plain = train_stream(*_fresh(fp32, digits_data), fp32.train, strategy=plain_strategy)
    monkeypatch.setattr(train_module, "mixed_precision", cpu_fp16)
    mixed = train_stream(*_fresh(fp16, digits_data), fp16.train, strategy=mixed_strategy)
    assert len(scalers) == 1 and scalers[0].get_scale() > 1.0  # the scaler was used
    assert len(mixed_strategy.norms) == len(plain_strategy.norms)
    # First step: same weights, same batch; the gradients agree to fp16 accuracy.
    assert mixed_strategy.norms[0] == pytest.approx(plain_strategy.norms[0], rel=0.05)
    assert max(mixed_strategy.norms) < 100 * max(plain_strategy.norms)
    assert np.abs(mixed.accuracy_matrix - plain.accuracy_matrix).max() < 0.1
    assert np.diag(mixed.accuracy_matrix).min() > 0.8


def test_fp16_needs_cuda(tmp_path):
    import forgetlab
    from forgetlab.errors import ConfigError

    config = RunConfig(train=TrainConfig(epochs=1, precision="fp16"))
    with pytest.raises(ConfigError, match="fp16' needs a CUDA device .* Use train.precision=bf16"):
        forgetlab.run(config, device="cpu", store=tmp_path)
    assert forgetlab.store.ResultStore(tmp_path).list_runs() == []  # nothing was started
