"""Compare two forgetlab checkpoints block by block (what ``forgetlab analyze`` runs).

The inputs are one task's test split of checkpoint A's own stream (task 1 by default),
optionally from another dataset of the same shape, normalised as in training: with the
mean and std checkpoint A recorded (its training data's), whichever dataset they come from;
:func:`checkpoint_comparison` says so (``Comparison.normalization``).

Example:
    >>> import forgetlab, tempfile
    >>> config = forgetlab.RunConfig(train=forgetlab.TrainConfig(epochs=1))
    >>> run = forgetlab.run(config, store=tempfile.mkdtemp())
    >>> folder = run.run_dir / "checkpoints"
    >>> rows = compare_checkpoints(folder / "task-1.pt", folder / "task-2.pt", measure="cka")
    >>> sorted({row.block for row in rows})
    ['fc1', 'fc2']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from forgetlab.analysis.tables import BlockSimilarity, cka_table, subspace_table
from forgetlab.api import build_stream_for
from forgetlab.config import RunConfig
from forgetlab.data.augment import BatchTransform
from forgetlab.engine.checkpoint import checkpoint_model, load_model, read_checkpoint
from forgetlab.engine.device import resolve_device
from forgetlab.errors import ConfigError, DataError, IncompatibleError

MEASURES = ("cka", "subspace")


@dataclass(frozen=True)
class Comparison:
    """What :func:`checkpoint_comparison` returns: the per-block ``rows`` and the input
    normalisation applied (checkpoint A's recorded ``mean`` and ``std``)."""

    rows: list[BlockSimilarity]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def normalization(self) -> str:
        """One line: the normalisation applied to the inputs."""
        numbers = lambda values: "[" + ", ".join(f"{v:.4g}" for v in values) + "]"  # noqa: E731
        return (f"(x / 255 - mean) / std with checkpoint A's recorded mean {numbers(self.mean)}, std {numbers(self.std)} "
                "(x = the dataset's uint8 pixels)")


def compare_checkpoints(
    path_a: str | Path,
    path_b: str | Path,
    *,
    measure: str = "cka",
    dataset: str | None = None,
    task: int = 1,
    blocks: Sequence[str] | None = None,
    k: int = 10,
    pool: bool = False,
    data_dir: str | Path | None = None,
    download: bool = False,
    max_samples: int = 0,
    batch_size: int = 256,
    device: str = "cpu",
) -> list[BlockSimilarity]:
    """Per-block similarity of checkpoint A vs checkpoint B: the rows of
    :func:`checkpoint_comparison` (see there for the arguments)."""
    return checkpoint_comparison(
        path_a, path_b, measure=measure, dataset=dataset, task=task, blocks=blocks, k=k, pool=pool, data_dir=data_dir,
        download=download, max_samples=max_samples, batch_size=batch_size, device=device,
    ).rows


def checkpoint_comparison(
    path_a: str | Path,
    path_b: str | Path,
    *,
    measure: str = "cka",
    dataset: str | None = None,
    task: int = 1,
    blocks: Sequence[str] | None = None,
    k: int = 10,
    pool: bool = False,
    data_dir: str | Path | None = None,
    download: bool = False,
    max_samples: int = 0,
    batch_size: int = 256,
    device: str = "cpu",
) -> Comparison:
    """Per-block similarity of checkpoint A vs checkpoint B on task ``task``'s test inputs,
    with the normalisation applied to them.

    Args:
        measure: ``cka`` (debiased and biased linear CKA) or ``subspace`` (top-``k``).
        dataset: read the inputs from this dataset instead of checkpoint A's.
        task: 1-based task of checkpoint A's stream whose test inputs are used.
        blocks: block names (default: every block the two models share).
        pool: average-pool conv maps instead of flattening them.
        max_samples: use at most this many inputs (0 = all).
        device: where the models run and the similarities are computed: ``cpu``,
            ``cuda`` or ``auto``.
    """
    target = resolve_device(device)
    if measure not in MEASURES:
        raise ConfigError(f"The 'measure' parameter must be one of {', '.join(MEASURES)}. Got {measure!r} instead.")
    if max_samples < 0:
        raise ConfigError(f"The 'max_samples' parameter must be >= 0 (0 = all). Got {max_samples} instead.")
    payload_a = read_checkpoint(path_a)
    model_a, config_a = checkpoint_model(payload_a, path_a), RunConfig.from_dict(payload_a["config"])  # resolved
    model_b, _ = load_model(path_b)
    model_a, model_b = model_a.to(target), model_b.to(target)
    if model_a.input_shape != model_b.input_shape:
        raise IncompatibleError(
            f"The checkpoints take different inputs: {model_a.input_shape} vs {model_b.input_shape}."
        )
    if dataset is not None:
        config_a = replace(config_a, stream=replace(config_a.stream, dataset=dataset))
    stream = build_stream_for(config_a, data_dir=data_dir, download=download)
    if not 1 <= task <= stream.n_tasks:
        raise ConfigError(f"The 'task' parameter must be in [1, {stream.n_tasks}]. Got {task} instead.")
    chosen = stream.tasks[task - 1]
    inputs = chosen.test_x[:max_samples] if max_samples > 0 else chosen.test_x
    if tuple(inputs.shape[1:]) != model_a.input_shape:
        raise IncompatibleError(
            f"Inputs of shape {tuple(inputs.shape[1:])} do not fit models that take {model_a.input_shape}."
        )
    spec = payload_a["model_spec"]
    if not spec.get("mean") or not spec.get("std"):
        raise DataError(f"Checkpoint {str(path_a)!r} records no input normalisation (model_spec mean and std).")
    mean, std = tuple(float(v) for v in spec["mean"]), tuple(float(v) for v in spec["std"])
    transform = BatchTransform(mean, std, augment=False, device=target)

    def prepare(x):
        return transform(x, train=False)

    head = chosen.head_index if chosen.head_index < model_a.n_heads else 0
    label_a, label_b = Path(path_a).stem, Path(path_b).stem
    if label_a == label_b:
        label_a, label_b = str(path_a), str(path_b)
    if measure == "cka":
        rows = cka_table(
            model_a, model_b, inputs, blocks, condition=f"{label_a} vs {label_b}", pool=pool,
            batch_size=batch_size, prepare=prepare, head_index=head,
        )
    else:
        rows = subspace_table(
            {label_a: model_a, label_b: model_b}, inputs, k, blocks, pool=pool,
            batch_size=batch_size, prepare=prepare, head_index=head,
        )
    return Comparison(rows, mean, std)


def format_rows(rows: Sequence[BlockSimilarity]) -> str:
    """A per-block text table: one column per measure."""
    measures = list(dict.fromkeys(row.measure for row in rows))
    blocks = list(dict.fromkeys(row.block for row in rows))
    values = {(row.block, row.measure): row.value for row in rows}
    width = max(len(b) for b in blocks) + 2
    lines = [f"{'block':<{width}}" + "".join(f"{m:>22}" for m in measures)]
    for block in blocks:
        lines.append(f"{block:<{width}}" + "".join(f"{values[(block, m)]:>22.4f}" for m in measures))
    return "\n".join(lines)
