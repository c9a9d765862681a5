"""Fine-tune a user's trained model on new labelled data while keeping its old behaviour.

The fine-tuning is a two-task stream run by :func:`~forgetlab.engine.train_stream` with
``n_learned_tasks=1``: task 1 is the *old task, given as data* (never trained here: the
method's ``before_task`` / ``after_task`` hooks build their state from it and the
original model), task 2 is the new data. Both use the model's one head.

The old task's inputs are, in this order of preference: ``revision_data`` (unlabelled
is fine), the train part of ``old_data``, or the new data's own inputs (as spaCy's
``rehearse`` does). Their labels are ``old_data``'s true labels when they come from it,
else the original model's predictions. What each method takes from it:

=================  ============================================================
method             uses the old task's inputs for
=================  ============================================================
pseudo-rehearsal   revision inputs; the frozen original model gives the targets
                   (``revision_source="noise"``: uniform noise instead)
ewc                the Fisher information (labels: true or the model's own)
replay             the replay buffer (inputs and labels)
lwf                nothing but its classes: distils on the new inputs
l2                 nothing: anchors on the original weights
naive              nothing (the baseline that forgets)
=================  ============================================================

"Old-task accuracy" is measured on the test part of ``old_data`` when given; without
it, it is the agreement with the original model's predictions on the old task's
inputs (100% before fine-tuning, by construction): the report says which.

See :func:`finetune` for an example.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from forgetlab.config import TrainConfig
from forgetlab.data.streams import Task, TaskStream
from forgetlab.engine.device import resolve_device
from forgetlab.engine.train import train_stream
from forgetlab.errors import ConfigError, did_you_mean, unknown_name
from forgetlab.strategies import HyperParams, create_strategy, format_params, strategy_class
from forgetlab.user.diagnosis import predict
from forgetlab.user.userdata import UserData, as_inputs, check_fits, split_data
from forgetlab.user.wrap import WrappedModel, wrap_model

__all__ = ["FINETUNE_METHODS", "FinetuneResult", "finetune", "make_params"]

FINETUNE_METHODS = ("pseudo-rehearsal", "ewc", "l2", "replay", "lwf", "naive")


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns: the fine-tuned ``model`` (a new object; the
    original is unchanged) and accuracies ``before`` / ``after`` on ``old`` and ``new``."""

    model: WrappedModel
    method: str
    params: HyperParams
    before: dict[str, float]
    after: dict[str, float]
    old_task_kind: str
    old_task_source: str
    n_new_train: int
    n_new_test: int
    train_seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready), without the model."""
        return {
            "method": self.method, "params": dataclasses.asdict(self.params), "before": self.before,
            "after": self.after, "old_task_kind": self.old_task_kind, "old_task_source": self.old_task_source,
            "n_new_train": self.n_new_train, "n_new_test": self.n_new_test, "train_seconds": self.train_seconds,
        }

    def format_report(self) -> str:
        """Before/after accuracies as a text table."""
        p = lambda v: f"{100 * v:.1f}%"  # noqa: E731
        lines = [
            f"method {self.method}: {format_params(self.params) or '(no hyperparameters)'}",
            f"old task: {self.old_task_kind} on {self.old_task_source}",
            f"new task: {self.n_new_train} training / {self.n_new_test} held-out examples; trained in {self.train_seconds:.1f} s",
            "",
            f"{'':<10}{'before':>9}{'after':>9}",
            f"{'old task':<10}{p(self.before['old']):>9}{p(self.after['old']):>9}",
            f"{'new task':<10}{p(self.before['new']):>9}{p(self.after['new']):>9}",
        ]
        return "\n".join(lines + self.notes)


def make_params(method: str, params: HyperParams | Mapping[str, Any] | None = None, **defaults: Any) -> HyperParams:
    """The hyperparameters of ``method``: ``params`` as is, or a mapping of field values
    over ``defaults`` over the method's own defaults. Unknown keys name the valid ones.

    Example:
        >>> make_params("ewc", {"lam": 10})
        EWCParams(lam=10.0, fisher='empirical', mode='separate', gamma=1.0, fisher_samples=1000)
    """
    if method not in FINETUNE_METHODS:
        raise unknown_name("finetune method", method, FINETUNE_METHODS)
    cls = strategy_class(method).params_type
    if isinstance(params, HyperParams):
        if type(params) is not cls:
            raise ConfigError(f"The 'params' parameter for method {method!r} must be a {cls.__name__}. Got {type(params).__name__}.")
        return params
    names = [f.name for f in dataclasses.fields(cls)]
    values = {k: v for k, v in defaults.items() if k in names}
    for key, value in dict(params or {}).items():
        if key not in names:
            raise ConfigError(
                f"Unknown hyperparameter {key!r} for method {method!r}.{did_you_mean(key, names)} "
                f"Valid: {', '.join(names) or '(none)'}."
            )
        values[key] = value
    return cls(**values)


def _task(name: str, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], n_outputs: int) -> Task:
    return Task(
        name=name, train_x=train[0], train_y=train[1], test_x=test[0], test_y=test[1], head_index=0,
        classes=tuple(sorted(set(train[1].tolist()))), label_names=tuple(str(k) for k in range(n_outputs)),
    )


def finetune(
    model: torch.nn.Module,
    new_data: UserData,
    *,
    method: str = "pseudo-rehearsal",
    params: HyperParams | Mapping[str, Any] | None = None,
    old_data: UserData | None = None,
    revision_data: UserData | None = None,
    epochs: int = 5,
    lr: float = 1e-3,
    optimizer: str = "adam",
    batch_size: int = 64,
    test_fraction: float = 0.2,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> FinetuneResult:
    """Fine-tune a copy of ``model`` on ``new_data`` with ``method`` (see the module docstring).

    ``new_data`` and ``old_data`` are split (seeded) into train and held-out test parts
    (``test_fraction``). ``params``: the method's hyperparameters (a dataclass, or a
    mapping of overrides); pseudo-rehearsal defaults to ``revision_source="old-inputs"``
    with every old-task input as revision pool. ``model`` is never changed.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from forgetlab.user import WrappedModel, user_data
        >>> _ = torch.manual_seed(0)
        >>> model = WrappedModel(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 4)))
        >>> new = user_data(torch.randn(40, 4), torch.arange(40) % 2 + 2)
        >>> result = finetune(model, new, method="pseudo-rehearsal", epochs=2)
        >>> result.before["old"], result.old_task_kind
        (1.0, 'agreement with the original model')
    """
    if method not in FINETUNE_METHODS:
        raise unknown_name("finetune method", method, FINETUNE_METHODS)
    original = wrap_model(model)
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    for d in (new_data, old_data, revision_data):
        if d is not None:
            check_fits(d, original)
    new_train, new_test = split_data(new_data, test_fraction, seed)
    if old_data is not None:
        old_train, old_test = split_data(old_data, test_fraction, seed)
    if revision_data is not None:
        old_x, old_y, source = as_inputs(revision_data.x), None, revision_data.source
    elif old_data is not None:
        old_x, old_y, source = as_inputs(old_train.x), old_train.y, old_train.source
    else:
        old_x, old_y, source = as_inputs(new_train.x), None, f"the new data's inputs ({new_train.source})"
    if old_y is None:
        old_y = predict(original, old_x)
    if old_data is not None:
        old_test_xy, kind = (as_inputs(old_test.x), old_test.y), "accuracy"
        evaluated_on = old_test.source
    else:
        old_test_xy, kind = (old_x, predict(original, old_x)), "agreement with the original model"
        evaluated_on = source
    extra = {"revision_source": "old-inputs", "revision_size": int(old_x.shape[0])} if method == "pseudo-rehearsal" else {}
    hyper = make_params(method, params, **extra)
    if method == "pseudo-rehearsal" and hyper.revision_source == "user":
        raise ConfigError(
            "The 'revision_source' parameter of PseudoRehearsal must not be 'user' in finetune: pass the inputs as "
            "revision_data (--revision-data) instead."
        )
    n_outputs = original.n_outputs
    stream = TaskStream(
        name="user", tasks=(
            _task("old task (given as data)", (old_x, old_y), old_test_xy, n_outputs),
            _task(f"new task: {new_data.source}", (as_inputs(new_train.x), new_train.y), (as_inputs(new_test.x), new_test.y), n_outputs),
        ),
        head_sizes=(n_outputs,), input_shape=tuple(old_x.shape[1:]), mean=(), std=(), augment=False,  # type: ignore[arg-type]
        class_names=tuple(str(k) for k in range(n_outputs)),
    )
    config = TrainConfig(optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed)
    student = copy.deepcopy(original)
    torch.manual_seed(seed)
    tick = time.perf_counter()
    result = train_stream(student, stream, config, device=device, strategy=create_strategy(method, hyper), n_learned_tasks=1)
    seconds = time.perf_counter() - tick
    student.eval()
    notes = []
    if kind != "accuracy":
        notes.append("(pass labelled old data, --old-data, to measure true old-task accuracy)")
    return FinetuneResult(
        model=student, method=method, params=hyper,
        before={"old": float(result.initial_accuracy[0]), "new": float(result.initial_accuracy[1])},
        after={"old": float(result.accuracy_matrix[1, 0]), "new": float(result.accuracy_matrix[1, 1])},
        old_task_kind=kind, old_task_source=evaluated_on, n_new_train=new_train.n_samples,
        n_new_test=new_test.n_samples, train_seconds=seconds, notes=notes,
    )
