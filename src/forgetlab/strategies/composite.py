"""Two (or more) methods at once: ``replay+ewc`` (SPEC §4; replay + EWC is a common pairing).

A composite calls its members' hooks in the order of its name; their penalties are
summed; its state is each member's state under the member's name. Each member keeps
its own hyperparameters: the composite's ``params`` has one field per member
(``--set method.ewc.lam=100 --set method.replay.buffer_size=200``; a ``-`` in a
member's name is a ``_`` in the field, ``method.pseudo_rehearsal.*``). At most one
member may replace the batch loss (replay, LwF, pseudo-rehearsal and DER++ do): two
such losses have no defined combination.

Example:
    >>> from forgetlab.strategies import strategy_class
    >>> cls = strategy_class("replay+ewc")
    >>> cls.name, cls.prefix_neutral, [m.name for m in cls().members]
    ('replay+ewc', True, ['replay', 'ewc'])
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import torch
from torch import nn

from forgetlab.errors import IncompatibleError
from forgetlab.hyperparams import SEPARATOR, params_type
from forgetlab.strategies.base import Batch, Strategy, StrategyContext



class Composite(Strategy):
    """Its members' hooks in order, penalties summed, state per member (see the module).

    Example:
        >>> from forgetlab.strategies import create_strategy
        >>> both = create_strategy("replay+ewc")
        >>> both.params.ewc.lam, both.params.replay.buffer_size
        (100.0, 1000)
    """

    member_types: ClassVar[tuple[type[Strategy], ...]] = ()
    loss_member: ClassVar[int | None] = None  # the member whose batch_loss is used (None: the default loss)

    @property
    def members(self) -> tuple[Strategy, ...]:
        """The member strategies, built from ``params`` on first use (the constructor stores params only)."""
        if "_members" not in vars(self):
            self._members = tuple(
                cls(getattr(self.params, item.name)) for cls, item in zip(self.member_types, dataclasses.fields(self.params))
            )
        return self._members

    def before_task(self, model: nn.Module, context: StrategyContext) -> None:
        for member in self.members:
            member.before_task(model, context)

    def batch_loss(self, model: nn.Module, batch: Batch, context: StrategyContext) -> torch.Tensor:
        if self.loss_member is None:
            return super().batch_loss(model, batch, context)
        return self.members[self.loss_member].batch_loss(model, batch, context)

    def penalty(self, model: nn.Module, context: StrategyContext) -> torch.Tensor | None:
        total = None
        for member in self.members:
            term = member.penalty(model, context)
            if term is not None:
                total = term if total is None else total + term
        return total

    def after_backward(self, model: nn.Module, batch: Batch, context: StrategyContext) -> None:
        for member in self.members:
            member.after_backward(model, batch, context)

    def after_step(self, model: nn.Module, context: StrategyContext) -> None:
        for member in self.members:
            member.after_step(model, context)

    def after_task(self, model: nn.Module, context: StrategyContext) -> None:
        for member in self.members:
            member.after_task(model, context)

    def state_dict(self) -> dict[str, Any]:
        return {member.name: state for member in self.members if (state := member.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = [member.name for member in self.members]
        unknown = sorted(set(state) - set(names))
        if unknown:
            raise IncompatibleError(
                f"The checkpoint's strategy state has keys {sorted(state)}; {self.name} expects member "
                f"states among {names}. Was it written by another method?"
            )
        for member in self.members:
            member.load_state_dict(state.get(member.name, {}))


@functools.cache
def composite_class(member_types: tuple[type[Strategy], ...]) -> type[Composite]:
    """The composite strategy class of ``member_types`` (one class per combination, so that
    ``type(params) is params_type`` holds); :func:`forgetlab.strategies.strategy_class`
    calls it for a name with a ``+``."""
    name = SEPARATOR.join(cls.name for cls in member_types)
    params = params_type(name)  # refuses repeats and two batch-loss methods
    losses = [i for i, cls in enumerate(member_types) if cls.batch_loss is not Strategy.batch_loss]
    return type("Composite", (Composite,), {
        "__module__": __name__, "__doc__": Composite.__doc__, "name": name, "params_type": params,
        "title": " + ".join(cls.title for cls in member_types), "member_types": member_types,
        "loss_member": losses[0] if losses else None, "prefix_neutral": all(cls.prefix_neutral for cls in member_types),
    })
