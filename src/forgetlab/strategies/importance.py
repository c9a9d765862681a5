"""Parameter importances: the diagonal Fisher (EWC), MAS, and SI's path integral.

**Our Fisher** (docs/METHODS.md): the per-sample diagonal Fisher

    F_i = (1/N) sum_n ( d log p(y_n | x_n; theta) / d theta_i )^2

with ``y_n`` the true label (*empirical* Fisher) or a label drawn from the model's own
predictive distribution (*true* Fisher, one draw per input). Every example contributes
its own squared gradient. Some libraries square the gradient of a *batch-mean*
log-likelihood instead; that quantity is about batch-size times smaller (the batch
gradient averages B roughly independent per-sample gradients, so its square is ~1/B of
their mean square), so an EWC lambda tuned with one definition is not comparable
with the other.

Per-sample gradients come from one ``torch.autograd.grad`` call per example: simple,
exact for every model (BatchNorm in eval mode), and on 2 CPU cores as fast as
``torch.func.vmap`` over chunks for the MLPs used here (3.5 s vs 3.9 s for 1,000 MNIST
examples on a 2x400 MLP; vmap also costs a one-off ~6 s import of ``torch._dynamo``).
It costs tens of times a batch gradient (SPEC §7); EWC and MAS need it once per task, on
``fisher_samples`` examples. (Per-layer tricks are faster: ``forgetlab.analysis.fisher``.)

Example:
    >>> import torch
    >>> from forgetlab.models import create_model
    >>> model = create_model("mlp", input_shape=(1, 2, 2), head_sizes=(2,), width=3, depth=1)
    >>> fisher = diagonal_fisher(model, torch.randn(5, 1, 2, 2), 0, labels=torch.tensor([0, 1, 0, 1, 1]))
    >>> sorted(fisher) == sorted(n for n, _ in model.named_parameters())
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own mode afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode


def per_sample_gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    head_index: int,
    value: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield, example by example, ``{name: gradient}`` of ``value(logits_n, target_n)``
    w.r.t. every trainable parameter (zeros for parameters it does not touch).
    ``logits_n`` = the ``(K,)`` output of head ``head_index``. The model must be in the
    mode you want (BatchNorm: eval)."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    for n in range(inputs.shape[0]):
        logits = model(inputs[n : n + 1], head_index)[0]
        grads = torch.autograd.grad(value(logits, targets[n]), params, allow_unused=True, materialize_grads=True)
        yield {name: g for (name, _), g in zip(named, grads)}


def _log_likelihood(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(logits, dim=0)[y]


def diagonal_fisher(
    model: nn.Module,
    inputs: torch.Tensor,
    head_index: int,
    *,
    labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Per-sample diagonal Fisher ``F_i = mean_n (d log p(y_n|x_n) / d theta_i)^2`` of
    the trainable parameters, in eval mode, over prepared ``inputs`` ``(N, C, H, W)``.

    ``labels`` given: the empirical Fisher (true labels). ``labels=None``: the true
    Fisher with ``y_n`` drawn from the model's softmax (using ``generator``).
    """
    with eval_mode(model), torch.no_grad():
        if labels is None:
            probs = torch.cat([
                F.softmax(model(inputs[s : s + 1024], head_index), dim=1).cpu()
                for s in range(0, inputs.shape[0], 1024)
            ])
            labels = torch.multinomial(probs.double(), 1, generator=generator).squeeze(1).to(inputs.device)
    fisher = {name: torch.zeros_like(p) for name, p in model.named_parameters() if p.requires_grad}
    with eval_mode(model):
        for grads in per_sample_gradients(model, inputs, labels, head_index, _log_likelihood):
            for name, g in grads.items():
                fisher[name] += g.square()
    n = max(int(inputs.shape[0]), 1)
    return {name: f / n for name, f in fisher.items()}


def _squared_output_norm(logits: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    return logits.square().sum()


def mas_importance(model: nn.Module, inputs: torch.Tensor, head_index: int) -> dict[str, torch.Tensor]:
    """MAS importance ``Omega_i = mean_n | d ||f(x_n)||^2 / d theta_i |`` (Aljundi et al. 2018),
    ``f`` = logits of head ``head_index``, per sample, in eval mode.

    Example:
        >>> from forgetlab.models import create_model
        >>> model = create_model("mlp", input_shape=(1, 2, 2), head_sizes=(2,), width=3, depth=1)
        >>> bool(mas_importance(model, torch.randn(4, 1, 2, 2), 0)["heads.0.bias"].ge(0).all())
        True
    """
    importance = {name: torch.zeros_like(p) for name, p in model.named_parameters() if p.requires_grad}
    dummy = torch.zeros(inputs.shape[0], dtype=torch.long, device=inputs.device)
    with eval_mode(model):
        for grads in per_sample_gradients(model, inputs, dummy, head_index, _squared_output_norm):
            for name, g in grads.items():
                importance[name] += g.abs()
    n = max(int(inputs.shape[0]), 1)
    return {name: value / n for name, value in importance.items()}


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
