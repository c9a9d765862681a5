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

import dataclasses
from dataclasses import replace
from typing import Any

from forgetlab.config import ModelConfig, RunConfig
from forgetlab.data.custom import content_fingerprint
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
    stream = resolve_stream_config(config.stream)
    resolved = replace(config, stream=stream, model=model, train=train)
    return replace(resolved, inputs=input_fingerprints(resolved))


def input_fingerprints(config: RunConfig) -> tuple[tuple[str, str], ...]:
    """``(config key, content fingerprint)`` of every file the run reads: the custom
    stream's task files and pseudo-rehearsal's revision file (also inside a composite
    method). Empty for runs that read no such file, so their run ids do not change.

    Example:
        >>> input_fingerprints(RunConfig())
        ()
    """
    found: dict[str, str] = {}
    if config.stream.stream == "custom" and config.stream.custom_paths:
        found["stream.custom_paths"] = content_fingerprint(config.stream.custom_paths)

    def visit(params: Any, prefix: str) -> None:
        if getattr(params, "revision_source", None) == "user" and getattr(params, "revision_path", ""):
            found[f"{prefix}revision_path"] = content_fingerprint([params.revision_path])
        for item in dataclasses.fields(params):
            value = getattr(params, item.name)
            if dataclasses.is_dataclass(value):  # a composite's member
                visit(value, f"{prefix}{item.name}.")

    visit(config.method.params, "method.")
    return tuple(sorted(found.items()))
