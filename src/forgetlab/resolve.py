"""Resolution: the one place where a config meets the dataset, stream and model registries.

A :class:`~forgetlab.config.RunConfig` leaves ``None`` (``auto``) where the dataset or
the model family decides. :func:`resolve` fills those in from the registries and checks
what only they know (the dataset suits the stream, the depth suits the family). The
resolved config is what is hashed (:meth:`~forgetlab.config.RunConfig.run_id`), stored
and trained: :func:`forgetlab.run`, :func:`forgetlab.experiments.execute` and
``forgetlab analyze`` resolve once, and everything below them takes the resolved config.

Example:
    >>> from forgetlab.config import RunConfig
    >>> config = resolve(RunConfig())
    >>> config.model.name, config.train.epochs, config.stream.head, config.run_id()
    ('mlp', 10, 'multi', '5a21174bbb31b316')
"""

from __future__ import annotations

from dataclasses import replace

from forgetlab.config import ModelConfig, RunConfig
from forgetlab.data.sources import dataset_defaults
from forgetlab.data.streams import resolve_stream_config
from forgetlab.models import check_options, default_options


def resolve(config: RunConfig) -> RunConfig:
    """Fill every ``None`` field with the dataset's or model family's default, and
    ``stream.head='auto'`` with the stream's default; check the dataset suits the stream
    and the model's width and depth suit its family. Resolving twice changes nothing.

    Example:
        >>> from forgetlab.config import apply_overrides
        >>> resolve(apply_overrides(RunConfig(), ["model.name=vgg", "model.depth=0"]))
        Traceback (most recent call last):
        ...
        forgetlab.errors.ConfigError: The 'model.depth' parameter of model 'vgg' must be >= 1. Got 0 instead.
    """
    defaults = dataset_defaults(config.stream.dataset)
    name = config.model.name or defaults.model
    family = default_options(name)
    model = ModelConfig(
        name=name,
        width=config.model.width if config.model.width is not None else family["width"],
        depth=config.model.depth if config.model.depth is not None else family["depth"],
        batch_norm=config.model.batch_norm if config.model.batch_norm is not None else family["batch_norm"],
    )
    check_options(name, width=model.width, depth=model.depth, prefix="model.")
    train = replace(
        config.train,
        lr=config.train.lr if config.train.lr is not None else defaults.lr,
        epochs=config.train.epochs if config.train.epochs is not None else defaults.epochs,
    )
    return replace(config, stream=resolve_stream_config(config.stream), model=model, train=train)
