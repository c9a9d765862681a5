"""Weight regularisers: L2 to the old weights, EWC (separate / online), SI, MAS.

Each adds ``penalty = sum over anchors of w_i (theta_i - theta*_i)^2`` (times its
strength) to every step's loss; they differ in the importance ``w``. The penalty covers
every trainable parameter except heads that no earlier task trained.

Example:
    >>> import torch
    >>> p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    >>> quadratic_penalty([(p, torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.5]))]).item()
    3.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from forgetlab.strategies.base import (
    Batch,
    HyperParams,
    Strategy,
    StrategyContext,
    check_state_keys,
    penalised_parameters,
    snapshot,
    to_device,
    trained_heads,
)
from forgetlab.strategies.importance import diagonal_fisher, mas_importance, si_importance, si_path_step

Term = tuple[nn.Parameter, torch.Tensor, "torch.Tensor | None"]


def quadratic_penalty(terms: list[Term]) -> torch.Tensor:
    """``sum_terms sum_i w_i (p_i - a_i)^2`` over ``(parameter, anchor, weight)`` terms
    (``weight=None`` means 1)."""
    total = terms[0][0].new_zeros(())
    for param, anchor, weight in terms:
        diff = (param - anchor).square()
        total = total + (diff.sum() if weight is None else (weight * diff).sum())
    return total


def bind_terms(model: nn.Module, anchor: dict[str, torch.Tensor], weight: dict[str, torch.Tensor] | None) -> list[Term]:
    """Pair the model's parameters with their anchors (and weights), by name."""
    params = dict(model.named_parameters())
    return [(params[name], value, None if weight is None else weight[name]) for name, value in anchor.items()]


def task_inputs(context: StrategyContext, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prepared (not augmented) inputs and labels of ``n_samples`` random training examples
    of the current task (0 = all), for importance estimates."""
    task = context.task
    index = torch.arange(task.n_train)
    if 0 < n_samples < task.n_train:
        index = torch.sort(torch.randperm(task.n_train, generator=context.generator)[:n_samples]).values
    x = context.transform(task.train_x[index].to(context.device), train=False)
    return x, task.train_y[index].to(context.device)


def _add(old: dict[str, torch.Tensor] | None, new: dict[str, torch.Tensor], decay: float = 1.0) -> dict[str, torch.Tensor]:
    """``decay * old + new`` by name (names missing from ``old`` count as 0)."""
    if not old:
        return new
    return {name: value + decay * old[name] if name in old else value for name, value in new.items()}


# ------------------------------------------------------------------------ L2 -----

@dataclass(frozen=True)
class L2Params(HyperParams):
    """Attributes: lam: strength of ``lam/2 ||theta - theta*||^2``."""

    owner: ClassVar[str] = "L2"
    lam: float = 0.01

    def validate(self) -> None:
        self.check(self.lam >= 0, "lam", ">= 0")


class L2(Strategy):
    """``L + lam/2 ||theta - theta*||^2``, theta* = the weights after the previous task.

    Example:
        >>> L2(L2Params(lam=0.1)).params.lam
        0.1
    """

    name = "l2"
    title = "L2 distance to the previous task's weights"
    params_type = L2Params
    _terms: tuple[Term, ...] | list[Term] = ()
    anchor_: dict[str, torch.Tensor] | None = None

    def before_task(self, model: nn.Module, context: StrategyContext) -> None:
        self._terms = []
        if self.anchor_:
            self.anchor_ = to_device(self.anchor_, context.device)
            self._terms = bind_terms(model, self.anchor_, None)

    def penalty(self, model: nn.Module, context: StrategyContext) -> torch.Tensor | None:
        if not self._terms:
            return None
        return 0.5 * self.params.lam * quadratic_penalty(self._terms)

    def after_task(self, model: nn.Module, context: StrategyContext) -> None:
        self.anchor_ = snapshot(penalised_parameters(model, trained_heads(context.stream, context.task_index + 1)))

    def state_dict(self) -> dict[str, Any]:
        return {} if self.anchor_ is None else {"anchor": self.anchor_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            check_state_keys(self, state, {"anchor"})
            self.anchor_ = dict(state["anchor"])


# ----------------------------------------------------------------------- EWC -----

@dataclass(frozen=True)
class EWCParams(HyperParams):
    """Attributes:
        lam: strength of ``lam/2 sum_i F_i (theta_i - theta*_i)^2``.
        fisher: ``empirical`` (true labels) or ``true`` (labels sampled from the model).
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
        self.check_choice("fisher", ("empirical", "true"))
        self.check_choice("mode", ("separate", "online"))
        self.check(0 <= self.gamma <= 1, "gamma", "in [0, 1]")
        self.check(self.fisher_samples >= 0, "fisher_samples", ">= 0 (0 = all)")


class EWC(Strategy):
    """Elastic Weight Consolidation (Kirkpatrick et al. 2017; online: Schwarz et al. 2018).

    ``L + lam/2 sum_t sum_i F_t,i (theta_i - theta*_t,i)^2`` with the per-sample diagonal
    Fisher of :func:`~forgetlab.strategies.importance.diagonal_fisher`.

    Example:
        >>> EWC(EWCParams(lam=1000.0, mode="online")).params.mode
        'online'
    """

    name = "ewc"
    title = "Elastic Weight Consolidation (per-sample diagonal Fisher)"
    params_type = EWCParams
    _terms: tuple[Term, ...] | list[Term] = ()
    terms_: list[dict[str, dict[str, torch.Tensor]]] | None = None  # [{"anchor": ..., "fisher": ...}]

    def before_task(self, model: nn.Module, context: StrategyContext) -> None:
        self._terms = []
        for entry in self.terms_ or []:
            entry["anchor"] = to_device(entry["anchor"], context.device)
            entry["fisher"] = to_device(entry["fisher"], context.device)
            self._terms += bind_terms(model, entry["anchor"], entry["fisher"])

    def penalty(self, model: nn.Module, context: StrategyContext) -> torch.Tensor | None:
        if not self._terms:
            return None
        return 0.5 * self.params.lam * quadratic_penalty(self._terms)

    def after_task(self, model: nn.Module, context: StrategyContext) -> None:
        x, y = task_inputs(context, self.params.fisher_samples)
        labels = y if self.params.fisher == "empirical" else None
        fisher = diagonal_fisher(model, x, context.task.head_index, labels=labels, generator=context.generator)
        params = penalised_parameters(model, trained_heads(context.stream, context.task_index + 1))
        entry = {"anchor": snapshot(params), "fisher": {name: fisher[name] for name in params}}
        if self.params.mode == "online" and self.terms_:
            entry["fisher"] = _add(self.terms_[0]["fisher"], entry["fisher"], self.params.gamma)
            self.terms_ = [entry]
        else:
            self.terms_ = [*(self.terms_ or []), entry]

    def state_dict(self) -> dict[str, Any]:
        return {} if self.terms_ is None else {"terms": self.terms_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            check_state_keys(self, state, {"terms"})
            self.terms_ = [{"anchor": dict(e["anchor"]), "fisher": dict(e["fisher"])} for e in state["terms"]]


class _ImportanceStrategy(Strategy):
    """Shared by SI and MAS: a per-parameter importance and an anchor, learnt at the end of
    each task, bound to the model's parameters as penalty terms, saved in checkpoints."""

    _terms: tuple[Term, ...] | list[Term] = ()
    importance_: dict[str, torch.Tensor] | None = None
    anchor_: dict[str, torch.Tensor] | None = None

    def _bind_importance(self, model: nn.Module, device: torch.device) -> list[Term]:
        """Move ``anchor_`` / ``importance_`` to ``device`` and bind them to the model's
        parameters (no terms before the first task has ended)."""
        if not self.importance_:
            return []
        self.importance_ = to_device(self.importance_, device)
        self.anchor_ = to_device(self.anchor_ or {}, device)
        return bind_terms(model, self.anchor_, self.importance_)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.importance_ is None else {"importance": self.importance_, "anchor": self.anchor_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            check_state_keys(self, state, {"importance", "anchor"})
            self.importance_, self.anchor_ = dict(state["importance"]), dict(state["anchor"])


# ------------------------------------------------------------------------ SI -----

@dataclass(frozen=True)
class SIParams(HyperParams):
    """Attributes:
        c: strength of ``c sum_k Omega_k (theta_k - theta*_k)^2``.
        xi: damping of ``Omega = omega / (Delta^2 + xi)``.
    """

    owner: ClassVar[str] = "SI"
    c: float = 1.0
    xi: float = 0.1

    def validate(self) -> None:
        self.check(self.c >= 0, "c", ">= 0")
        self.check(self.xi > 0, "xi", "> 0")


class SI(_ImportanceStrategy):
    """Synaptic Intelligence (Zenke, Poole & Ganguli 2017).

    During a task, ``omega_k += -g_k * (theta_k after - before the step)`` at every step,
    with ``g`` the gradient of the task loss (the penalty's own gradient taken out, as in
    the original code); after the task ``Omega_k += omega_k / (Delta_k^2 + xi)``, Delta =
    the parameter's change over the task. Penalty ``c sum_k Omega_k (theta_k - theta*_k)^2``.

    Example:
        >>> SI().params
        SIParams(c=1.0, xi=0.1)
    """

    name = "si"
    title = "Synaptic Intelligence (path-integral importance)"
    params_type = SIParams

    def before_task(self, model: nn.Module, context: StrategyContext) -> None:
        self._terms = self._bind_importance(model, context.device)
        tracked = penalised_parameters(model, trained_heads(context.stream, context.task_index + 1))
        self._tracked = list(tracked.items())
        self._start = snapshot(tracked)
        self._omega = {name: torch.zeros_like(p) for name, p in tracked.items()}
        self._pending: list[tuple[str, nn.Parameter, torch.Tensor, torch.Tensor]] = []

    def penalty(self, model: nn.Module, context: StrategyContext) -> torch.Tensor | None:
        if not self._terms:
            return None
        return self.params.c * quadratic_penalty(self._terms)

    def after_backward(self, model: nn.Module, batch: Batch, context: StrategyContext) -> None:
        pending = []
        for name, p in self._tracked:
            if p.grad is None:
                continue
            task_grad = p.grad.detach().clone()
            if self.importance_ and name in self.importance_:  # remove d(penalty)/d(theta)
                task_grad -= 2 * self.params.c * self.importance_[name] * (p.detach() - self.anchor_[name])
            pending.append((name, p, task_grad, p.detach().clone()))
        self._pending = pending

    def after_step(self, model: nn.Module, context: StrategyContext) -> None:
        for name, p, grad, before in self._pending:
            self._omega[name] += si_path_step(grad, before, p.detach())
        self._pending = []

    def after_task(self, model: nn.Module, context: StrategyContext) -> None:
        tracked = dict(self._tracked)
        new = {
            name: si_importance(self._omega[name], p.detach() - self._start[name], self.params.xi)
            for name, p in tracked.items()
        }
        self.importance_ = _add(self.importance_, new)
        self.anchor_ = snapshot(tracked)
        self._omega, self._start, self._pending = {}, {}, []


# ----------------------------------------------------------------------- MAS -----

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


class MAS(_ImportanceStrategy):
    """Memory Aware Synapses (Aljundi et al. 2018): importance = mean over examples of
    ``|d ||f(x)||^2 / d theta|`` (``f`` = the task's head logits), summed over tasks;
    penalty ``lam sum_i Omega_i (theta_i - theta*_i)^2`` around the last task's weights.

    Example:
        >>> MAS().params.lam
        1.0
    """

    name = "mas"
    title = "Memory Aware Synapses (output-sensitivity importance)"
    params_type = MASParams

    def before_task(self, model: nn.Module, context: StrategyContext) -> None:
        self._terms = self._bind_importance(model, context.device)

    def penalty(self, model: nn.Module, context: StrategyContext) -> torch.Tensor | None:
        if not self._terms:
            return None
        return self.params.lam * quadratic_penalty(self._terms)

    def after_task(self, model: nn.Module, context: StrategyContext) -> None:
        x, _ = task_inputs(context, self.params.importance_samples)
        importance = mas_importance(model, x, context.task.head_index)
        params = penalised_parameters(model, trained_heads(context.stream, context.task_index + 1))
        self.importance_ = _add(self.importance_, {name: importance[name] for name in params})
        self.anchor_ = snapshot(params)
