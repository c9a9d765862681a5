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
from forgetlab.hyperparams import SEPARATOR
from forgetlab.strategies.composite import Composite, composite_class
from forgetlab.strategies.distillation import LwF, LwFParams, PseudoRehearsal, PseudoRehearsalParams
from forgetlab.strategies.freeze import Freeze, FreezeParams
from forgetlab.strategies.regularizers import EWC, L2, MAS, SI, EWCParams, L2Params, MASParams, SIParams
from forgetlab.strategies.rehearsal import AGEM, AGEMParams, DERpp, DERppParams, Joint, JointParams, Replay, ReplayParams

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Naive, Freeze, L2, EWC, SI, MAS, LwF, Replay, PseudoRehearsal, AGEM, DERpp, Joint)
}


def strategy_class(name: str) -> type[Strategy]:
    """The registered strategy called ``name``, or the :mod:`~forgetlab.strategies.composite`
    of several joined by ``+`` (``"replay+ewc"``); an unknown name lists the valid ones."""
    if SEPARATOR in name:
        return composite_class(tuple(strategy_class(part) for part in name.split(SEPARATOR)))
    if name not in STRATEGIES:
        raise unknown_name("method", name, STRATEGIES)
    return STRATEGIES[name]


def create_strategy(name: str, params: HyperParams | None = None) -> Strategy:
    """A fresh strategy (no learned state) with ``params`` (default: the method's defaults)."""
    return strategy_class(name)(params)


def format_params(params: HyperParams) -> str:
    """``lam=100.0 fisher=empirical ...``: hyperparameters as one line (a composite's as ``ewc.lam=...``)."""
    return " ".join(_param_items(params, ""))


def _param_items(params: HyperParams, prefix: str) -> list[str]:
    items = []
    for item in dataclasses.fields(params):
        value = getattr(params, item.name)
        if isinstance(value, HyperParams):
            items += _param_items(value, f"{prefix}{item.name}.")
        else:
            items.append(f"{prefix}{item.name}={value!r}" if value == "" else f"{prefix}{item.name}={value}")
    return items


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
    "AGEM", "AGEMParams", "Batch", "Composite", "DERpp", "DERppParams", "EWC", "EWCParams", "Freeze", "FreezeParams",
    "HyperParams", "Joint", "JointParams", "L2", "L2Params", "LwF", "LwFParams", "MAS", "MASParams", "Naive", "NaiveParams",
    "PseudoRehearsal", "PseudoRehearsalParams", "Replay", "ReplayParams", "SI", "SIParams", "STRATEGIES",
    "Strategy", "StrategyContext", "create_strategy", "format_params", "list_methods", "strategy_class",
]
