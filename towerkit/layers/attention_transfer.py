"""AITM's Adaptive Information Transfer module: attention over own and transferred information."""

from __future__ import annotations

import tensorflow as tf

__all__ = ["AttentionTransfer"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class AttentionTransfer(tf.keras.layers.Layer):
    """Fuses a task's representation with information transferred from the previous task.

    With `K = units`, the previous task's representation `q_prev` is turned into an information
    vector `p = ReLU(W_info q_prev + b)` (`[batch, K]`), then the current task's representation
    `q` and `p` are combined by attention (Xi et al., eq. (3)-(5)):

        u = [p, q]                                      # [batch, 2, K]
        w_i = softmax_i(<W_q u_i, W_k u_i> / sqrt(K))   # W_q, W_k, W_v: K x K, no bias
        z = sum_i w_i * W_v u_i                         # [batch, K]

    as in the authors' TensorFlow code (a Dense(32, ReLU) information vector; K x K query, key
    and value matrices; scores scaled by sqrt(K)).

    Example:
    ```python
    ait = AttentionTransfer(units=32)
    z, weights = ait(tf.zeros([8, 32]), tf.zeros([8, 64]))  # [8, 32], [8, 2]
    ```

    Args:
      units: int. K, the width of the current task's representation and of the output.

    Call args:
      task_inputs: `[batch, K]`, the current task's tower representation `q`.
      previous_inputs: `[batch, d]`, the previous task's representation `q_prev`.

    Returns:
      `(z [batch, K], weights [batch, 2])`: the fused representation and the attention weights
      over `[transferred p, own q]`.

    Raises:
      ValueError: `units` < 1, or `task_inputs` is not `[batch, units]`.

    References:
      Xi et al., "Modeling the Sequential Dependence among Audience Multi-step Conversions with
      Multi-task Learning in Targeted Display Advertising", KDD 2021:
      https://doi.org/10.1145/3447548.3467071
    """

    def __init__(self, units: int = 32, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, int) or units < 1:
            raise ValueError(f"units must be a positive int, got {units!r}.")
        self.units = units
        self.info = tf.keras.layers.Dense(units, activation="relu", name="info")
        self.w_query = self.add_weight(name="w_query", shape=[units, units],
                                       initializer="glorot_uniform")
        self.w_key = self.add_weight(name="w_key", shape=[units, units],
                                     initializer="glorot_uniform")
        self.w_value = self.add_weight(name="w_value", shape=[units, units],
                                       initializer="glorot_uniform")

    def call(self, task_inputs: tf.Tensor, previous_inputs: tf.Tensor) -> tuple:
        if task_inputs.shape[-1] not in (None, self.units):
            raise ValueError(f"{self.name}: task_inputs must be [batch, {self.units}], got "
                             f"{task_inputs.shape}; make the task tower's last layer {self.units} "
                             "wide.")
        u = tf.stack([self.info(previous_inputs), task_inputs], axis=1)   # [batch, 2, K]
        query = tf.einsum("bik,kj->bij", u, self.w_query)
        key = tf.einsum("bik,kj->bij", u, self.w_key)
        value = tf.einsum("bik,kj->bij", u, self.w_value)
        scores = tf.reduce_sum(query * key, axis=-1) / tf.sqrt(float(self.units))  # [batch, 2]
        weights = tf.nn.softmax(scores, axis=-1)
        return tf.reduce_sum(weights[:, :, None] * value, axis=1), weights

    def get_config(self) -> dict:
        config = super().get_config()
        config["units"] = self.units
        return config
