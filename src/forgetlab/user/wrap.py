"""Adapt any ``nn.Module`` classifier to what the engine, the strategies and the analyses use.

A user model has ONE output head: its own final ``nn.Linear`` (``head``, default: the
last ``nn.Linear`` registered in the module). ``features(x)`` is *the input of that head*
(caught with a forward hook), so distillation methods (LwF, pseudo-rehearsal) can call
``model.heads[0](model.features(x))``; the first call checks that this equals the
model's output, i.e. that the head is the model's last operation. Blocks (the unit of
probing, resetting, weight change) are dotted module paths (default: the direct
children). The wrapper never changes the wrapped module.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> model = WrappedModel(net)
    >>> model.block_names, model.head_name, model.n_outputs
    (('0', '1', '2'), '2', 3)
    >>> tuple(model.features(torch.zeros(5, 4)).shape), tuple(model(torch.zeros(5, 4), 0).shape)
    ((5, 8), (5, 3))
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from forgetlab.analysis.activations import find_module as _find_module, resolve_blocks
from forgetlab.errors import ConfigError, IncompatibleError
from forgetlab.user.userdata import InputNormalization

__all__ = ["WrappedModel", "resize_head", "wrap_model"]


def _last_linear(module: nn.Module) -> str:
    names = [name for name, sub in module.named_modules() if isinstance(sub, nn.Linear)]
    if not names:
        raise ConfigError(
            f"The 'head' parameter is required for a {type(module).__name__} without an nn.Linear: name its "
            "final layer (a dotted module path)."
        )
    return names[-1]


class WrappedModel(nn.Module):
    """Any ``nn.Module`` classifier seen through the forgetlab model contract.

    Args:
        module: the user's model; ``module(x)`` returns logits ``(batch, n_outputs)``.
        blocks: dotted module paths of the blocks, input side first (default: the
            module's direct children).
        head: dotted path of the final linear layer (default: the last ``nn.Linear``).
        input_shape: shape of one input, e.g. ``(64,)`` or ``(1, 8, 8)``; when given,
            inputs of another shape are refused with both shapes.

    The wrapped module is ``self.module``; its ``state_dict`` (without a prefix) is what
    forgetlab saves, so it loads back into the user's own class.

    Example:
        >>> from torch import nn
        >>> WrappedModel(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), input_shape=(1, 4, 4)).input_shape
        (1, 4, 4)
    """

    #: how the model is scored: ``accuracy`` (a classifier), or ``loss`` (a causal language
    #: model, :class:`~forgetlab.user.transformers.HFModel`: mean next-token cross-entropy)
    metric: str = "accuracy"
    #: True when the outputs and targets are per token (logits ``(B, V, T)``, targets ``(B, T)``)
    token_level: bool = False

    def __init__(
        self,
        module: nn.Module,
        blocks: Sequence[str] | str | None = None,
        head: str | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ConfigError(f"The 'module' parameter must be a torch nn.Module. Got {type(module).__name__}.")
        #: where the model was read (a file path; "" for one built in Python) and the input
        #: normalisation it records (forgetlab checkpoints; ``None``: inputs as given)
        self.source: str = ""
        self.input_normalization: InputNormalization | None = None
        #: how forgetlab builds ``module`` (a model of a forgetlab checkpoint: the run config's
        #: ``model`` section, ``input_shape``, ``head_sizes``; plain JSON data), or ``None``
        self.build_recipe: dict[str, Any] | None = None
        if isinstance(module, WrappedModel):
            self.source, self.input_normalization = module.source, module.input_normalization
            self.build_recipe = module.build_recipe
            module = module.module
        self.module = module
        self.block_names: tuple[str, ...] = resolve_blocks(module, blocks)
        self.head_name: str = _last_linear(module) if head is None else str(head)
        head_module = _find_module(module, self.head_name) if self.head_name else module
        if not isinstance(head_module, nn.Linear):
            raise ConfigError(
                f"The 'head' parameter must name an nn.Linear of {type(module).__name__}. Got {self.head_name!r}, "
                f"a {type(head_module).__name__}."
            )
        self.n_outputs: int = int(head_module.out_features)
        self.input_shape: tuple[int, ...] | None = None if input_shape is None else tuple(int(s) for s in input_shape)
        self._head_checked = False

    # -- the contract ------------------------------------------------------------------
    @property
    def heads(self) -> tuple[nn.Linear, ...]:
        """The one head, ``(final linear layer,)`` (not registered twice: a property)."""
        head = self.module.get_submodule(self.head_name) if self.head_name else self.module
        return (head,)  # type: ignore[return-value]

    @property
    def blocks(self) -> OrderedDict[str, nn.Module]:
        """Block name -> submodule of ``self.module``, input side first."""
        return OrderedDict((name, _find_module(self.module, name)) for name in self.block_names)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`IncompatibleError` with both shapes if ``x`` is not ``(batch, *input_shape)``."""
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise IncompatibleError(
                f"Inputs of shape {tuple(x.shape)} do not fit this model: it expects (batch, "
                f"{', '.join(map(str, self.input_shape))})."
            )

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        try:
            out = self.module(x)
        except RuntimeError as exc:
            if "shape" not in str(exc) and "size" not in str(exc):
                raise
            raise IncompatibleError(
                f"{type(self.module).__name__} cannot take inputs of shape {tuple(x.shape)} ({str(exc).splitlines()[0]})."
            ) from None
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise IncompatibleError(
                f"{type(self.module).__name__} must return logits (batch, n_outputs); it returned {got}. "
                "Wrap it in a module that returns one logits tensor."
            )
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The head's input ``(batch, n_features)`` for inputs ``x``."""
        captured: list[torch.Tensor] = []
        handle = self.heads[0].register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0]))
        try:
            out = self._call(x)
        finally:
            handle.remove()
        if len(captured) != 1 or captured[0].dim() != 2:
            raise IncompatibleError(
                f"The head {self.head_name!r} of {type(self.module).__name__} must run once per forward pass on "
                f"(batch, n_features) inputs; it ran {len(captured)} time(s)"
                + (f" on shape {tuple(captured[0].shape)}." if captured else ".")
            )
        if not self._head_checked:
            with torch.no_grad():
                same = torch.allclose(self.heads[0](captured[0]), out, rtol=1e-4, atol=1e-5)
            if not same:
                raise IncompatibleError(
                    f"The head {self.head_name!r} is not the last operation of {type(self.module).__name__}: its "
                    "output differs from the model's. Name the final linear layer with head=... (--head)."
                )
            self._head_checked = True
        return captured[0]

    def forward(
        self, x: torch.Tensor, head_index: int = 0, *, return_activations: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]:
        """Logits ``(batch, n_outputs)``; ``head_index`` must be 0 (a user model has one head).

        With ``return_activations=True`` also returns ``{block: output}`` (hooks, removed
        afterwards).
        """
        if head_index != 0:
            raise IncompatibleError(
                f"head_index must be 0 for a wrapped {type(self.module).__name__} (it has one output head). "
                f"Got {head_index}."
            )
        if not return_activations:
            return self._call(x)
        activations: OrderedDict[str, torch.Tensor] = OrderedDict()
        handles: list[Any] = []
        try:
            for name, block in self.blocks.items():
                handles.append(block.register_forward_hook(lambda _m, _i, out, name=name: activations.__setitem__(name, out)))
            logits = self._call(x)
        finally:
            for handle in handles:
                handle.remove()
        return logits, OrderedDict((name, activations[name]) for name in self.block_names if name in activations)

    def rewrap(self, module: nn.Module) -> WrappedModel:
        """A wrapper of the same kind, blocks, head and input shape around ``module`` (e.g.
        this model's module with its head grown), with this one's source, input
        normalisation and build recipe."""
        other = WrappedModel(module, blocks=self.block_names, head=self.head_name, input_shape=self.input_shape)
        other.source, other.input_normalization, other.build_recipe = self.source, self.input_normalization, self.build_recipe
        return other

    def with_blocks(self, blocks: Sequence[str] | str | None) -> WrappedModel:
        """This model with other blocks (the same module, head and input shape)."""
        other = WrappedModel(self.module, blocks=blocks, head=self.head_name, input_shape=self.input_shape)
        other.source, other.input_normalization, other.build_recipe = self.source, self.input_normalization, self.build_recipe
        return other

    def extra_repr(self) -> str:
        return f"blocks={list(self.block_names)}, head={self.head_name!r}, n_outputs={self.n_outputs}"


def wrap_model(
    model: nn.Module,
    blocks: Sequence[str] | str | None = None,
    head: str | None = None,
    input_shape: Sequence[int] | None = None,
) -> WrappedModel:
    """``model`` as a :class:`WrappedModel` (returned as is when it already is one and no
    option is given). A forgetlab ``BlockModel`` gets its blocks (``blocks.<name>``),
    its first head (``heads.0``) and its input shape by default.

    Example:
        >>> from forgetlab.models import create_model
        >>> wrapped = wrap_model(create_model("mlp", input_shape=(1, 8, 8), head_sizes=(5,), width=8))
        >>> wrapped.block_names, wrapped.head_name
        (('blocks.fc1', 'blocks.fc2'), 'heads.0')
    """
    from forgetlab.models.base import BlockModel

    if isinstance(model, WrappedModel) and blocks is None and head is None and input_shape is None:
        return model
    if isinstance(model, WrappedModel) and head is None and input_shape is None:
        return model.with_blocks(blocks)  # keeps its kind (a Hugging Face model stays one)
    if isinstance(model, BlockModel):
        blocks = blocks if blocks is not None else [f"blocks.{name}" for name in model.block_names]
        head = head if head is not None else "heads.0"
        input_shape = input_shape if input_shape is not None else model.input_shape
    return WrappedModel(model, blocks=blocks, head=head, input_shape=input_shape)


def resize_head(module: nn.Module, head: str, n_outputs: int, seed: int = 0) -> nn.Module:
    """A copy of ``module`` whose final ``nn.Linear`` (at path ``head``) has ``n_outputs``
    outputs (never fewer than now): the old rows are kept bit for bit, the new rows are
    those of a fresh ``nn.Linear`` (PyTorch's default initialisation, seeded by ``seed``).
    ``module`` is not changed. Used to add classes (finetune) and to rebuild a grown model.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> grown = resize_head(net, "2", 5)
        >>> grown[2].out_features, torch.equal(grown[2].weight[:3], net[2].weight)
        (5, True)
    """
    module = copy.deepcopy(module)
    old = _find_module(module, head) if head else module
    if not isinstance(old, nn.Linear):
        raise ConfigError(f"The 'head' parameter must name an nn.Linear of {type(module).__name__}. Got {head!r}.")
    if n_outputs < old.out_features:
        raise IncompatibleError(f"The head {head!r} has {old.out_features} outputs; it cannot shrink to {n_outputs}.")
    if n_outputs == old.out_features:
        return module
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = nn.Linear(old.in_features, n_outputs, bias=old.bias is not None)
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight[: old.out_features] = old.weight
        if old.bias is not None:
            new.bias[: old.out_features] = old.bias
    new.weight.requires_grad_(old.weight.requires_grad)
    if not head:
        return new
    parent_name, _, child = head.rpartition(".")
    setattr(module.get_submodule(parent_name) if parent_name else module, child, new)
    return module
