"""MMoE: shared experts, one softmax gate per task."""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from towerkit.layers import ExpertGate, Experts
from towerkit.models.multi_task_ranker import MultiTaskRanker

__all__ = ["MMoE"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class MMoE(MultiTaskRanker):
    """Multi-gate Mixture-of-Experts: `tower_t(sum_e g_t(x)_e * expert_e(x))`.

    Example:
    ```python
    model = MMoE(feature_set, tasks=("click", "like"), num_experts=4, expert_sizes=[64])
    model.gate_weights(features)  # {"click": [batch, 4], "like": [batch, 4]}
    ```

    Args:
      features: Layer mapping the feature dict to `[batch, d]`.
      tasks: Sequence[str]. Predicted (and trained) tasks.
      num_experts: int. Shared experts.
      expert_sizes: Sequence[int]. Each expert's ReLU layer widths.
      seed: int or None. Base seed of the experts' and gates' initializers (each differs).
      **kwargs: `loss_weights`, `tower_sizes`, as in `MultiTaskRanker`.

    References:
      Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
      Mixture-of-Experts", KDD 2018: https://doi.org/10.1145/3219819.3220007
    """

    def __init__(self, features, tasks: Sequence[str] = ("click", "like"), num_experts: int = 4,
                 expert_sizes: Sequence[int] = (64,), seed: Optional[int] = None, **kwargs):
        super().__init__(features, tasks, **kwargs)
        self.num_experts, self.expert_sizes, self.seed = num_experts, list(expert_sizes), seed
        self.experts = Experts(num_experts, self.expert_sizes, seed=seed, name="experts")
        self.gates = {t: ExpertGate(num_experts, seed=None if seed is None else seed + 7 + i,
                                    name=f"{t}_gate") for i, t in enumerate(self.tasks)}
        self.towers = {t: self.make_tower(t, f"{t}_tower") for t in self.tasks}

    def forward(self, features, training=False):
        x = self.features(features)
        experts = self.experts(x)
        heads, gates = {}, {}
        for t in self.tasks:
            mixed, gates[t] = self.gates[t](x, experts)
            heads[t] = self.towers[t](mixed)
        return self.combine(heads), gates

    def get_config(self) -> dict:
        return {**super().get_config(), "num_experts": self.num_experts,
                "expert_sizes": list(self.expert_sizes), "seed": self.seed}
