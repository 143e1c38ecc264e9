"""GRU query tower of the TFRS "recommending movies: retrieval using a sequential model" tutorial."""

from __future__ import annotations

from typing import Mapping, Optional

import tensorflow as tf

__all__ = ["GRUTower"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class GRUTower(tf.keras.layers.Layer):
    """Embeds the watched items and returns the last hidden state of a GRU over them.

    As in the TFRS tutorial (`Embedding` then `GRU(embedding_dim)`), with padding masked: the
    history is left-aligned (`[i_1, ..., i_h, 0, ..., 0]`), the GRU skips padded steps, so the
    result is the state after item `i_h`. An optional linear projection maps it to `output_dim`.

    Example:
    ```python
    items = tf.keras.layers.Embedding(num_items + 1, 64)
    tower = GRUTower(items, units=64)
    user = tower({"history": history_ids})   # [batch, 64]
    ```

    Args:
      item_embedding: tf.keras.layers.Embedding. Item table, row `i` = item index `i`.
      units: int. GRU state size.
      output_dim: int or None. Adds a linear projection to this size when set.
      unroll: bool. Unroll the recurrence (same result; faster on CPU for short histories).

    Call args:
      inputs: dict with `history` `[batch, max_history]` int item indices (0 = padding).

    Returns:
      `[batch, output_dim or units]` float32.

    References:
      TFRS tutorial: https://www.tensorflow.org/recommenders/examples/sequential_retrieval;
      Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks", ICLR 2016:
      https://arxiv.org/abs/1511.06939
    """

    def __init__(self, item_embedding: tf.keras.layers.Embedding, units: int = 64,
                 output_dim: Optional[int] = None, unroll: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(item_embedding, tf.keras.layers.Embedding):
            raise TypeError("item_embedding must be a tf.keras.layers.Embedding, got "
                            f"{type(item_embedding).__name__}.")
        if not isinstance(units, int) or units < 1:
            raise ValueError(f"units must be a positive int, got {units!r}.")
        self.item_embedding = item_embedding
        self.units = units
        self.output_dim = output_dim
        self.unroll = bool(unroll)
        self._gru = tf.keras.layers.GRU(units, unroll=self.unroll, name="gru")
        self._projection = (tf.keras.layers.Dense(output_dim, name="projection")
                            if output_dim else None)

    def call(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        if not isinstance(inputs, Mapping) or "history" not in inputs:
            raise ValueError("GRUTower expects a dict of features with 'history' "
                             "[batch, max_history] item indices (0 = padding).")
        history = inputs["history"]
        if not history.dtype.is_integer:
            raise TypeError(f"'history' must hold integer item indices, got {history.dtype.name}.")
        mask = tf.not_equal(history, 0)
        state = self._gru(self.item_embedding(history), mask=mask, training=training)
        # A history with no item at all gives the initial (zero) state.
        state = tf.where(tf.reduce_any(mask, axis=1, keepdims=True), state, tf.zeros_like(state))
        return self._projection(state) if self._projection is not None else state

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"item_embedding": tf.keras.layers.serialize(self.item_embedding),
                       "units": self.units, "output_dim": self.output_dim,
                       "unroll": self.unroll})
        return config

    @classmethod
    def from_config(cls, config: dict) -> "GRUTower":
        config = dict(config)
        config["item_embedding"] = tf.keras.layers.deserialize(config["item_embedding"])
        return cls(**config)
