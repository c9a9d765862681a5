"""Model registry: ``MODELS``, ``create_model``, ``build_model``, ``list_models``.

Example:
    >>> from forgetlab.models import create_model, list_models
    >>> sorted(list_models())
    ['densenet', 'mlp', 'resnet', 'vgg']
    >>> model = create_model("vgg", input_shape=(3, 32, 32), head_sizes=(10,), width=8, depth=2)
    >>> model.block_names
    ('conv1', 'conv2', 'fc')
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from forgetlab.config import ModelConfig
from forgetlab.errors import ConfigError, unknown_name
from forgetlab.models.base import BlockModel
from forgetlab.models.families import MLP, VGG, DenseNet, ResNet

MODELS: dict[str, type[BlockModel]] = {
    "mlp": MLP,
    "vgg": VGG,
    "resnet": ResNet,
    "densenet": DenseNet,
}

MODEL_DESCRIPTIONS: dict[str, str] = {
    "mlp": "fully connected: `depth` Linear+ReLU blocks of `width` units",
    "vgg": "VGG-style CNN: `depth` blocks of 2 convs + max-pool (channels `width`, x2 per block), then an fc block",
    "resnet": "CIFAR-style ResNet: stem + `depth` basic residual blocks (`width` stem channels)",
    "densenet": "small DenseNet: stem + 3 dense blocks of `depth` layers (growth rate `width`) with transitions",
}


def list_models() -> dict[str, str]:
    """Registered model names mapped to a one-line description."""
    return dict(MODEL_DESCRIPTIONS)


def check_options(name: str, *, width: int | None = None, depth: int | None = None, prefix: str = "") -> None:
    """Raise :class:`ConfigError` unless ``name`` is registered and ``width`` / ``depth``
    suit that family (``None`` = the family's default); ``prefix`` goes before the
    parameter's name in the message (``model.`` for a config key).

    Example:
        >>> check_options("resnet", depth=0)
        Traceback (most recent call last):
        ...
        forgetlab.errors.ConfigError: The 'depth' parameter of model 'resnet' must be >= 1. Got 0 instead.
    """
    if name not in MODELS:
        raise unknown_name("model", name, MODELS)
    if width is not None and width < 1:
        raise ConfigError(f"The '{prefix}width' parameter of model {name!r} must be >= 1. Got {width} instead.")
    least = 0 if name == "mlp" else 1  # an MLP of depth 0 is a linear model; a conv family needs a block
    if depth is not None and depth < least:
        raise ConfigError(f"The '{prefix}depth' parameter of model {name!r} must be >= {least}. Got {depth} instead.")


def create_model(
    name: str,
    *,
    input_shape: Sequence[int],
    head_sizes: Sequence[int],
    width: int | None = None,
    depth: int | None = None,
    batch_norm: bool | None = None,
) -> BlockModel:
    """Build a registered model; ``None`` keeps the family's default for that argument."""
    check_options(name, width=width, depth=depth)
    options = {"width": width, "depth": depth, "batch_norm": batch_norm}
    return MODELS[name](input_shape, head_sizes, **{k: v for k, v in options.items() if v is not None})


def build_model(config: ModelConfig, *, input_shape: Sequence[int], head_sizes: Sequence[int]) -> BlockModel:
    """The model a ``model`` config section describes, for inputs of ``input_shape``
    ``(C, H, W)`` and one head per entry of ``head_sizes``.

    Example:
        >>> model = build_model(ModelConfig("mlp", width=8, depth=1), input_shape=(1, 8, 8), head_sizes=(5, 5))
        >>> model.block_names, model.head_sizes
        (('fc1',), (5, 5))
    """
    if config.name is None:
        raise ConfigError("The 'model.name' parameter is 'auto': resolve the config first (forgetlab.resolve.resolve).")
    return create_model(
        config.name, input_shape=input_shape, head_sizes=head_sizes,
        width=config.width, depth=config.depth, batch_norm=config.batch_norm,
    )


def default_options(name: str) -> dict[str, int | bool]:
    """The family's default ``width``, ``depth`` and ``batch_norm``."""
    if name not in MODELS:
        raise unknown_name("model", name, MODELS)
    params = inspect.signature(MODELS[name].__init__).parameters
    return {key: params[key].default for key in ("width", "depth", "batch_norm")}


__all__ = [
    "MODELS", "BlockModel", "build_model", "check_options", "create_model", "default_options", "list_models",
    "MLP", "VGG", "ResNet", "DenseNet",
]
