"""Freeze-k: from the second task on, the first k blocks do not learn (SPEC §3 freeze sweep).

Example:
    >>> Freeze(FreezeParams(n_blocks=2)).params.n_blocks
    2
"""

from __future__ import annotations


from torch import nn

from forgetlab.hyperparams import FreezeParams
from forgetlab.errors import IncompatibleError
from forgetlab.strategies.base import Strategy, StrategyContext


class Freeze(Strategy):
    """Freeze the first ``n_blocks`` blocks for every task after the first.

    Their parameters get ``requires_grad=False`` in ``before_task`` (so the optimizer,
    built afterwards, leaves them out) and their BatchNorm layers stay in eval mode
    (running statistics frozen too). ``after_task`` restores both, so between tasks the
    model is as the caller gave it. Heads always learn.

    Example:
        >>> Freeze(FreezeParams(n_blocks=1))
        Freeze(FreezeParams(n_blocks=1))
    """

    name = "freeze"
    title = "freeze the first k blocks after task 1 (BatchNorm statistics too)"
    params_type = FreezeParams
    prefix_neutral = True
    _restore: tuple = ()

    def before_task(self, model: nn.Module, context: StrategyContext) -> None:
        self._restore = ()
        if context.task_index == 0 or self.params.n_blocks == 0:
            return
        blocks = list(model.blocks.values())
        if self.params.n_blocks > len(blocks):
            raise IncompatibleError(
                f"The 'n_blocks' parameter of Freeze must be <= the model's number of blocks "
                f"({len(blocks)}: {', '.join(model.blocks)}). Got {self.params.n_blocks} instead."
            )
        frozen = blocks[: self.params.n_blocks]
        params = [p for block in frozen for p in block.parameters()]
        modules = [m for block in frozen for m in block.modules()]
        self._restore = ([(p, p.requires_grad) for p in params], [(m, m.training) for m in modules])
        for p in params:
            p.requires_grad_(False)
        for module in modules:
            module.eval()

    def after_task(self, model: nn.Module, context: StrategyContext) -> None:
        if self._restore:
            params, modules = self._restore
            for p, flag in params:
                p.requires_grad_(flag)
            for module, mode in modules:
                module.training = mode
        self._restore = ()
