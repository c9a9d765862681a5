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

New labels beyond the model's outputs are new classes: the head grows (old rows kept bit
for bit, new rows initialised as a fresh ``nn.Linear``'s), with every method; the
pseudo-rehearsal teacher then covers the old outputs only.

Old-task accuracy is measured on the test part of ``old_data``; without it, it is
unknown, and the report gives instead the agreement with the original model's
predictions on held-out revision inputs (100% before fine-tuning, by construction).
:attr:`FinetuneResult.conclusion` sums the numbers up in one paragraph.

A model that records its input normalisation (a forgetlab checkpoint) gets it applied
to the raw inputs of every data set (``input_normalization="auto"``, see
:func:`~forgetlab.user.userdata.chosen_normalization`); the fine-tuned model records it too.

See :func:`finetune` for an example.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import textwrap
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from forgetlab.config import TrainConfig
from forgetlab.data.streams import Task, TaskStream
from forgetlab.engine.device import resolve_device
from forgetlab.engine.train import train_stream
from forgetlab.errors import ConfigError, did_you_mean, unknown_name
from forgetlab.strategies.distillation import PseudoRehearsal, padded_soft_cross_entropy
from forgetlab.strategies.losses import soft_cross_entropy
from forgetlab.strategies import HyperParams, create_strategy, format_params, strategy_class
from forgetlab.user.diagnosis import predict
from forgetlab.user.userdata import UserData, as_inputs, check_fits, chosen_normalization, normalize_inputs, split_data
from forgetlab.user.wrap import WrappedModel, resize_head, wrap_model

__all__ = ["ACCURACY_KEYS", "FINETUNE_METHODS", "FinetuneResult", "finetune", "make_params"]

FINETUNE_METHODS = ("pseudo-rehearsal", "ewc", "l2", "replay", "lwf", "naive")


ACCURACY_KEYS = ("old_accuracy", "new_accuracy", "all_accuracy", "revision_agreement")
STRENGTH = {"ewc": "lam", "l2": "lam", "lwf": "lam", "pseudo-rehearsal": "revision_fraction", "replay": "fraction"}


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns: the fine-tuned ``model`` (a new object; the original
    is unchanged) and ``before`` / ``after`` dicts with :data:`ACCURACY_KEYS` (fractions;
    ``None`` when not measurable): ``old_accuracy`` on the held-out old data,
    ``new_accuracy`` on the held-out new data, ``all_accuracy`` on both together, and,
    without old data, ``revision_agreement``: agreement with the original model's
    predictions on held-out revision inputs (``revision_source`` names them; there are
    ``n_revision_test``). ``input_normalization``: what was applied to the inputs."""

    model: WrappedModel
    method: str
    params: HyperParams
    before: dict[str, float | None]
    after: dict[str, float | None]
    old_source: str | None
    revision_source: str
    n_old_test: int
    n_new_train: int
    n_new_test: int
    n_outputs_before: int
    n_outputs: int
    train_seconds: float
    notes: list[str] = field(default_factory=list)
    new_source: str = ""
    n_revision_test: int = 0
    model_source: str = ""
    input_normalization: dict[str, Any] = field(default_factory=dict)
    metric: str = "accuracy"
    lora: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready), without the model, with the :attr:`conclusion`."""
        fields = [f.name for f in dataclasses.fields(self) if f.name not in ("model", "params")]
        return {"params": dataclasses.asdict(self.params), **{name: getattr(self, name) for name in fields},
                "conclusion": self.conclusion}

    @property
    def conclusion(self) -> str:
        """One paragraph from the numbers: the method, the old task (or what stands in
        for it), the new task and all classes, before -> after, with their ``n``."""
        b, a = self.before, self.after
        if self.metric == "loss":  # a causal LM: next-token loss (perplexity)
            p = lambda v: f"{v:.3f} (perplexity {math.exp(v):.4g})"  # noqa: E731
            change = lambda key: f"{p(b[key])} -> {p(a[key])} ({a[key] - b[key]:+.3f} nats per token"  # noqa: E731
        else:
            p = lambda v: f"{100 * v:.1f}%"  # noqa: E731
            change = lambda key: f"{p(b[key])} -> {p(a[key])} ({100 * (a[key] - b[key]):+.1f} points"  # noqa: E731
        text = f"Fine-tuned with {self.method}" + (f" + LoRA (r={self.lora['r']})" if self.lora else "")
        if self.n_outputs > self.n_outputs_before:
            text += f" (head grown from {self.n_outputs_before} to {self.n_outputs} outputs)"
        text += ": the new task's loss went" if self.metric == "loss" else ": the new task went"
        text += f" {change('new_accuracy')}; n = {self.n_new_test} held-out examples"
        text += f" of {self.new_source})" if self.new_source else ")"
        if self.old_source is not None:
            what = "the old task's loss" if self.metric == "loss" else "the old task"
            text += (f"; {what} {change('old_accuracy')}; n = "
                     f"{self.n_old_test} held-out examples of {self.old_source}); "
                     f"{'both together' if self.metric == 'loss' else 'all classes together'} {p(b['all_accuracy'])} -> {p(a['all_accuracy'])}.")
        else:
            text += f"; old-task {self.metric} is unknown (no old data given)"
            if a["revision_agreement"] is not None:
                text += (f"; the model agrees with the original on {p(a['revision_agreement'])} of "
                         f"{self.n_revision_test} held-out revision inputs ({self.revision_source})")
            text += "."
        if any(note.startswith("warning: the new task") for note in self.notes):
            text += " The new task stayed near chance (see the warning)."
        return text

    def format_report(self) -> str:
        """Before/after accuracies as a text table (with the notes and warnings)."""
        if self.metric == "loss":
            p = lambda v: "n/a" if v is None else f"{v:.3f} ({math.exp(v):.4g})"  # noqa: E731
        else:
            p = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        lines = textwrap.wrap("Conclusion: " + self.conclusion, 110) + [""]
        if self.model_source:
            lines.append(f"model: {self.model_source}")
        if self.input_normalization:
            lines.append(f"input normalisation: {self.input_normalization['description']}")
        lines.append(f"method {self.method}: {format_params(self.params) or '(no hyperparameters)'}")
        if self.lora:
            lines.append("LoRA: " + " ".join(f"{k}={v if v or v == 0 else 'default'}" for k, v in self.lora.items())
                         + " (merged into the weights after training)")
        if self.n_outputs > self.n_outputs_before:
            lines.append(f"head grown from {self.n_outputs_before} to {self.n_outputs} outputs: new classes "
                         f"{self.n_outputs_before}..{self.n_outputs - 1} (old rows kept, new rows freshly initialised)")
        lines.append(f"new task: {self.n_new_train} training / {self.n_new_test} held-out examples; trained in {self.train_seconds:.1f} s")
        rows = [("new task", "new_accuracy")]
        if self.old_source is not None:
            lines.append(f"old task: {self.n_old_test} held-out examples of {self.old_source}")
            rows = [("old task", "old_accuracy"), *rows, ("all (both)", "all_accuracy")]
        else:
            lines.append(f"old task: {self.metric} UNKNOWN (no --old-data: pass {'' if self.metric == 'loss' else 'labelled '}old-task data to measure it)")
            if self.metric != "loss":
                rows.append(("agreement", "revision_agreement"))
                lines.append(f"agreement = agreement with the original model's predictions on held-out revision inputs ({self.revision_source})")
        if self.metric == "loss":
            lines.append("rows: mean next-token loss in nats per non-padding token (perplexity = exp(loss))")
        width = 17 if self.metric == "loss" else 9
        lines += ["", f"{'':<12}{'before':>{width}}{'after':>{width}}"]
        lines += [f"{label:<12}{p(self.before[key]):>{width}}{p(self.after[key]):>{width}}" for label, key in rows]
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
        key = key.removeprefix("method.")  # the key `run --set` uses
        if key not in names:
            raise ConfigError(
                f"Unknown hyperparameter {key!r} for method {method!r}.{did_you_mean(key, names)} "
                f"Valid: {', '.join(names) or '(none)'} (written lam=3 or method.lam=3)."
            )
        values[key] = value
    return cls(**values)


def _task(name: str, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], n_outputs: int) -> Task:
    labels = train[1][train[1] >= 0]  # per-token targets: -100 marks padding
    return Task(
        name=name, train_x=train[0], train_y=train[1], test_x=test[0], test_y=test[1], head_index=0,
        classes=tuple(torch.unique(labels).tolist()), label_names=tuple(str(k) for k in range(n_outputs)),
    )


class _OldOutputsRehearsal(PseudoRehearsal):
    """Pseudo-rehearsal for a grown head: the frozen teacher covers the original head's
    ``n_old`` outputs only. On old-task revision inputs its softmax is padded with zero
    probability for the new outputs (old inputs must not look like new classes); when
    the revision inputs are the new data's own (``on_new_inputs``), only the old outputs
    are matched, and the new outputs learn from the new labels alone."""

    def __init__(self, params: HyperParams, n_old: int, on_new_inputs: bool) -> None:
        super().__init__(params)
        self.n_old, self.on_new_inputs = n_old, on_new_inputs

    def revision_loss(self, model: torch.nn.Module, features: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        assert self._teacher is not None
        with torch.no_grad():
            teacher = self._teacher.heads[0](self._teacher.features(inputs))[:, : self.n_old]
        student = model.heads[0](features)
        if self.params.loss == "mse":
            return F.mse_loss(student[:, : self.n_old], teacher)
        if self.on_new_inputs:
            return soft_cross_entropy(student[:, : self.n_old], teacher, self.params.temperature)
        return padded_soft_cross_entropy(student, teacher, self.params.temperature)


def _agreement(model: torch.nn.Module, reference: torch.Tensor, x: torch.Tensor) -> float:
    return int((predict(model, x) == reference).sum()) / len(reference)


def _losses(model: Any, old_test: UserData | None, new_test: UserData) -> dict[str, float | None]:
    """A token-level model's (a causal LM's) mean next-token loss on the held-out data, in
    the :data:`ACCURACY_KEYS` (``all``: over the tokens of both; no agreement)."""
    tokens = lambda d: int((d.y >= 0).sum())  # noqa: E731
    old = None if old_test is None else model.score(old_test)
    new = model.score(new_test)
    both = None if old_test is None else (old * tokens(old_test) + new * tokens(new_test)) / (tokens(old_test) + tokens(new_test))
    return dict(zip(ACCURACY_KEYS, (old, new, both, None)))


def _accuracies(model: torch.nn.Module, old_test: UserData | None, new_test: UserData, revision: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, float | None]:
    if getattr(model, "token_level", False):
        return _losses(model, old_test, new_test)
    acc = lambda x, y: _agreement(model, y, x)  # noqa: E731
    old = None if old_test is None else acc(old_test.x, old_test.y)
    new = acc(new_test.x, new_test.y)
    both = None if old_test is None else (old * old_test.n_samples + new * new_test.n_samples) / (old_test.n_samples + new_test.n_samples)
    agreement = None if revision is None else _agreement(model, revision[1], revision[0])
    return dict(zip(ACCURACY_KEYS, (old, new, both, agreement)))


def _chance_warning(method: str, hyper: HyperParams, after_new: float, new_classes: int, lr: float) -> str | None:
    """A warning when the new task is left near chance (``1 / new_classes`` + a fifth of the rest)."""
    chance = 1 / max(new_classes, 1)
    if new_classes < 2 or after_new > chance + 0.2 * (1 - chance):
        return None
    knob = STRENGTH.get(method)
    cause = (f"{knob}={getattr(hyper, knob):g} is likely too strong for lr {lr:g}: lower it (--set method.{knob}=...) "
             "or raise --lr / --epochs" if knob else f"lr {lr:g} or the epochs are likely too low")
    return (f"warning: the new task's accuracy after fine-tuning ({100 * after_new:.1f}%) is near chance "
            f"({100 * chance:.1f}% for {new_classes} classes): {method} kept the model from learning it; {cause}.")


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
    input_normalization: str = "auto",
    lora: Any = None,
) -> FinetuneResult:
    """Fine-tune a copy of ``model`` on ``new_data`` with ``method`` (see the module docstring).

    ``new_data`` and ``old_data`` are split (seeded) into train and held-out test parts
    (``test_fraction``). ``params``: the method's hyperparameters (a dataclass, or a
    mapping of overrides, ``lam`` or ``method.lam``); pseudo-rehearsal defaults to
    ``revision_source="old-inputs"`` with every old-task input as revision pool. Labels
    of ``new_data`` beyond the model's outputs are new classes: the head grows (see
    :func:`~forgetlab.user.wrap.resize_head`). ``input_normalization``: ``auto`` applies
    the normalisation ``model`` records (a forgetlab checkpoint's) to the raw inputs of
    every data set, ``none`` feeds them as given. ``model`` is never changed.

    A Hugging Face model (:class:`~forgetlab.user.transformers.HFModel`, data from
    :func:`~forgetlab.user.transformers.load_text_data`) is fine-tuned alike; ``lora``
    (a :class:`~forgetlab.user.transformers.LoRA`) trains low-rank adapters instead of
    its weights (with any method), merged into the weights afterwards. A causal LM's old
    and revision texts keep their own next tokens as targets, and it is scored by its mean
    next-token loss (``metric = "loss"``) instead of accuracy.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from forgetlab.user import WrappedModel, user_data
        >>> _ = torch.manual_seed(0)
        >>> model = WrappedModel(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)))
        >>> new = user_data(torch.randn(40, 4), torch.arange(40) % 2 + 2)  # classes 2, 3: new
        >>> result = finetune(model, new, method="pseudo-rehearsal", epochs=2)
        >>> result.n_outputs, result.before["old_accuracy"], result.before["revision_agreement"]
        (4, None, 1.0)
    """
    if method not in FINETUNE_METHODS:
        raise unknown_name("finetune method", method, FINETUNE_METHODS)
    original = wrap_model(model)
    token_level = original.token_level
    if lora is not None and not hasattr(original, "with_lora"):
        raise ConfigError(f"The 'lora' parameter (--lora) needs a Hugging Face model (peft adapters). Got a {type(original.module).__name__}.")
    align = getattr(original, "align_data", None)
    if align is not None:  # token data: one length, as the strategies concatenate batches
        new_data, old_data, revision_data = align([new_data, old_data, revision_data])
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    check_fits(new_data, original, check_labels=False)
    for d in (old_data, revision_data):
        if d is not None:
            check_fits(d, original)
    normalization, normalization_record = chosen_normalization(original, input_normalization)
    if normalization is not None:
        new_data, old_data, revision_data = (None if d is None else normalize_inputs(d, normalization)
                                             for d in (new_data, old_data, revision_data))
    n_outputs = max(original.n_outputs, new_data.n_classes)
    new_train, new_test = split_data(new_data, test_fraction, seed)
    old_train = old_test = revision_test = None
    if old_data is not None:
        old_train, old_test = split_data(old_data, test_fraction, seed)
    if revision_data is not None and old_data is None:
        revision_pool, revision_test_data = split_data(revision_data, test_fraction, seed)
        old_x, old_y, source = as_inputs(revision_pool.x), revision_pool.y if token_level else None, revision_data.source
        revision_test = None if token_level else as_inputs(revision_test_data.x)
    elif revision_data is not None:
        old_x, old_y, source = as_inputs(revision_data.x), revision_data.y if token_level else None, revision_data.source
    elif old_data is not None:
        old_x, old_y, source = as_inputs(old_train.x), old_train.y, old_train.source
    else:
        old_x, old_y, source = as_inputs(new_train.x), new_train.y if token_level else None, f"the new data's inputs ({new_data.source})"
        revision_test = None if token_level else as_inputs(new_test.x)  # an LM's targets are its texts: no agreement
    if old_y is None:
        old_y = predict(original, old_x)
    revision = None if revision_test is None else (revision_test, predict(original, revision_test))
    old_test_xy = (as_inputs(old_test.x), old_test.y) if old_test is not None else revision
    if old_test_xy is None:  # a causal LM without old data: the engine's curves use the held-out new texts
        old_test_xy = (as_inputs(new_test.x), new_test.y)
    extra = {"revision_source": "old-inputs", "revision_size": int(old_x.shape[0])} if method == "pseudo-rehearsal" else {}
    hyper = make_params(method, params, **extra)
    if method == "pseudo-rehearsal" and hyper.revision_source == "user":
        raise ConfigError(
            "The 'revision_source' parameter of PseudoRehearsal must not be 'user' in finetune: pass the inputs as "
            "revision_data (--revision-data) instead."
        )
    if method == "pseudo-rehearsal" and hyper.revision_source == "noise" and normalization is not None:
        raise ConfigError(
            "The 'revision_source' parameter of PseudoRehearsal must not be 'noise' when the model's input "
            "normalisation is applied (the noise would not be normalised): use old inputs (--revision-data), or "
            "pass --input-normalization none with inputs you normalised yourself."
        )
    stream = TaskStream(
        name="user", tasks=(
            _task("old task (given as data)", (old_x, old_y), old_test_xy, n_outputs),
            _task(f"new task: {new_data.source}", (as_inputs(new_train.x), new_train.y), (as_inputs(new_test.x), new_test.y), n_outputs),
        ),
        head_sizes=(n_outputs,), input_shape=tuple(old_x.shape[1:]), mean=(), std=(), augment=False,  # type: ignore[arg-type]
        class_names=tuple(str(k) for k in range(n_outputs)),
    )
    config = TrainConfig(optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed)
    if n_outputs > original.n_outputs:
        student = original.rewrap(resize_head(original.module, original.head_name, n_outputs, seed))
    else:
        student = copy.deepcopy(original)
    if lora is not None:
        student = student.with_lora(lora)
    student.source, student.input_normalization = "", original.input_normalization  # what it expects, as the original
    student.build_recipe = original.build_recipe  # how to rebuild it (save_user_model records the grown head)
    grew = method == "pseudo-rehearsal" and n_outputs > original.n_outputs
    on_new_inputs = revision_data is None and old_data is None or getattr(hyper, "revision_source", "") == "new-inputs"
    make = getattr(original, "make_strategy", None)  # a causal LM distils next-token distributions
    custom = None if make is None else make(method, hyper)
    if custom is not None:
        strategy = custom
    else:
        strategy = _OldOutputsRehearsal(hyper, original.n_outputs, on_new_inputs) if grew else create_strategy(method, hyper)
    before = _accuracies(original, old_test, new_test, revision)
    torch.manual_seed(seed)
    tick = time.perf_counter()
    train_stream(student, stream, config, device=device, strategy=strategy, n_learned_tasks=1)
    seconds = time.perf_counter() - tick
    if lora is not None:
        student = student.merged()
    student.eval()
    after = _accuracies(student, old_test, new_test, revision)
    warning = None if token_level else _chance_warning(method, hyper, after["new_accuracy"], len(set(new_data.y.tolist())), lr)
    notes = list(getattr(student, "notes", [])) + [note for note in [warning] if note]
    return FinetuneResult(
        model=student, method=method, params=hyper, before=before, after=after,
        old_source=None if old_data is None else old_data.source, revision_source=source,
        n_old_test=0 if old_test is None else old_test.n_samples, n_new_train=new_train.n_samples,
        n_new_test=new_test.n_samples, n_outputs_before=original.n_outputs, n_outputs=n_outputs,
        train_seconds=seconds, notes=notes, new_source=new_data.source,
        n_revision_test=0 if revision is None else int(revision[1].shape[0]), model_source=original.source,
        input_normalization=normalization_record, metric=original.metric,
        lora=None if lora is None else dataclasses.asdict(lora),
    )
