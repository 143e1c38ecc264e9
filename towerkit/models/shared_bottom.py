"""Shared-Bottom: one shared MLP under one tower per task."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from towerkit.models.mlp import MLP
from towerkit.models.multi_task_ranker import MultiTaskRanker

__all__ = ["SharedBottom"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class SharedBottom(MultiTaskRanker):
    """Hard parameter sharing: `tower_t(bottom(x))` per task.

    With a single task (`tasks=("click",)`) this is the single-task baseline.

    Example:
    ```python
    model = SharedBottom(feature_set, tasks=("click", "like"), bottom_sizes=[64])
    model(features)  # {"click": [batch], "like": [batch], "ctcvr": [batch]}
    ```

    Args:
      features: Layer mapping the feature dict to `[batch, d]`.
      tasks: Sequence[str]. Predicted (and trained) tasks.
      bottom_sizes: Sequence[int]. Widths of the shared ReLU layers.
      **kwargs: `loss_weights`, `tower_sizes`, as in `MultiTaskRanker`.

    References:
      Caruana, "Multitask Learning", Machine Learning 28, 1997:
      https://doi.org/10.1023/A:1007379606734
    """

    def __init__(self, features, tasks: Sequence[str] = ("click", "like"),
                 bottom_sizes: Sequence[int] = (64,), **kwargs):
        super().__init__(features, tasks, **kwargs)
        self.bottom_sizes = [int(s) for s in bottom_sizes]
        self.bottom = MLP(self.bottom_sizes, final_activation="relu", name="bottom")
        self.towers = {t: self.make_tower(t, f"{t}_tower") for t in self.tasks}

    def forward(self, features, training=False):
        shared = self.bottom(self.features(features))
        return self.combine({t: self.towers[t](shared) for t in self.tasks}), {}

    def get_config(self) -> dict:
        return {**super().get_config(), "bottom_sizes": list(self.bottom_sizes)}
