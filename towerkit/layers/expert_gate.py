"""A softmax gate that mixes expert outputs (one per task in MMoE, CGC and PLE)."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

__all__ = ["ExpertGate"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class ExpertGate(tf.keras.layers.Layer):
    """`g(x) = softmax(W x)` over experts; returns `sum_e g_e(x) * expert_e` and `g(x)`.

    Example:
    ```python
    gate = ExpertGate(num_experts=4)
    mixed, weights = gate(tf.zeros([8, 100]), tf.zeros([8, 4, 32]))  # [8, 32], [8, 4]
    ```

    Args:
      num_experts: int. Number of experts the gate weighs (>= 1).
      seed: int or None. Seed of the gate kernel's Glorot-uniform initializer.

    Call args:
      gate_inputs: `[batch, in_dim]`, what the gate looks at.
      expert_outputs: `[batch, num_experts, units]`.

    Returns:
      `(mixed [batch, units], weights [batch, num_experts])`; each row of `weights` is a
      probability distribution over the experts.

    Raises:
      ValueError: `num_experts` < 1, or `expert_outputs` has a different number of experts.

    References:
      Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
      Mixture-of-Experts", KDD 2018, eq. (5)-(6): https://doi.org/10.1145/3219819.3220007
    """

    def __init__(self, num_experts: int, seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_experts, int) or num_experts < 1:
            raise ValueError(f"num_experts must be an int >= 1, got {num_experts!r}.")
        self.num_experts, self.seed = num_experts, seed
        self.dense = tf.keras.layers.Dense(
            num_experts, kernel_initializer=tf.keras.initializers.GlorotUniform(seed=seed),
            name="gate")

    def call(self, gate_inputs: tf.Tensor, expert_outputs: tf.Tensor) -> tuple:
        if expert_outputs.shape.rank != 3 or expert_outputs.shape[1] not in (None,
                                                                              self.num_experts):
            raise ValueError(f"{self.name} weighs {self.num_experts} experts; expert_outputs must "
                             f"be [batch, {self.num_experts}, units], got {expert_outputs.shape}.")
        weights = tf.nn.softmax(self.dense(gate_inputs), axis=-1)
        mixed = tf.reduce_sum(weights[:, :, None] * expert_outputs, axis=1)
        return mixed, weights

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"num_experts": self.num_experts, "seed": self.seed})
        return config
