"""Mitigation methods (strategies, SPEC §4) and their registry.

Example:
    >>> from forgetlab.strategies import STRATEGIES, create_strategy
    >>> create_strategy("ewc", EWCParams(lam=10.0))
    EWC(EWCParams(lam=10.0, fisher='empirical', mode='separate', gamma=1.0, fisher_samples=1000))
    >>> "pseudo-rehearsal" in STRATEGIES
    True
"""

from __future__ import annotations

import dataclasses

from forgetlab.errors import unknown_name
from forgetlab.strategies.base import (
    Batch,
    HyperParams,
    Naive,
    NaiveParams,
    Strategy,
    StrategyContext,
)
from forgetlab.strategies.distillation import LwF, LwFParams, PseudoRehearsal, PseudoRehearsalParams
from forgetlab.strategies.freeze import Freeze, FreezeParams
from forgetlab.strategies.regularizers import EWC, L2, MAS, SI, EWCParams, L2Params, MASParams, SIParams
from forgetlab.strategies.rehearsal import AGEM, AGEMParams, DERpp, DERppParams, Replay, ReplayParams

STRATEGIES: dict[str, type[Strategy]] = {
    "naive": Naive,
    "freeze": Freeze,
    "l2": L2,
    "ewc": EWC,
    "si": SI,
    "mas": MAS,
    "lwf": LwF,
    "replay": Replay,
    "pseudo-rehearsal": PseudoRehearsal,
    "agem": AGEM,
    "derpp": DERpp,
}


#: Methods that do nothing during the first task except in ``after_task`` (checked hook by
#: hook): their run's task-1 training equals a naive run's, so a sweep may start them from
#: the naive run's task-1 checkpoint (:func:`forgetlab.experiments.execute`). Not here: SI
#: (path integral accumulated while training), DER++ (stores logits while training),
#: pseudo-rehearsal (prepares its revision pool in task 1's ``before_task``).
PREFIX_NEUTRAL: frozenset[str] = frozenset({"naive", "freeze", "l2", "ewc", "mas", "lwf", "replay", "agem"})


def strategy_class(name: str) -> type[Strategy]:
    """The registered strategy called ``name``; an unknown name lists the valid ones."""
    if name not in STRATEGIES:
        raise unknown_name("method", name, STRATEGIES)
    return STRATEGIES[name]


def create_strategy(name: str, params: HyperParams | None = None) -> Strategy:
    """A fresh strategy (no learned state) with ``params`` (default: the method's defaults)."""
    return strategy_class(name)(params)


def format_params(params: HyperParams) -> str:
    """``lam=100.0 fisher=empirical ...``: hyperparameters as one line."""
    items = []
    for item in dataclasses.fields(params):
        value = getattr(params, item.name)
        items.append(f"{item.name}={value!r}" if value == "" else f"{item.name}={value}")
    return " ".join(items)


def list_methods() -> dict[str, str]:
    """Registered method names mapped to a title and their hyperparameters with defaults.

    Example:
        >>> list_methods()["l2"]
        "L2 distance to the previous task's weights  lam=0.01"
    """
    out = {}
    for name, cls in STRATEGIES.items():
        defaults = format_params(cls.params_type())
        out[name] = f"{cls.title}  {defaults}" if defaults else cls.title
    return out


__all__ = [
    "AGEM", "AGEMParams", "Batch", "DERpp", "DERppParams", "EWC", "EWCParams", "Freeze", "FreezeParams",
    "HyperParams", "L2", "L2Params", "LwF", "LwFParams", "MAS", "MASParams", "Naive", "NaiveParams",
    "PREFIX_NEUTRAL", "PseudoRehearsal", "PseudoRehearsalParams", "Replay", "ReplayParams", "SI", "SIParams", "STRATEGIES",
    "Strategy", "StrategyContext", "create_strategy", "format_params", "list_methods", "strategy_class",
]
