"""Load a user's trained model: a ``state_dict`` file, a whole saved model, or a forgetlab checkpoint.

Three kinds of file are recognised by their content:

* a forgetlab checkpoint (it carries its config, so nothing else is needed);
* a whole model saved with ``torch.save(model)``: unpickling it imports the model's
  class, so its module must be importable (on ``PYTHONPATH``), and it can run any code
  the file names: it is refused unless ``trust_pickle=True`` (``--trust-pickle``), which
  warns; load only files you trust;
* a ``state_dict`` (a dict of tensors, also under a ``state_dict`` /
  ``model_state_dict`` / ``model_state`` key): the architecture comes from an instance
  you pass (``module=``), or from ``model_class="package.module:ClassName"`` built with
  ``model_args`` (a dict of keyword arguments), or, when :func:`save_user_model` saved
  the model of a forgetlab checkpoint (as ``forgetlab finetune`` does), from its sidecar's
  ``forgetlab_model`` build recipe: the run config's ``model`` section, ``input_shape``
  and ``head_sizes`` (the grown head's size included), given to
  :func:`forgetlab.models.build_model`; nothing else is needed.

Every file is read with ``torch.load(weights_only=True)`` (tensors and plain types only:
nothing in the file can run code) unless ``trust_pickle=True``.

A state_dict that does not fit the model raises :class:`IncompatibleError` listing the
missing keys, the unexpected keys and every shape mismatch with both shapes.

Example:
    >>> import tempfile, os, torch
    >>> from torch import nn
    >>> path = os.path.join(tempfile.mkdtemp(), "net.pt")
    >>> torch.save(nn.Linear(4, 2).state_dict(), path)
    >>> model = load_user_model(path, module=nn.Sequential(nn.Linear(4, 2)))
    Traceback (most recent call last):
    ...
    forgetlab.errors.IncompatibleError: State dict in '...net.pt' does not fit Sequential: missing keys ['0.bias', '0.weight']; unexpected keys ['bias', 'weight'].
    >>> load_user_model(path, module=nn.Linear(4, 2), blocks=[""]).n_outputs
    2
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import os
import pickle
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from forgetlab.config import RunConfig
from forgetlab.engine.checkpoint import pickled_global
from forgetlab.errors import ConfigError, DataError, ForgetlabError, IncompatibleError
from forgetlab.models import BlockModel, build_model
from forgetlab.user.userdata import InputNormalization
from forgetlab.user.wrap import WrappedModel, resize_head, wrap_model

__all__ = ["check_state_dict", "import_model_class", "load_user_model", "read_model_file", "save_user_model"]

STATE_KEYS = ("state_dict", "model_state_dict", "model_state")


def import_model_class(spec: str) -> type[nn.Module]:
    """The class named by ``"package.module:ClassName"`` (the current folder is importable).

    Example:
        >>> import_model_class("torch.nn:Linear").__name__
        'Linear'
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ConfigError(f"The 'model_class' parameter must look like 'package.module:ClassName'. Got {spec!r}.")
    module_name, class_name = spec.split(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"The 'model_class' parameter names module {module_name!r}, which cannot be imported ({exc}). "
            "Run from the folder that holds it or add that folder to PYTHONPATH."
        ) from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(
            f"The 'model_class' parameter names {class_name!r} in {module_name!r}, which is "
            f"{'missing' if cls is None else 'not an nn.Module class'}."
        )
    return cls


def read_model_file(path: str | Path, *, trust_pickle: bool = False) -> Any:
    """The object stored in ``path``: a state_dict or a forgetlab checkpoint dict (read with
    ``weights_only=True``), or, only with ``trust_pickle``, a whole pickled ``nn.Module``
    (unpickling runs code named by the file: a warning says so). Unreadable files raise
    :class:`DataError`.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "bad.pt")
        >>> _ = open(path, "wb").write(b"not a model")
        >>> read_model_file(path)
        Traceback (most recent call last):
        ...
        forgetlab.errors.DataError: Model file '...bad.pt' cannot be read: it is not a torch.save file or it is truncated/corrupted (UnpicklingError: ...).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Model file {str(path)!r} does not exist.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first_error = exc
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise _unreadable(path, exc) from None
    name = pickled_global(first_error)
    if name is None:
        raise _unreadable(path, first_error)
    if not trust_pickle:
        raise DataError(
            f"Model file {str(path)!r} holds pickled Python objects besides tensors (it names {name}; a whole "
            "saved model?): "
            "loading it could run any code the file names, so it is refused. Save model.state_dict() and pass "
            "--model-class package.module:ClassName, or pass --trust-pickle (trust_pickle=True) for a file you trust."
        )
    warnings.warn(
        f"Unpickling {str(path)!r} with trust_pickle: this runs code named by the file; load only files you trust.",
        UserWarning,
        stacklevel=2,
    )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise DataError(
            f"Model file {str(path)!r} is a whole saved model whose class cannot be imported ({exc}). Put the "
            "module that defines the class on PYTHONPATH (or run from its folder), or save "
            "model.state_dict() instead and pass --model-class package.module:ClassName."
        ) from None
    except Exception as exc:  # noqa: BLE001
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: BaseException) -> DataError:
    detail = str(exc).split(". ")[0].splitlines()[0] if str(exc) else ""
    return DataError(
        f"Model file {str(path)!r} cannot be read: it is not a torch.save file or it is truncated/corrupted "
        f"({type(exc).__name__}: {detail})."
    )


def _as_state_dict(payload: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(payload, Mapping):
        if payload and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()):
            return dict(payload)
        for key in STATE_KEYS:
            if key in payload and isinstance(payload[key], Mapping):
                return _as_state_dict(payload[key])
    return None


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`IncompatibleError` unless ``state`` has exactly ``module``'s keys and shapes.

    Example:
        >>> from torch import nn
        >>> check_state_dict(nn.Linear(4, 2), nn.Linear(4, 3).state_dict(), "b.pt")
        Traceback (most recent call last):
        ...
        forgetlab.errors.IncompatibleError: State dict in 'b.pt' does not fit Linear: shape mismatches weight: checkpoint (3, 4) vs model (2, 4), bias: checkpoint (3,) vs model (2,).
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:20]}{' ...' if len(missing) > 20 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}")
        if shapes:
            parts.append(f"shape mismatches {', '.join(shapes[:20])}")
        raise IncompatibleError(f"State dict in {source!r} does not fit {type(module).__name__}: {'; '.join(parts)}.")


def load_user_model(
    path: str | Path,
    *,
    module: nn.Module | None = None,
    model_class: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    blocks: Sequence[str] | None = None,
    head: str | None = None,
    input_shape: Sequence[int] | None = None,
    trust_pickle: bool = False,
) -> WrappedModel:
    """Load the model in ``path`` (see the module docstring) as a :class:`WrappedModel` in eval mode.

    ``module`` (an instance, copied, never changed) or ``model_class`` give the
    architecture of a plain state_dict; they are ignored for whole models and forgetlab
    checkpoints. A ``path.json`` sidecar written by :func:`save_user_model` supplies
    ``blocks``, ``head`` and ``input_shape`` defaults, and, without ``module`` and
    ``model_class``, the build recipe of a forgetlab model (see the module docstring). A
    whole pickled model loads only with ``trust_pickle=True`` (see
    :func:`read_model_file`). The model's ``source`` is ``path``; its
    ``input_normalization`` is the one a forgetlab checkpoint (its model spec) or the
    sidecar records, else ``None``; its ``build_recipe`` is the checkpoint's or the
    sidecar's when the model was built from it, else ``None``.

    Example:
        >>> import tempfile, os, torch
        >>> from torch import nn
        >>> path = os.path.join(tempfile.mkdtemp(), "whole.pt")
        >>> torch.save(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), path)
        >>> load_user_model(path, trust_pickle=True).block_names
        ('0', '1', '2')
    """
    from forgetlab.engine.checkpoint import CHECKPOINT_FORMAT, load_model

    path = Path(path)
    payload = read_model_file(path, trust_pickle=trust_pickle)
    meta = _read_sidecar(path)
    blocks = blocks if blocks is not None else meta.get("blocks")
    head = head if head is not None else meta.get("head")
    input_shape = input_shape if input_shape is not None else meta.get("input_shape")
    sidecar = str(path.with_name(path.name + ".json"))
    normalization = _normalization(meta.get("input_normalization"), sidecar)
    recipe = None
    if isinstance(payload, Mapping) and payload.get("format") == CHECKPOINT_FORMAT:
        net, config = load_model(path)
        normalization = _normalization(payload.get("model_spec"), str(path))
        recipe = {"model": dataclasses.asdict(config.model), "input_shape": list(net.input_shape),
                  "head_sizes": list(net.head_sizes)}
    elif isinstance(payload, nn.Module):
        net = payload
    else:
        state = _as_state_dict(payload)
        if state is None:
            raise DataError(
                f"Model file {str(path)!r} holds a {type(payload).__name__} that is neither a state_dict (a dict of "
                "tensors), a whole nn.Module, nor a forgetlab checkpoint."
            )
        if module is not None:
            net = copy.deepcopy(module)
        elif model_class is not None:
            cls = import_model_class(model_class)
            try:
                net = cls(**dict(model_args or {}))
            except Exception as exc:  # noqa: BLE001 - the user's constructor may raise anything
                raise ConfigError(
                    f"The 'model_args' parameter {dict(model_args or {})} cannot build {cls.__name__}: {exc}."
                ) from None
        elif meta.get("forgetlab_model") is not None:
            net, recipe = _rebuild(meta["forgetlab_model"], sidecar)
        else:
            raise ConfigError(
                f"Model file {str(path)!r} is a state_dict, which does not say which architecture it belongs to: "
                "pass the model class (--model-class package.module:ClassName, with --model-args JSON if its "
                "constructor needs arguments), or save the whole model with torch.save(model) and pass --trust-pickle."
            )
        if meta.get("n_outputs") and head is not None:  # a head grown by finetune
            net = resize_head(net, head, int(meta["n_outputs"]))
        check_state_dict(net, state, str(path))
        net.load_state_dict(state)
    wrapped = wrap_model(net, blocks=blocks, head=head, input_shape=input_shape).eval()
    wrapped.source, wrapped.input_normalization, wrapped.build_recipe = str(path), normalization, recipe
    return wrapped


def _rebuild(recipe: Any, origin: str) -> tuple[BlockModel, dict[str, Any]]:
    """The forgetlab model a sidecar's ``forgetlab_model`` recipe describes (see
    :func:`save_user_model`), and the recipe as plain data."""
    try:
        if not isinstance(recipe, Mapping) or set(recipe) != {"model", "input_shape", "head_sizes"}:
            raise ConfigError("it must hold exactly 'model', 'input_shape' and 'head_sizes'")
        model = RunConfig.from_dict({"model": recipe["model"]}).model
        shape, sizes = recipe["input_shape"], recipe["head_sizes"]
        if not all(isinstance(v, list) and v and all(type(n) is int for n in v) for v in (shape, sizes)):
            raise ConfigError("'input_shape' and 'head_sizes' must be lists of integers")
        net = build_model(model, input_shape=shape, head_sizes=sizes)
    except ForgetlabError as exc:
        raise DataError(
            f"Metadata file {origin!r} has a 'forgetlab_model' entry that cannot rebuild the model ({exc}). Got "
            f"{recipe!r}."
        ) from None
    return net, {"model": dataclasses.asdict(model), "input_shape": list(shape), "head_sizes": list(sizes)}


def _saved_recipe(model: WrappedModel) -> dict[str, Any] | None:
    """``model.build_recipe`` with the size of the head in use (``heads.K``) as it is now
    (grown by finetune), or ``None`` (no recipe, or a head the recipe cannot name)."""
    recipe = model.build_recipe
    found = re.fullmatch(r"heads\.(\d+)", model.head_name)
    if recipe is None or found is None or int(found.group(1)) >= len(recipe["head_sizes"]):
        return None
    sizes = list(recipe["head_sizes"])
    sizes[int(found.group(1))] = model.n_outputs
    return {**recipe, "head_sizes": sizes}


def _normalization(record: Any, origin: str) -> InputNormalization | None:
    """The input normalisation in a checkpoint's model spec or a sidecar (``mean``, ``std``), or ``None``."""
    if not isinstance(record, Mapping):
        return None
    mean, std = record.get("mean"), record.get("std")
    if not (isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple)) and mean and len(mean) == len(std)):
        return None
    return InputNormalization(tuple(float(v) for v in mean), tuple(float(v) for v in std), origin)


def _read_sidecar(path: Path) -> dict[str, Any]:
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.is_file():
        return {}
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"Metadata file {str(sidecar)!r} is not valid JSON ({exc}).") from None
    return meta if isinstance(meta, dict) else {}


def save_user_model(model: WrappedModel, path: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
    """Save ``model.module.state_dict()`` to ``path`` (it loads back into the user's own
    class) and ``path.json`` with the blocks, head, input shape, head size, input
    normalisation, class, ``metadata``, and, for a forgetlab model (one with a
    ``build_recipe``), ``forgetlab_model``: how to rebuild it, the head in use at its
    current size, so that :func:`load_user_model` needs nothing else.

    Example:
        >>> import tempfile, os
        >>> from torch import nn
        >>> path = save_user_model(WrappedModel(nn.Sequential(nn.Linear(4, 2))), os.path.join(tempfile.mkdtemp(), "m.pt"))
        >>> sorted(torch.load(path, weights_only=True))
        ['0.bias', '0.weight']
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"The 'out' parameter must be a file path. Got {str(path)!r}, which is a folder.")
    path.parent.mkdir(parents=True, exist_ok=True)
    cls = type(model.module)
    meta = {
        "format": "forgetlab-user-model",
        "model_class": f"{cls.__module__}:{cls.__qualname__}",
        "blocks": list(model.block_names),
        "head": model.head_name,
        "input_shape": None if model.input_shape is None else list(model.input_shape),
        "n_outputs": model.n_outputs,
        "input_normalization": None if model.input_normalization is None else {
            "mean": list(model.input_normalization.mean), "std": list(model.input_normalization.std)},
        **dict(metadata or {}),
    }
    recipe = _saved_recipe(model)
    if recipe is not None:
        meta["forgetlab_model"] = recipe
    tmp = path.with_name(path.name + ".tmp")
    torch.save(model.module.state_dict(), tmp)
    os.replace(tmp, path)
    path.with_name(path.name + ".json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return path
