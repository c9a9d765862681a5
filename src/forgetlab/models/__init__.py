"""Model registry: ``MODELS``, ``create_model``, ``list_models``.

Example:
    >>> from forgetlab.models import create_model, list_models
    >>> sorted(list_models())
    ['densenet', 'mlp', 'resnet', 'vgg']
    >>> model = create_model("vgg", input_shape=(3, 32, 32), head_sizes=(10,), width=8, depth=2)
    >>> model.block_names
    ('conv1', 'conv2', 'fc')
"""

from __future__ import annotations

from collections.abc import Sequence

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
    if name not in MODELS:
        raise unknown_name("model", name, MODELS)
    if width is not None and width < 1:
        raise ConfigError(f"The 'width' parameter of model {name!r} must be >= 1. Got {width} instead.")
    if depth is not None and depth < (1 if name != "mlp" else 0):
        raise ConfigError(f"The 'depth' parameter of model {name!r} must be >= 1. Got {depth} instead.")
    options: dict[str, int | bool] = {}
    if width is not None:
        options["width"] = width
    if depth is not None:
        options["depth"] = depth
    if batch_norm is not None:
        options["batch_norm"] = batch_norm
    return MODELS[name](input_shape, head_sizes, **options)


__all__ = ["MODELS", "BlockModel", "create_model", "default_options", "list_models", "MLP", "VGG", "ResNet", "DenseNet"]


def default_options(name: str) -> dict[str, int | bool]:
    """The family's default ``width``, ``depth`` and ``batch_norm``."""
    import inspect

    if name not in MODELS:
        raise unknown_name("model", name, MODELS)
    params = inspect.signature(MODELS[name].__init__).parameters
    return {key: params[key].default for key in ("width", "depth", "batch_norm")}
