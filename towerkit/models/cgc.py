"""CGC: task-specific and shared experts with per-task gates (PLE with one level)."""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from towerkit.models.ple import PLE

__all__ = ["CGC"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class CGC(PLE):
    """Customized Gate Control: one final extraction level (no shared gate), then the towers.

    Identical to `PLE(num_levels=1)`: same layers, same weights, same outputs.

    Example:
    ```python
    model = CGC(feature_set, tasks=("click", "like"), num_task_experts=2, num_shared_experts=2)
    model.gate_weights(features)  # {"level_0/click": [batch, 4], "level_0/like": [batch, 4]}
    ```

    Args:
      features: Layer mapping the feature dict to `[batch, d]`.
      tasks: Sequence[str]. Predicted (and trained) tasks.
      num_task_experts: int. Experts per task.
      num_shared_experts: int. Shared experts.
      expert_sizes: Sequence[int]. Each expert's ReLU layer widths.
      seed: int or None. Base seed of the initializers.
      **kwargs: `loss_weights`, `tower_sizes`, as in `MultiTaskRanker`.

    References:
      Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model
      for Personalized Recommendations", RecSys 2020, Sec. 4.2:
      https://doi.org/10.1145/3383313.3412236
    """

    def __init__(self, features, tasks: Sequence[str] = ("click", "like"),
                 num_task_experts: int = 2, num_shared_experts: int = 2,
                 expert_sizes: Sequence[int] = (64,), seed: Optional[int] = None, **kwargs):
        kwargs.pop("num_levels", None)
        super().__init__(features, tasks, num_levels=1, num_task_experts=num_task_experts,
                         num_shared_experts=num_shared_experts, expert_sizes=expert_sizes,
                         seed=seed, **kwargs)

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("num_levels")
        return config
