"""AITM: click -> conversion with adaptive information transfer and a label constraint."""

from __future__ import annotations

import tensorflow as tf

from towerkit.layers import AttentionTransfer
from towerkit.models.mlp import MLP
from towerkit.models.multi_task_ranker import MultiTaskRanker
from towerkit.tasks import label_constraint

__all__ = ["AITM"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class AITM(MultiTaskRanker):
    """Adaptive Information Transfer Multi-task: the conversion tower attends to the click tower.

    Both towers map the shared embedding to `K = tower_sizes[-1]`-wide representations; the
    conversion (ctcvr) representation is fused with information transferred from the click
    representation by `AttentionTransfer`, then each gets a sigmoid unit. Trained over all
    exposures on `click` and `ctcvr`, plus the behavioural expectation calibrator
    `constraint_weight * mean(max(p_ctcvr - p_click, 0))`. `like` is reported as
    `min(p_ctcvr / p_click, 1)` (p(like | click) implied by the two outputs).

    Example:
    ```python
    model = AITM(feature_set, tower_sizes=[64, 32])
    model(features)  # {"click": [batch], "ctcvr": [batch], "like": [batch]}
    ```

    Args:
      features: Layer mapping the feature dict to `[batch, d]`.
      constraint_weight: float. Weight of the label constraint (0.6 in the authors' code).
      **kwargs: `loss_weights` (for `click` and `ctcvr`), `tower_sizes`, as in
        `MultiTaskRanker`.

    Gate names: `transfer` holds the attention weights `[batch, 2]` over
    `[transferred information, own representation]`.

    References:
      Xi et al., "Modeling the Sequential Dependence among Audience Multi-step Conversions with
      Multi-task Learning in Targeted Display Advertising", KDD 2021:
      https://doi.org/10.1145/3447548.3467071
    """

    def __init__(self, features, constraint_weight: float = 0.6, **kwargs):
        kwargs.pop("tasks", None)
        super().__init__(features, ("click", "like", "ctcvr"), **kwargs)
        if constraint_weight < 0:
            raise ValueError(f"constraint_weight must be >= 0, got {constraint_weight!r}.")
        self.constraint_weight = float(constraint_weight)
        self.click_tower = MLP(self.tower_sizes, final_activation="relu", name="click_tower")
        self.ctcvr_tower = MLP(self.tower_sizes, final_activation="relu", name="ctcvr_tower")
        self.transfer = AttentionTransfer(self.tower_sizes[-1], name="transfer")
        self.click_head = tf.keras.layers.Dense(1, activation="sigmoid", name="click_head")
        self.ctcvr_head = tf.keras.layers.Dense(1, activation="sigmoid", name="ctcvr_head")

    def trained_tasks(self) -> tuple:
        return ("click", "ctcvr")

    def forward(self, features, training=False):
        x = self.features(features)
        q_click, q_ctcvr = self.click_tower(x), self.ctcvr_tower(x)
        fused, weights = self.transfer(q_ctcvr, q_click)
        p_click = tf.reshape(self.click_head(q_click), [-1])
        p_ctcvr = tf.reshape(self.ctcvr_head(fused), [-1])
        p_like = tf.minimum(p_ctcvr / tf.maximum(p_click, 1e-7), 1.0)
        return {"click": p_click, "like": p_like, "ctcvr": p_ctcvr}, {"transfer": weights}

    def extra_loss(self, outputs):
        return label_constraint(outputs["ctcvr"], outputs["click"], self.constraint_weight)

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("tasks")
        return {**config, "constraint_weight": self.constraint_weight}
