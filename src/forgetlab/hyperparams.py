"""Every method's hyperparameters: one frozen dataclass per method, and the name -> type
registry the run config checks ``method.*`` keys against.

They sit below :mod:`forgetlab.config` (which validates a ``[method]`` table when it is
read) and import nothing but :mod:`forgetlab.errors`; each strategy in
:mod:`forgetlab.strategies` names its own type here (``params_type``), and a test checks
that the two registries agree.

Example:
    >>> params_type("ewc")(lam=10).lam
    10.0
    >>> sorted(f.name for f in dataclasses.fields(params_type("replay+ewc")))
    ['ewc', 'replay']
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from forgetlab.errors import ConfigError, did_you_mean, unknown_name

# Field metadata of options added after the first config version: such a field is part of
# the run id only when it differs from its default (RunConfig.identity_dict), so that the
# runs stored before it existed keep their ids.
ID_WHEN_SET = {"run_id": "when-not-default"}

SEPARATOR = "+"  # joins the members of a composite method: "replay+ewc"
BUFFER_KINDS = ("reservoir", "class-balanced")
FISHER_KINDS = ("empirical", "true", "predicted")
REVISION_SOURCES = ("old-inputs", "new-inputs", "user", "noise")

_TYPE_NAMES = {float: "a number", int: "an integer", str: "a string", bool: "true or false"}


@dataclass(frozen=True)
class HyperParams:
    """Base of every strategy's hyperparameter dataclass: type checks, then :meth:`validate`.

    Subclasses are frozen dataclasses with ``float``/``int``/``str``/``bool`` fields and
    set ``owner`` (the method's display name used in error messages).

    Example:
        >>> NaiveParams()
        NaiveParams()
    """

    owner: ClassVar[str] = "Naive"
    # True for a method whose strategy replaces the batch loss (a composite holds at most one).
    replaces_batch_loss: ClassVar[bool] = False

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):
            value, hint = getattr(self, item.name), hints[item.name]
            if hint is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, item.name, float(value))
                continue
            wrong_bool = isinstance(value, bool) and hint is not bool
            if not isinstance(value, hint) or wrong_bool:
                raise ConfigError(
                    f"The {item.name!r} parameter of {self.owner} must be {_TYPE_NAMES.get(hint, hint)}. "
                    f"Got {value!r} instead."
                )
            if hint is float and value != value:
                raise ConfigError(f"The {item.name!r} parameter of {self.owner} must be a number. Got nan instead.")
        self.validate()

    def validate(self) -> None:
        """Check the values (raise :class:`ConfigError` naming parameter, rule and value)."""

    def check(self, condition: bool, name: str, rule: str) -> None:
        """Raise "The 'lam' parameter of EWC must be >= 0. Got -1.0 instead." unless ``condition``."""
        if not condition:
            raise ConfigError(f"The {name!r} parameter of {self.owner} must be {rule}. Got {getattr(self, name)!r} instead.")

    def check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        """Raise, listing ``choices`` and the closest one, unless the value is one of them."""
        value = getattr(self, name)
        if value not in choices:
            raise ConfigError(
                f"The {name!r} parameter of {self.owner} must be one of {', '.join(map(repr, choices))}. "
                f"Got {value!r} instead.{did_you_mean(value, choices)}"
            )


@dataclass(frozen=True)
class NaiveParams(HyperParams):
    """Naive fine-tuning has no hyperparameters."""

    owner: ClassVar[str] = "Naive"


@dataclass(frozen=True)
class FreezeParams(HyperParams):
    """Attributes: n_blocks: how many blocks, from the input side, stop learning after task 1."""

    owner: ClassVar[str] = "Freeze"
    n_blocks: int = 1

    def validate(self) -> None:
        self.check(self.n_blocks >= 0, "n_blocks", ">= 0")


@dataclass(frozen=True)
class L2Params(HyperParams):
    """Attributes: lam: strength of ``lam/2 ||theta - theta*||^2``."""

    owner: ClassVar[str] = "L2"
    lam: float = 0.01

    def validate(self) -> None:
        self.check(self.lam >= 0, "lam", ">= 0")


@dataclass(frozen=True)
class EWCParams(HyperParams):
    """Attributes:
        lam: strength of ``lam/2 sum_i F_i (theta_i - theta*_i)^2``.
        fisher: ``empirical`` (the data's labels), ``true`` (labels sampled from the
            model's softmax) or ``predicted`` (the model's argmax label, as van de Ven &
            Tolias' 2019 code).
        mode: ``separate`` (one penalty per old task) or ``online`` (one running Fisher,
            ``F <- gamma F + F_task``, anchored at the last task's weights).
        gamma: decay of the online Fisher (ignored when ``mode=separate``).
        fisher_samples: training examples of each task the Fisher is averaged over (0 = all).
    """

    owner: ClassVar[str] = "EWC"
    lam: float = 100.0
    fisher: str = "empirical"
    mode: str = "separate"
    gamma: float = 1.0
    fisher_samples: int = 1000

    def validate(self) -> None:
        self.check(self.lam >= 0, "lam", ">= 0")
        self.check_choice("fisher", FISHER_KINDS)
        self.check_choice("mode", ("separate", "online"))
        self.check(0 <= self.gamma <= 1, "gamma", "in [0, 1]")
        self.check(self.fisher_samples >= 0, "fisher_samples", ">= 0 (0 = all)")


@dataclass(frozen=True)
class SIParams(HyperParams):
    """Attributes:
        c: strength of ``c sum_k Omega_k (theta_k - theta*_k)^2``.
        xi: damping of ``Omega = omega / (Delta^2 + xi)``.
        gradient: the gradient in the path integral ``omega += -g * delta theta``: ``task``
            (of the task loss: the penalty's own gradient taken out, as Zenke et al.'s code)
            or ``total`` (of the whole loss, penalty included, as van de Ven & Tolias' 2019 code).
    """

    owner: ClassVar[str] = "SI"
    c: float = 1.0
    xi: float = 0.1
    gradient: str = dataclasses.field(default="task", metadata=ID_WHEN_SET)

    def validate(self) -> None:
        self.check(self.c >= 0, "c", ">= 0")
        self.check(self.xi > 0, "xi", "> 0")
        self.check_choice("gradient", ("task", "total"))


@dataclass(frozen=True)
class MASParams(HyperParams):
    """Attributes:
        lam: strength of ``lam sum_i Omega_i (theta_i - theta*_i)^2``.
        importance_samples: training examples of each task the importance is averaged over (0 = all).
    """

    owner: ClassVar[str] = "MAS"
    lam: float = 1.0
    importance_samples: int = 1000

    def validate(self) -> None:
        self.check(self.lam >= 0, "lam", ">= 0")
        self.check(self.importance_samples >= 0, "importance_samples", ">= 0 (0 = all)")


@dataclass(frozen=True)
class LwFParams(HyperParams):
    """Attributes:
        lam: weight ``lam_o`` of the distillation term.
        temperature: temperature T of the soft targets.
        weighting: ``sum`` (``CE + lam sum_h KD_h``, Li & Hoiem 2016) or ``vandeven2019``
            (``(1/t) CE + (1 - 1/t) lam mean_h T^2 KD'_h`` at task t, with ``KD'`` averaged over
            examples *and* outputs, as van de Ven & Tolias' 2019 code).
        distill_classes: single-head streams: the student's outputs the distillation covers:
            ``old`` (the old tasks' classes) or ``seen`` (every class seen so far, the new
            task's included, the teacher's probability of those being 0: van de Ven &
            Tolias 2019 in class-IL). Multi-head streams: each old head either way.
    """

    owner: ClassVar[str] = "LwF"
    replaces_batch_loss: ClassVar[bool] = True
    lam: float = 1.0
    temperature: float = 2.0
    weighting: str = dataclasses.field(default="sum", metadata=ID_WHEN_SET)
    distill_classes: str = dataclasses.field(default="old", metadata=ID_WHEN_SET)

    def validate(self) -> None:
        self.check(self.lam >= 0, "lam", ">= 0")
        self.check(self.temperature > 0, "temperature", "> 0")
        self.check_choice("weighting", ("sum", "vandeven2019"))
        self.check_choice("distill_classes", ("old", "seen"))


@dataclass(frozen=True)
class PseudoRehearsalParams(HyperParams):
    """Attributes:
        revision_source: where revision inputs come from: ``old-inputs`` (a buffer of
            old tasks' training inputs, without labels), ``new-inputs`` (the new task's
            own inputs), ``user`` (unlabelled inputs in ``revision_path``), ``noise``
            (uniformly random pixels, as Robins 1995's random pseudo-items).
        revision_size: inputs kept from the old tasks (``old-inputs``).
        revision_path: ``.npz`` / ``.npy`` / ``.pt`` file of unlabelled inputs (``user``):
            ``(N, C, H, W)``, ``(N, H, W, C)`` or ``(N, H, W)``; uint8 pixels or floats in [0, 1].
            The run hash holds the path, not the file's content.
        mode: ``mix`` (revision inputs are ``revision_fraction`` of every batch) or
            ``alternate`` (every other step is a whole revision batch, as spaCy's ``rehearse``).
        revision_fraction: share of revision inputs in a ``mix`` batch.
        temperature: temperature T of the soft targets (``loss=soft-ce``).
        loss: ``soft-ce`` (soft-target cross-entropy at T) or ``mse`` (on logits).
    """

    owner: ClassVar[str] = "PseudoRehearsal"
    replaces_batch_loss: ClassVar[bool] = True
    revision_source: str = "old-inputs"
    revision_size: int = 1000
    revision_path: str = ""
    mode: str = "mix"
    revision_fraction: float = 0.5
    temperature: float = 2.0
    loss: str = "soft-ce"

    def validate(self) -> None:
        self.check_choice("revision_source", REVISION_SOURCES)
        self.check(self.revision_size >= 1, "revision_size", ">= 1")
        self.check(
            self.revision_source != "user" or bool(self.revision_path), "revision_path",
            "a file of unlabelled inputs when revision_source='user'",
        )
        self.check_choice("mode", ("mix", "alternate"))
        self.check(0 < self.revision_fraction < 1, "revision_fraction", "in (0, 1)")
        self.check(self.temperature > 0, "temperature", "> 0")
        self.check_choice("loss", ("soft-ce", "mse"))


@dataclass(frozen=True)
class ReplayParams(HyperParams):
    """Attributes:
        buffer_size: examples kept from the old tasks, in total.
        fraction: share ``r`` of buffer examples in every training batch.
        buffer: ``reservoir`` (a uniform sample of all old examples) or
            ``class-balanced`` (the same number per (head, class)).
    """

    owner: ClassVar[str] = "Replay"
    replaces_batch_loss: ClassVar[bool] = True
    buffer_size: int = 1000
    fraction: float = 0.5
    buffer: str = "reservoir"

    def validate(self) -> None:
        self.check(self.buffer_size >= 1, "buffer_size", ">= 1")
        self.check(0 <= self.fraction < 1, "fraction", "in [0, 1)")
        self.check_choice("buffer", BUFFER_KINDS)


@dataclass(frozen=True)
class AGEMParams(HyperParams):
    """Attributes:
        buffer_size: examples kept from the old tasks, in total.
        memory_batch_size: buffer examples drawn for each step's reference gradient.
        buffer: ``reservoir`` or ``class-balanced`` (see Replay).
    """

    owner: ClassVar[str] = "AGEM"
    buffer_size: int = 1000
    memory_batch_size: int = 256
    buffer: str = "reservoir"

    def validate(self) -> None:
        self.check(self.buffer_size >= 1, "buffer_size", ">= 1")
        self.check(self.memory_batch_size >= 1, "memory_batch_size", ">= 1")
        self.check_choice("buffer", BUFFER_KINDS)


@dataclass(frozen=True)
class DERppParams(HyperParams):
    """Attributes:
        buffer_size: examples kept (reservoir over every example trained on, current task included).
        alpha: weight of the logit-matching term.
        beta: weight of the replayed-label term.
        memory_batch_size: buffer examples drawn for each of the two terms.
    """

    owner: ClassVar[str] = "DER++"
    replaces_batch_loss: ClassVar[bool] = True
    buffer_size: int = 1000
    alpha: float = 0.5
    beta: float = 0.5
    memory_batch_size: int = 128

    def validate(self) -> None:
        self.check(self.buffer_size >= 1, "buffer_size", ">= 1")
        self.check(self.alpha >= 0, "alpha", ">= 0")
        self.check(self.beta >= 0, "beta", ">= 0")
        self.check(self.memory_batch_size >= 1, "memory_batch_size", ">= 1")


@dataclass(frozen=True)
class JointParams(HyperParams):
    """Joint training has no hyperparameters: at every task it trains on the union of
    the training sets of all tasks so far (van de Ven & Tolias 2019's "Offline")."""

    owner: ClassVar[str] = "Joint"
    replaces_batch_loss: ClassVar[bool] = True


PARAMS: dict[str, type[HyperParams]] = {
    "naive": NaiveParams, "freeze": FreezeParams, "l2": L2Params, "ewc": EWCParams, "si": SIParams,
    "mas": MASParams, "lwf": LwFParams, "replay": ReplayParams, "pseudo-rehearsal": PseudoRehearsalParams,
    "agem": AGEMParams, "derpp": DERppParams, "joint": JointParams,
}


def params_type(name: str) -> type[HyperParams]:
    """The hyperparameter type of method ``name``, or of a composite (``"replay+ewc"``: one
    field per member, named as the member with ``_`` for ``-``); unknown names list the valid ones."""
    if SEPARATOR in name:
        return composite_params(tuple(name.split(SEPARATOR)))
    if name not in PARAMS:
        raise unknown_name("method", name, PARAMS)
    return PARAMS[name]


def field_name(method: str) -> str:
    """A composite's field for one member: ``pseudo-rehearsal`` -> ``pseudo_rehearsal``."""
    return method.replace("-", "_")


@functools.cache
def composite_params(names: tuple[str, ...]) -> type[HyperParams]:
    """The hyperparameters of the composite of ``names`` (one type per combination, so that
    ``type(params) is params_type`` holds)."""
    name = SEPARATOR.join(names)
    if len(names) < 2 or len(set(names)) != len(names) or "" in names:
        raise ConfigError(
            f"The 'method.name' parameter must name two or more different methods joined by '+' to combine them "
            f"(e.g. 'replay+ewc'). Got {name!r} instead."
        )
    members = [params_type(member) for member in names]
    losses = [member for member, params in zip(names, members) if params.replaces_batch_loss]
    if len(losses) > 1:
        raise ConfigError(
            f"The 'method.name' parameter combines {' and '.join(losses)}, which each replace "
            f"the batch loss; a composite may hold at most one such method. Got {name!r} instead."
        )
    return dataclasses.make_dataclass(
        "CompositeParams",
        [(field_name(member), params, dataclasses.field(default_factory=params)) for member, params in zip(names, members)],
        bases=(HyperParams,),
        frozen=True,
        namespace={"owner": name, "__module__": __name__, "__reduce__": _reduce},
    )


def _reduce(params: HyperParams) -> tuple[Any, ...]:
    """Pickle a composite's params by its method name (its class is made at run time)."""
    return _rebuild, (params.owner, tuple(getattr(params, item.name) for item in dataclasses.fields(params)))


def _rebuild(name: str, values: tuple[HyperParams, ...]) -> HyperParams:
    return params_type(name)(*values)
