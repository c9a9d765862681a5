"""Weight regularisers: L2 to the old weights, EWC (separate / online), SI, MAS.

Each is a :class:`QuadraticPenalty`: ``strength * sum_t sum_i w_t,i (theta_i - theta*_t,i)^2``
added to every step's loss, over every trainable parameter except heads that no earlier
task trained. They differ only in the importance ``w`` learnt at the end of a task
(:meth:`~QuadraticPenalty.importance`), in how it accumulates over tasks
(:meth:`~QuadraticPenalty.consolidate`) and in the strength.

Example:
    >>> import torch
    >>> p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    >>> quadratic_penalty([(p, torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.5]))]).item()
    3.0
"""

from __future__ import annotations


import torch
from torch import nn

from forgetlab.hyperparams import EWCParams, L2Params, MASParams, SIParams
from forgetlab.analysis.fisher import diagonal_fisher, mas_importance
from forgetlab.strategies.base import (
    Batch,
    Strategy,
    StrategyContext,
    penalised_parameters,
    snapshot,
    trained_heads,
)

Term = tuple[nn.Parameter, torch.Tensor, "torch.Tensor | None"]
Named = dict[str, torch.Tensor]


def quadratic_penalty(terms: list[Term]) -> torch.Tensor:
    """``sum_terms sum_i w_i (p_i - a_i)^2`` over ``(parameter, anchor, weight)`` terms
    (``weight=None`` means 1)."""
    total = terms[0][0].new_zeros(())
    for param, anchor, weight in terms:
        diff = (param - anchor).square()
        total = total + (diff.sum() if weight is None else (weight * diff).sum())
    return total


def task_inputs(context: StrategyContext, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prepared (not augmented) inputs and labels of ``n_samples`` random training examples
    of the current task (0 = all), for importance estimates."""
    task = context.task
    index = torch.arange(task.n_train)
    if 0 < n_samples < task.n_train:
        index = torch.sort(torch.randperm(task.n_train, generator=context.generator)[:n_samples]).values
    x = context.transform(task.train_x[index].to(context.device), train=False)
    return x, task.train_y[index].to(context.device)


def _add(old: Named | None, new: Named, decay: float = 1.0) -> Named:
    """``decay * old + new`` by name (names missing from ``old`` count as 0)."""
    if not old:
        return new
    return {name: value + decay * old[name] if name in old else value for name, value in new.items()}


def si_path_step(gradient: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """One step of SI's path integral: ``-g * (theta_after - theta_before)`` (Zenke et al. 2017).

    Example:
        >>> si_path_step(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([0.5])).item()
        1.0
    """
    return -gradient * (after - before)


def si_importance(omega: torch.Tensor, delta: torch.Tensor, xi: float) -> torch.Tensor:
    """SI's per-task importance ``omega / (delta^2 + xi)``; ``delta`` = the parameter's
    total change over the task, ``omega`` = its summed :func:`si_path_step`.

    Example:
        >>> si_importance(torch.tensor([1.0]), torch.tensor([1.0]), 1.0).item()
        0.5
    """
    return omega / (delta.square() + xi)


class QuadraticPenalty(Strategy):
    """The shared body of the weight penalties: subclasses supply :meth:`strength`,
    :meth:`importance` and, over their own ``_``-state, :meth:`anchors` / :meth:`consolidate`.

    ``before_task`` moves the state to the device and binds each (anchor, weight) to the
    model's parameters; ``penalty`` is ``strength() * quadratic_penalty(terms)``;
    ``after_task`` snapshots the penalised parameters and folds them, with the task's
    importance, into the state.
    """

    _terms: tuple[Term, ...] | list[Term] = ()

    def strength(self) -> float:
        """The factor in front of the quadratic sum (e.g. ``lam / 2``)."""
        raise NotImplementedError

    def importance(self, model: nn.Module, context: StrategyContext, params: dict[str, nn.Parameter]) -> Named | None:
        """Per-parameter weights learnt on the task just finished (``None`` = all 1)."""
        return None

    def anchors(self) -> list[tuple[Named, Named | None]]:
        """``(anchor, weight)`` pairs the penalty pulls towards (none before a task has ended)."""
        raise NotImplementedError

    def consolidate(self, anchor: Named, importance: Named | None) -> None:
        """Fold the finished task's weights and importance into the learned state."""
        raise NotImplementedError

    def before_task(self, model: nn.Module, context: StrategyContext) -> None:
        self.move_state(context.device)
        params = dict(model.named_parameters())
        self._terms = [
            (params[name], value, None if weight is None else weight[name])
            for anchor, weight in self.anchors()
            for name, value in anchor.items()
        ]

    def penalty(self, model: nn.Module, context: StrategyContext) -> torch.Tensor | None:
        if not self._terms:
            return None
        return self.strength() * quadratic_penalty(self._terms)

    def after_task(self, model: nn.Module, context: StrategyContext) -> None:
        params = penalised_parameters(model, trained_heads(context.stream, context.task_index + 1))
        importance = self.importance(model, context, params)
        if importance is not None:
            params = {name: p for name, p in params.items() if name in importance}
            importance = {name: importance[name] for name in params}
        self.consolidate(snapshot(params), importance)


# ------------------------------------------------------------------------ L2 -----

class L2(QuadraticPenalty):
    """``L + lam/2 ||theta - theta*||^2``, theta* = the weights after the previous task.

    Example:
        >>> L2(L2Params(lam=0.1)).params.lam
        0.1
    """

    name = "l2"
    title = "L2 distance to the previous task's weights"
    params_type = L2Params
    prefix_neutral = True
    anchor_: Named | None = None

    def strength(self) -> float:
        return 0.5 * self.params.lam

    def anchors(self) -> list[tuple[Named, Named | None]]:
        return [(self.anchor_, None)] if self.anchor_ else []

    def consolidate(self, anchor: Named, importance: Named | None) -> None:
        self.anchor_ = anchor


# ----------------------------------------------------------------------- EWC -----

class EWC(QuadraticPenalty):
    """Elastic Weight Consolidation (Kirkpatrick et al. 2017; online: Schwarz et al. 2018).

    ``L + lam/2 sum_t sum_i F_t,i (theta_i - theta*_t,i)^2`` with the exact per-sample
    diagonal Fisher of :func:`~forgetlab.analysis.fisher.diagonal_fisher` (``kind`` =
    ``params.fisher``) on ``fisher_samples`` training examples of the task.

    Example:
        >>> EWC(EWCParams(lam=1000.0, mode="online")).params.mode
        'online'
    """

    name = "ewc"
    title = "Elastic Weight Consolidation (per-sample diagonal Fisher)"
    params_type = EWCParams
    prefix_neutral = True
    terms_: list[dict[str, Named]] | None = None  # [{"anchor": ..., "fisher": ...}], one per task (online: one)

    def strength(self) -> float:
        return 0.5 * self.params.lam

    def anchors(self) -> list[tuple[Named, Named | None]]:
        return [(entry["anchor"], entry["fisher"]) for entry in self.terms_ or []]

    def importance(self, model: nn.Module, context: StrategyContext, params: dict[str, nn.Parameter]) -> Named:
        x, y = task_inputs(context, self.params.fisher_samples)
        return diagonal_fisher(
            model, x, y, head_index=context.task.head_index, kind=self.params.fisher, generator=context.generator
        )

    def consolidate(self, anchor: Named, importance: Named | None) -> None:
        assert importance is not None
        if self.params.mode == "online" and self.terms_:
            self.terms_ = [{"anchor": anchor, "fisher": _add(self.terms_[0]["fisher"], importance, self.params.gamma)}]
        else:
            self.terms_ = [*(self.terms_ or []), {"anchor": anchor, "fisher": importance}]


class _SummedImportance(QuadraticPenalty):
    """Shared by SI and MAS: one importance summed over tasks, anchored at the last task's weights."""

    importance_: Named | None = None
    anchor_: Named | None = None

    def anchors(self) -> list[tuple[Named, Named | None]]:
        return [(self.anchor_ or {}, self.importance_)] if self.importance_ else []

    def consolidate(self, anchor: Named, importance: Named | None) -> None:
        assert importance is not None
        self.importance_ = _add(self.importance_, importance)
        self.anchor_ = anchor


# ------------------------------------------------------------------------ SI -----

class SI(_SummedImportance):
    """Synaptic Intelligence (Zenke, Poole & Ganguli 2017).

    During a task, ``omega_k += -g_k * (theta_k after - before the step)`` at every step,
    with ``g`` the gradient of the task loss (``gradient=task``: the penalty's own gradient
    taken out, as in the original code) or of the whole loss (``gradient=total``: as van de
    Ven & Tolias' 2019 code, whose ``W`` reads ``p.grad`` after the backward pass of the
    loss with the penalty); after the task ``Omega_k += omega_k / (Delta_k^2 + xi)``, Delta =
    the parameter's change over the task. Penalty ``c sum_k Omega_k (theta_k - theta*_k)^2``.

    Example:
        >>> SI().params
        SIParams(c=1.0, xi=0.1, gradient='task')
    """

    name = "si"
    title = "Synaptic Intelligence (path-integral importance)"
    params_type = SIParams
    # During task 1 there is no penalty yet: c does not act, and the task-loss gradient is
    # the total gradient, so both gradient choices accumulate the same omega (xi does act:
    # it is in the Omega that after_task computes).
    first_task_free = ("c", "gradient")

    def strength(self) -> float:
        return self.params.c

    def before_task(self, model: nn.Module, context: StrategyContext) -> None:
        super().before_task(model, context)
        tracked = penalised_parameters(model, trained_heads(context.stream, context.task_index + 1))
        self._tracked = list(tracked.items())
        self._start = snapshot(tracked)
        self._omega = {name: torch.zeros_like(p) for name, p in tracked.items()}
        self._pending: list[tuple[str, nn.Parameter, torch.Tensor, torch.Tensor]] = []

    def after_backward(self, model: nn.Module, batch: Batch, context: StrategyContext) -> None:
        pending = []
        for name, p in self._tracked:
            if p.grad is None:
                continue
            task_grad = p.grad.detach().clone()
            if self.params.gradient == "task" and self.importance_ and name in self.importance_:  # remove d(penalty)/d(theta)
                task_grad -= 2 * self.params.c * self.importance_[name] * (p.detach() - self.anchor_[name])
            pending.append((name, p, task_grad, p.detach().clone()))
        self._pending = pending

    def after_step(self, model: nn.Module, context: StrategyContext) -> None:
        for name, p, grad, before in self._pending:
            self._omega[name] += si_path_step(grad, before, p.detach())
        self._pending = []

    def importance(self, model: nn.Module, context: StrategyContext, params: dict[str, nn.Parameter]) -> Named:
        return {
            name: si_importance(self._omega[name], p.detach() - self._start[name], self.params.xi)
            for name, p in self._tracked
        }

    def after_task(self, model: nn.Module, context: StrategyContext) -> None:
        super().after_task(model, context)
        self._omega, self._start, self._pending = {}, {}, []


# ----------------------------------------------------------------------- MAS -----

class MAS(_SummedImportance):
    """Memory Aware Synapses (Aljundi et al. 2018): importance = mean over examples of
    ``|d ||f(x)||^2 / d theta|`` (``f`` = the task's head logits; exact per sample,
    :func:`~forgetlab.analysis.fisher.mas_importance`), summed over tasks; penalty
    ``lam sum_i Omega_i (theta_i - theta*_i)^2`` around the last task's weights.

    Example:
        >>> MAS().params.lam
        1.0
    """

    name = "mas"
    title = "Memory Aware Synapses (output-sensitivity importance)"
    params_type = MASParams
    prefix_neutral = True

    def strength(self) -> float:
        return self.params.lam

    def importance(self, model: nn.Module, context: StrategyContext, params: dict[str, nn.Parameter]) -> Named:
        x, _ = task_inputs(context, self.params.importance_samples)
        return mas_importance(model, x, head_index=context.task.head_index)
