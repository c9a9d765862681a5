"""Loss functions shared by the strategies: grouped multi-head cross-entropy, distillation.

Example:
    >>> import torch
    >>> z = torch.tensor([[2.0, 0.0]])
    >>> round(soft_cross_entropy(z, z, temperature=1.0).item(), 4)  # entropy of softmax(z)
    0.3653
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def grouped_cross_entropy(
    features: torch.Tensor, targets: torch.Tensor, heads: torch.Tensor, model: nn.Module, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy of examples that may belong to different heads.

    The features ``(N, D)`` come from one ``model.features`` pass over the whole batch;
    each example's logits come from its own head ``heads[n]`` (label smoothing, if any,
    spreads over that head's outputs). With one head this is
    ``F.cross_entropy(head(features), targets, label_smoothing=label_smoothing)``.

    Example:
        >>> from forgetlab.models import create_model
        >>> model = create_model("mlp", input_shape=(1, 2, 2), head_sizes=(2, 3), width=4, depth=1)
        >>> x = torch.randn(4, 1, 2, 2)
        >>> loss = grouped_cross_entropy(model.features(x), torch.tensor([0, 1, 2, 0]), torch.tensor([0, 0, 1, 1]), model)
        >>> loss.shape
        torch.Size([])
    """
    groups = heads.unique().tolist()
    if len(groups) == 1:
        return F.cross_entropy(model.heads[groups[0]](features), targets, label_smoothing=label_smoothing)
    total = features.new_zeros(())
    for head in groups:
        mask = heads == head
        total = total + F.cross_entropy(
            model.heads[head](features[mask]), targets[mask], reduction="sum", label_smoothing=label_smoothing
        )
    return total / targets.shape[0]


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft-target cross-entropy at temperature T, mean over the batch:
    ``-mean_n sum_k softmax(t_n / T)_k log softmax(s_n / T)_k`` (no T^2 factor).

    Example:
        >>> s = torch.tensor([[0.0, 0.0]]); t = torch.tensor([[0.0, 100.0]])
        >>> round(soft_cross_entropy(s, t, temperature=1.0).item(), 4)  # -log(1/2)
        0.6931
    """
    targets = F.softmax(teacher_logits / temperature, dim=1)
    return -(targets * F.log_softmax(student_logits / temperature, dim=1)).sum(1).mean()


def old_outputs(stream, task_index: int) -> dict[int, list[int]]:
    """For every head trained before ``task_index``, the outputs (labels) those tasks used.

    Multi-head: each old head with all its labels; single-head: the shared head with the
    old classes only.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> tasks = [NS(head_index=0, train_y=torch.tensor([0, 1])), NS(head_index=0, train_y=torch.tensor([2, 3]))]
        >>> old_outputs(NS(tasks=tasks), 1)
        {0: [0, 1]}
    """
    outputs: dict[int, set[int]] = {}
    for task in stream.tasks[:task_index]:
        outputs.setdefault(task.head_index, set()).update(torch.unique(task.train_y).tolist())
    return {head: sorted(labels) for head, labels in sorted(outputs.items())}
