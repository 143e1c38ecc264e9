"""YouTube-DNN candidate-generation query tower (Covington et al., RecSys 2016)."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import tensorflow as tf

__all__ = ["YouTubeDNN", "masked_mean"]


def masked_mean(embeddings: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """Mean of `embeddings [batch, n, dim]` over positions where `ids [batch, n] != 0`.

    Padding positions (id 0) never count; an all-padding row gives zeros.
    """
    mask = tf.cast(tf.not_equal(ids, 0), embeddings.dtype)[..., tf.newaxis]
    total = tf.reduce_sum(embeddings * mask, axis=1)
    count = tf.reduce_sum(mask, axis=1)
    return tf.math.divide_no_nan(total, count)


@tf.keras.utils.register_keras_serializable(package="towerkit")
class YouTubeDNN(tf.keras.layers.Layer):
    """Query tower of YouTube's deep candidate generation model.

    The user vector is a ReLU MLP over the concatenation of:
    * the masked mean of the embeddings of the watched items (`history`, 0 = padding, which
      never counts: the value of embedding row 0 is irrelevant);
    * the masked mean embedding of each side feature (`side_embeddings[name]` applied to
      `inputs[name]`, an int tensor `[batch]` or `[batch, m]`, 0 = missing), e.g. user profile
      features or the genres of the watched items;
    * the "example age" (`inputs["example_age"]`, `[batch]` float): the age of the training
      example, which lets the model learn the time dependence of popularity. At query time
      the caller feeds the age of the query (towerkit's sequential recipes derive it from the
      time of the user's last history item); absent from `inputs` it is 0, the paper's
      serving value ("the end of the training window").

    The MLP has ReLU `hidden_units` and an output layer of `output_dim` units, the dimension of
    the candidate embeddings (the item table, shared with `item_embedding` or separate: the
    model decides). The output layer is linear by default (`output_activation=None`: user
    vectors can score items with either sign); the paper's Figure 3 draws every layer, the
    top one included, as ReLU: `output_activation="relu"`.

    Example:
    ```python
    items = tf.keras.layers.Embedding(num_items + 1, 64)
    tower = YouTubeDNN(items, hidden_units=(128,), output_dim=64)
    user = tower({"history": history_ids, "example_age": ages})   # [batch, 64]
    ```

    Args:
      item_embedding: tf.keras.layers.Embedding. Item table, row `i` = item index `i`.
      hidden_units: Sequence[int]. Widths of the ReLU layers.
      output_dim: int. Dimension of the user vector.
      side_embeddings: Mapping[str, tf.keras.layers.Embedding] or None. One table per side
        feature, keyed by the input feature name.
      use_example_age: bool. Whether `example_age` enters the MLP.
      dropout: float. Dropout rate after each ReLU layer (training only).
      output_activation: str or None. Activation of the output layer (None = linear).

    Call args:
      inputs: dict with `history` `[batch, max_history]` int (0 = padding) and, as configured,
        the side features and `example_age`.

    Returns:
      `[batch, output_dim]` float32 user embeddings.

    References:
      Covington, Adams, Sargin, "Deep Neural Networks for YouTube Recommendations", RecSys 2016:
      https://doi.org/10.1145/2959100.2959190
    """

    def __init__(self, item_embedding: tf.keras.layers.Embedding,
                 hidden_units: Sequence[int] = (128,), output_dim: int = 64,
                 side_embeddings: Optional[Mapping[str, tf.keras.layers.Embedding]] = None,
                 use_example_age: bool = True, dropout: float = 0.0,
                 output_activation: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(item_embedding, tf.keras.layers.Embedding):
            raise TypeError("item_embedding must be a tf.keras.layers.Embedding, got "
                            f"{type(item_embedding).__name__}.")
        if not isinstance(output_dim, int) or output_dim < 1:
            raise ValueError(f"output_dim must be a positive int, got {output_dim!r}.")
        if any(not isinstance(u, int) or u < 1 for u in hidden_units):
            raise ValueError(f"hidden_units must be positive ints, got {hidden_units!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
        side_embeddings = dict(side_embeddings or {})
        if "history" in side_embeddings or "example_age" in side_embeddings:
            raise ValueError("side_embeddings cannot use the reserved names 'history' and "
                             "'example_age'.")
        self.item_embedding = item_embedding
        self.side_embeddings = side_embeddings
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.output_dim = output_dim
        self.use_example_age = bool(use_example_age)
        self.dropout = float(dropout)
        self._hidden = [tf.keras.layers.Dense(u, activation="relu", name=f"relu_{i}")
                        for i, u in enumerate(self.hidden_units)]
        self._dropout = tf.keras.layers.Dropout(self.dropout) if self.dropout else None
        self.output_activation = output_activation
        self._output = tf.keras.layers.Dense(output_dim, activation=output_activation,
                                             name="user_vector")

    def call(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        if not isinstance(inputs, Mapping) or "history" not in inputs:
            raise ValueError("YouTubeDNN expects a dict of features with at least 'history' "
                             "[batch, max_history] item indices (0 = padding).")
        history = inputs["history"]
        if not history.dtype.is_integer:
            raise TypeError(f"'history' must hold integer item indices, got {history.dtype.name};"
                            " map raw ids to indices first (see towerkit.data.sequences).")
        parts = [masked_mean(self.item_embedding(history), history)]
        for name, table in self.side_embeddings.items():
            if name not in inputs:
                raise ValueError(f"YouTubeDNN was built with side feature {name!r}, which is "
                                 "missing from the inputs.")
            ids = inputs[name]
            if ids.shape.rank == 1:
                ids = ids[:, tf.newaxis]
            parts.append(masked_mean(table(ids), ids))
        if self.use_example_age:
            age = inputs.get("example_age")
            if age is None:  # no age given: the example is "now"
                age = tf.zeros_like(history[:, 0], dtype=tf.float32)
            parts.append(tf.reshape(tf.cast(age, tf.float32), [-1, 1]))
        x = tf.concat(parts, axis=-1)
        for layer in self._hidden:
            x = layer(x)
            if self._dropout is not None:
                x = self._dropout(x, training=training)
        return self._output(x)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "item_embedding": tf.keras.layers.serialize(self.item_embedding),
            "hidden_units": list(self.hidden_units),
            "output_dim": self.output_dim,
            "side_embeddings": {k: tf.keras.layers.serialize(v)
                                for k, v in self.side_embeddings.items()},
            "use_example_age": self.use_example_age,
            "dropout": self.dropout,
            "output_activation": self.output_activation,
        })
        return config

    @classmethod
    def from_config(cls, config: dict) -> "YouTubeDNN":
        config = dict(config)
        config["item_embedding"] = tf.keras.layers.deserialize(config["item_embedding"])
        config["side_embeddings"] = {k: tf.keras.layers.deserialize(v)
                                     for k, v in config.get("side_embeddings", {}).items()}
        return cls(**config)
