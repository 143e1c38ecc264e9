"""PLE: stacked CGC extraction levels (one level is CGC)."""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from towerkit.layers import ExtractionLayer
from towerkit.models.multi_task_ranker import MultiTaskRanker

__all__ = ["PLE"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class PLE(MultiTaskRanker):
    """Progressive Layered Extraction: `num_levels` extraction levels, then one tower per task.

    Levels below the last carry a shared gate whose output feeds the next level's shared
    experts; the last level has none. With `num_levels=1` the model is CGC (`towerkit.models.CGC`
    is exactly that).

    Example:
    ```python
    model = PLE(feature_set, tasks=("click", "like"), num_levels=2)
    model.gate_weights(features)  # {"level_0/click", "level_0/like", "level_0/shared", ...}
    ```

    Args:
      features: Layer mapping the feature dict to `[batch, d]`.
      tasks: Sequence[str]. Predicted (and trained) tasks.
      num_levels: int. Extraction levels (>= 1).
      num_task_experts: int. Experts per task per level.
      num_shared_experts: int. Shared experts per level.
      expert_sizes: Sequence[int]. Each expert's ReLU layer widths.
      seed: int or None. Base seed of the initializers (every expert and gate differs).
      **kwargs: `loss_weights`, `tower_sizes`, as in `MultiTaskRanker`.

    Gate names: `level_{i}/{task}` and, below the last level, `level_{i}/shared`.

    References:
      Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model
      for Personalized Recommendations", RecSys 2020: https://doi.org/10.1145/3383313.3412236
    """

    def __init__(self, features, tasks: Sequence[str] = ("click", "like"), num_levels: int = 2,
                 num_task_experts: int = 2, num_shared_experts: int = 2,
                 expert_sizes: Sequence[int] = (64,), seed: Optional[int] = None, **kwargs):
        super().__init__(features, tasks, **kwargs)
        if not isinstance(num_levels, int) or num_levels < 1:
            raise ValueError(f"num_levels must be an int >= 1, got {num_levels!r}.")
        self.num_levels, self.num_task_experts = num_levels, num_task_experts
        self.num_shared_experts, self.expert_sizes, self.seed = (num_shared_experts,
                                                                 list(expert_sizes), seed)
        self.levels = [ExtractionLayer(len(self.tasks), num_task_experts, num_shared_experts,
                                       self.expert_sizes, final=(i == num_levels - 1),
                                       seed=None if seed is None else seed + 1_000_000 * i,
                                       name=f"level_{i}")
                       for i in range(num_levels)]
        self.towers = {t: self.make_tower(t, f"{t}_tower") for t in self.tasks}

    def forward(self, features, training=False):
        x = self.features(features)
        inputs = [x] * (len(self.tasks) + 1)
        gates = {}
        for i, level in enumerate(self.levels):
            inputs, weights = level(inputs)
            names = list(self.tasks) + ([] if level.final else ["shared"])
            gates.update({f"level_{i}/{name}": w for name, w in zip(names, weights)})
        heads = {t: self.towers[t](inputs[j]) for j, t in enumerate(self.tasks)}
        return self.combine(heads), gates

    def get_config(self) -> dict:
        return {**super().get_config(), "num_levels": self.num_levels,
                "num_task_experts": self.num_task_experts,
                "num_shared_experts": self.num_shared_experts,
                "expert_sizes": list(self.expert_sizes), "seed": self.seed}
