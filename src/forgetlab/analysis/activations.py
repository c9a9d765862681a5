"""Activations of a model's named blocks, batch by batch (SPEC §3).

Forward hooks on named submodules: for a :class:`~forgetlab.models.BlockModel` the block
names (``model.block_names``); for any other ``nn.Module`` (a plain ``nn.Sequential``
too) dotted module paths as in ``model.named_modules()`` (default: its direct children).
During extraction the model runs in eval mode under ``torch.no_grad()``; afterwards
every submodule's train/eval flag is restored and every hook removed, also on error.
Nothing stays attached between two yielded batches, so a caller may stop early.

Inputs are a tensor ``(n_samples, ...)`` (uint8 or float) sliced into batches, or any
iterable of batches (tensors, or tuples whose first element is the input tensor, such
as a ``DataLoader``). ``prepare`` maps a batch (already on the model's device) to the
model's input, e.g. normalisation; without it uint8 batches are scaled to ``[0, 1]``.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Union

import torch
from torch import nn

from forgetlab.analysis._checks import check_positive_int
from forgetlab.errors import ConfigError, IncompatibleError, did_you_mean
from forgetlab.models.base import BlockModel

__all__ = ["batch_activations", "collect_activations", "eval_mode", "find_module", "iter_activations", "resolve_blocks"]

Inputs = Union[torch.Tensor, Iterable[Any]]
Prepare = Callable[[torch.Tensor], torch.Tensor]


def resolve_blocks(model: nn.Module, blocks: Sequence[str] | str | None = None) -> tuple[str, ...]:
    """The probe-point names for ``model``: ``blocks`` validated, or the default ones.

    Default: ``model.block_names`` for a BlockModel, else the names of its direct children.

    Example:
        >>> from torch import nn
        >>> resolve_blocks(nn.Sequential(nn.Linear(4, 3), nn.ReLU()))
        ('0', '1')
    """
    if blocks is None:
        if isinstance(model, BlockModel):
            return model.block_names
        names = tuple(name for name, _ in model.named_children())
        if not names:
            raise ConfigError(
                f"The 'blocks' parameter is required for a {type(model).__name__} without child "
                "modules: name the submodules to probe (dotted paths)."
            )
        return names
    if isinstance(blocks, str):
        blocks = (blocks,)
    names = tuple(blocks)
    if not names:
        raise ConfigError("The 'blocks' parameter must name at least one block. Got an empty list.")
    if len(set(names)) != len(names):
        raise ConfigError(f"The 'blocks' parameter must not repeat a name. Got {list(names)}.")
    for name in names:
        find_module(model, name)
    return names


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule ``name`` of ``model``: a block name of a BlockModel, else a dotted path.

    Example:
        >>> from torch import nn
        >>> find_module(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), "1")
        ReLU()
    """
    if isinstance(model, BlockModel) and name in model.blocks:
        return model.blocks[name]
    try:
        return model.get_submodule(name)
    except AttributeError:
        choices = list(model.block_names) if isinstance(model, BlockModel) else []
        choices += [n for n, _ in model.named_modules() if n]
        raise ConfigError(
            f"Unknown block {name!r} for {type(model).__name__}.{did_you_mean(name, choices)} "
            f"Valid blocks: {', '.join(choices[:30])}{' ...' if len(choices) > 30 else ''}."
        ) from None


def model_device(model: nn.Module, device: torch.device | str | None = None) -> torch.device:
    """``device`` if given, else the device of the model's first parameter or buffer (CPU if none)."""
    if device is not None:
        return torch.device(device)
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if first is None else first.device


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode; restore every submodule's own flag afterwards (also on error).

    The one "eval mode, then restore" of the package (a strategy may keep some submodules,
    e.g. frozen BatchNorm layers, in eval mode while the rest trains).

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
        >>> net[1].eval() and None
        >>> with eval_mode(net):
        ...     net.training, net[1].training
        (False, False)
        >>> net.training, net[1].training
        (True, False)
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, training in modes:
            module.training = training


def iter_batches(
    inputs: Inputs,
    *,
    batch_size: int,
    device: torch.device,
    prepare: Prepare | None,
    with_targets: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(prepared inputs, targets or None)`` per batch, on ``device``."""
    batch_size = check_positive_int(batch_size, "batch_size")

    def finish(x: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not isinstance(x, torch.Tensor):
            raise ConfigError(
                f"Each batch of 'inputs' must be a tensor or a tuple starting with one. Got {type(x).__name__}."
            )
        x = x.to(device)
        if prepare is not None:
            x = prepare(x)
        elif x.dtype == torch.uint8:
            x = x.to(torch.float32) / 255.0
        elif not x.is_floating_point():
            x = x.to(torch.float32)
        if target is not None:
            target = torch.as_tensor(target).to(device)
        return x, target

    if isinstance(inputs, torch.Tensor):
        if inputs.dim() < 1 or inputs.shape[0] == 0:
            raise ConfigError(f"The 'inputs' tensor must hold at least one sample. Got shape {tuple(inputs.shape)}.")
        for start in range(0, inputs.shape[0], batch_size):
            yield finish(inputs[start : start + batch_size], None)
        return
    for batch in inputs:
        if isinstance(batch, (tuple, list)):
            yield finish(batch[0], batch[1] if with_targets and len(batch) > 1 else None)
        else:
            yield finish(batch, None)


def _to_matrix(activation: Any, name: str, pool: bool) -> torch.Tensor:
    if not isinstance(activation, torch.Tensor):
        raise IncompatibleError(
            f"Block {name!r} returned a {type(activation).__name__}, not a tensor; probe a submodule "
            "that returns one tensor."
        )
    if activation.dim() == 1:
        return activation[:, None]
    if activation.dim() > 2:
        return activation.mean(dim=tuple(range(2, activation.dim()))) if pool else activation.flatten(1)
    return activation


def _forward(model: nn.Module, x: torch.Tensor, head_index: int) -> Any:
    if isinstance(model, BlockModel):
        return model(x, head_index)
    return model(x)


def iter_activations(
    model: nn.Module,
    inputs: Inputs,
    blocks: Sequence[str] | str | None = None,
    *,
    batch_size: int = 256,
    pool: bool = False,
    prepare: Prepare | None = None,
    device: torch.device | str | None = None,
    head_index: int = 0,
) -> Iterator[OrderedDict[str, torch.Tensor]]:
    """Yield, per batch, ``{block: (batch, n_features)}`` activations of ``model`` on ``inputs``.

    Conv maps ``(batch, C, H, W)`` are flattened to ``C·H·W`` features (default) or
    average-pooled to ``C`` (``pool=True``). The model is not moved: batches go to
    ``device`` (default: the model's). Hooks live only during each batch's forward pass
    and the model's train/eval flags are restored before each yield. Stream the batches
    into an accumulator (e.g. :class:`~forgetlab.analysis.LinearCKAAccumulator`) to
    handle any number of samples in O(features²) memory.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
        >>> batches = list(iter_activations(net, torch.rand(10, 1, 8, 8), ["0", "3"], batch_size=4, pool=True))
        >>> [tuple(a.shape) for a in batches[0].values()], len(batches)
        ([(4, 4), (4, 2)], 3)
    """
    names = resolve_blocks(model, blocks)
    target_device = model_device(model, device)
    for x, _ in iter_batches(inputs, batch_size=batch_size, device=target_device, prepare=prepare):
        yield batch_activations(model, x, names, pool=pool, head_index=head_index)


def batch_activations(
    model: nn.Module,
    x: torch.Tensor,
    names: Sequence[str],
    *,
    pool: bool = False,
    head_index: int = 0,
) -> OrderedDict[str, torch.Tensor]:
    """``{name: (batch, n_features)}`` for one prepared batch ``x``; hooks removed on return.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> acts = batch_activations(nn.Sequential(nn.Linear(3, 2)), torch.rand(5, 3), ["0"])
        >>> tuple(acts["0"].shape)
        (5, 2)
    """
    modules = [find_module(model, name) for name in names]
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    handles = []
    try:
        for name, module in zip(names, modules):
            handles.append(
                module.register_forward_hook(
                    lambda _m, _i, out, name=name: captured[name].append(_to_matrix(out, name, pool))
                )
            )
        with eval_mode(model), torch.no_grad():
            _forward(model, x, head_index)
    finally:
        for handle in handles:
            handle.remove()
    result: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name in names:
        if len(captured[name]) != 1:
            raise IncompatibleError(
                f"Block {name!r} ran {len(captured[name])} times in one forward pass (expected once); "
                "its activations are ambiguous. Probe a module that runs exactly once."
            )
        result[name] = captured[name][0]
    return result


def collect_activations(
    model: nn.Module,
    inputs: Inputs,
    blocks: Sequence[str] | str | None = None,
    **options: Any,
) -> OrderedDict[str, torch.Tensor]:
    """All batches of :func:`iter_activations` concatenated: ``{block: (n_samples, n_features)}``.

    Holds every activation in memory: for large data stream with :func:`iter_activations`.

    Example:
        >>> import torch
        >>> from forgetlab.models import create_model
        >>> model = create_model("mlp", input_shape=(1, 8, 8), head_sizes=(5,), width=16)
        >>> acts = collect_activations(model, torch.rand(20, 1, 8, 8), batch_size=8)
        >>> {name: tuple(a.shape) for name, a in acts.items()}
        {'fc1': (20, 16), 'fc2': (20, 16)}
    """
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in iter_activations(model, inputs, blocks, **options):
        for name, value in batch.items():
            parts.setdefault(name, []).append(value)
    return OrderedDict((name, torch.cat(values)) for name, values in parts.items())
