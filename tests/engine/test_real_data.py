"""End to end on the real CIFAR-10 files (skipped with a reason when they are absent)."""

from __future__ import annotations

import numpy as np

import forgetlab
from forgetlab.config import apply_overrides


def test_split_cifar10_end_to_end(shared_data, tmp_path):
    config = apply_overrides(
        forgetlab.RunConfig(),
        ["stream.dataset=cifar10", "stream.train_per_task=1000", "stream.test_per_task=500", "model.width=8",
         "train.epochs=2", "train.batch_size=32"],
    )
    result = forgetlab.run(config, data_dir=shared_data, store=tmp_path)
    R = result.accuracy_matrix
    assert R.shape == (2, 2)
    assert result.config.model.name == "vgg" and result.config.train.epochs == 2
    # 5-way heads: better than chance (0.2) after training on the task
    assert np.diag(R).min() > 0.25
