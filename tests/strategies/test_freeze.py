"""Freeze-k: frozen blocks (weights and BatchNorm statistics) do not change on later tasks."""

from __future__ import annotations

import pytest
import torch
from strategy_helpers import make_context, tiny_model

from forgetlab.config import TrainConfig
from forgetlab.engine import train_stream
from forgetlab.errors import IncompatibleError
from forgetlab.strategies import Freeze, FreezeParams


class _Snapshot(Freeze):
    """Records the model's state when task 2 starts (after freezing)."""

    def before_task(self, model, context):
        super().before_task(model, context)
        if context.task_index == 1:
            self.at_task2_ = {k: v.clone() for k, v in model.state_dict().items()}
            self.trainable_ = [name for name, p in model.named_parameters() if p.requires_grad]


def test_frozen_blocks_and_their_batchnorm_statistics_stay_put(tiny_streams):
    stream = tiny_streams["multi"]
    model = tiny_model(stream, depth=3, batch_norm=True)
    strategy = _Snapshot(FreezeParams(n_blocks=2))
    train_stream(model, stream, TrainConfig(optimizer="adam", lr=0.01, steps=10, batch_size=32), strategy=strategy)
    after = model.state_dict()
    for key, before in strategy.at_task2_.items():
        unchanged = torch.equal(after[key], before)
        if key.startswith(("blocks.fc1.", "blocks.fc2.")):
            assert unchanged, key  # weights, BN affine parameters and running statistics
        elif key.startswith(("blocks.fc3.", "heads.1.")) and "num_batches" not in key:
            assert not unchanged, key
    assert not any(name.startswith(("blocks.fc1.", "blocks.fc2.")) for name in strategy.trainable_)
    assert "running_mean" in " ".join(strategy.at_task2_)  # the model does have BN statistics
    assert all(p.requires_grad for p in model.parameters()) and all(m.training for m in model.modules())


def test_too_many_blocks_is_an_error(tiny_streams):
    stream = tiny_streams["single"]
    with pytest.raises(IncompatibleError, match=r"The 'n_blocks' parameter of Freeze must be <= the model's number of blocks \(2: fc1, fc2\). Got 3 instead."):
        Freeze(FreezeParams(n_blocks=3)).before_task(tiny_model(stream), make_context(stream, 1))
