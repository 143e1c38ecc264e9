"""Attributes looked up by an id (a user's profile, a movie's genres), embedded and averaged."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

__all__ = ["AttributeEmbedding"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class AttributeEmbedding(tf.keras.layers.Layer):
    """Maps an id to its attribute codes (stored in the layer) and averages their embeddings.

    The layer holds a table `id -> codes`, so a served model needs only the id: a ranker scoring
    candidate movie ids looks their genres up itself, and a user's profile comes with the
    user id. Codes are ints in `[1, num_codes)`; 0 pads rows with fewer codes. An id outside
    the table (or a row of only padding) embeds to the zero vector.

    Example:
    ```python
    genres = AttributeEmbedding(["1", "2"], [[3, 7], [4]], num_codes=20, dim=8)
    genres(tf.constant(["2", "new"]))  # [2, 8]: the embedding of code 4, then zeros
    ```

    Args:
      keys: Sequence[str]. The ids, unique.
      codes: Sequence[Sequence[int]]. Each id's attribute codes (any number, >= 1 each).
      num_codes: int. One more than the largest code.
      dim: int. Embedding width of the attributes.
      id_dim: int. When > 0, the id itself is also embedded (`id_dim` wide; unknown ids share
        one row) and concatenated before the attributes.

    Input shape: string ids of any shape `S` (e.g. `[batch]` or `[batch, n]`). Output shape:
    `S + [id_dim + dim]`, float32.

    Raises:
      ValueError: keys repeat, or a code lies outside `[1, num_codes)`.

    References:
      The mean-pooled multi-valued feature of Covington et al., "Deep Neural Networks for
      YouTube Recommendations", RecSys 2016: https://doi.org/10.1145/2959100.2959190
    """

    def __init__(self, keys: Sequence[str], codes: Sequence[Sequence[int]], num_codes: int,
                 dim: int = 8, id_dim: int = 0, **kwargs):
        super().__init__(**kwargs)
        keys = [k.decode() if isinstance(k, bytes) else str(k) for k in keys]
        if not keys or len(set(keys)) != len(keys):
            raise ValueError("AttributeEmbedding keys must be non-empty and unique.")
        if len(codes) != len(keys):
            raise ValueError(f"codes must hold one row per key ({len(keys)}), got {len(codes)}.")
        rows = [[int(c) for c in row] for row in codes]
        width = max(1, max(len(r) for r in rows))
        table = np.zeros([len(keys) + 1, width], np.int64)  # row 0: unknown id -> all padding
        for i, row in enumerate(rows):
            if any(c < 1 or c >= num_codes for c in row):
                raise ValueError(f"codes of key {keys[i]!r} must lie in [1, num_codes="
                                 f"{num_codes}), got {row}.")
            table[i + 1, :len(row)] = row
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}.")
        if not isinstance(id_dim, int) or id_dim < 0:
            raise ValueError(f"id_dim must be an int >= 0, got {id_dim!r}.")
        self.keys, self.codes, self.num_codes, self.dim = keys, rows, int(num_codes), dim
        self.id_dim = id_dim
        self.lookup = tf.keras.layers.StringLookup(vocabulary=keys, mask_token=None,
                                                   num_oov_indices=1, name="lookup")
        self._table = tf.constant(table)
        self.embedding = tf.keras.layers.Embedding(self.num_codes, dim, name="embedding")
        self.id_embedding = (tf.keras.layers.Embedding(len(keys) + 1, id_dim, name="id_embedding")
                             if id_dim else None)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        inputs = tf.convert_to_tensor(inputs)
        if inputs.dtype != tf.string:
            raise TypeError(f"{self.name} takes string ids, got {inputs.dtype.name}; convert "
                            "them with tf.strings.as_string.")
        rows = self.lookup(inputs)                                     # S, 0 = unknown id
        codes = tf.gather(self._table, rows)                           # S + [width]
        mask = tf.cast(codes > 0, tf.float32)[..., None]               # S + [width, 1]
        summed = tf.reduce_sum(self.embedding(codes) * mask, axis=-2)  # S + [dim]
        attributes = summed / tf.maximum(tf.reduce_sum(mask, axis=-2), 1.0)
        if self.id_embedding is None:
            return attributes
        return tf.concat([self.id_embedding(rows), attributes], axis=-1)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"keys": list(self.keys), "codes": [list(r) for r in self.codes],
                       "num_codes": self.num_codes, "dim": self.dim, "id_dim": self.id_dim})
        return config
