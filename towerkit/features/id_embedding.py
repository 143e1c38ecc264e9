"""Categorical id -> embedding, with an out-of-vocabulary bucket."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

__all__ = ["IdEmbedding"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class IdEmbedding(tf.keras.layers.Layer):
    """Looks categorical ids up in a fixed vocabulary and embeds them.

    Ids outside the vocabulary (new users, new movies, typos) map to one of `num_oov_buckets`
    hashed OOV rows of the embedding table instead of raising deep inside TF. String
    vocabularies take `tf.string` ids; integer vocabularies take int32/int64/bool ids.

    Example:
    ```python
    users = IdEmbedding(["1", "2", "3"], embedding_dim=32)
    users(tf.constant(["2", "unknown"]))  # [2, 32]; "unknown" -> the OOV row
    ```

    Args:
      vocabulary: Sequence[str] or Sequence[int]. The known ids (e.g. `Vocabulary.as_list()`).
      embedding_dim: int. Output width.
      num_oov_buckets: int. OOV rows (index 0..num_oov_buckets-1 of the table).
      embeddings_initializer: Initializer of the table.
      embeddings_regularizer: Optional regularizer of the table.

    Input shape: `[batch]` or `[batch, length]` ids. Output shape: input shape + `[embedding_dim]`.

    References:
      TFRS featurization tutorial: https://www.tensorflow.org/recommenders/examples/featurization
    """

    def __init__(self, vocabulary: Sequence, embedding_dim: int, num_oov_buckets: int = 1,
                 embeddings_initializer="uniform", embeddings_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        vocabulary = list(vocabulary.tolist() if isinstance(vocabulary, np.ndarray) else vocabulary)
        vocabulary = [v.decode("utf-8") if isinstance(v, bytes) else v for v in vocabulary]
        if not vocabulary:
            raise ValueError("IdEmbedding needs a non-empty vocabulary.")
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("IdEmbedding vocabulary has duplicates; use Vocabulary.from_values.")
        self._is_string = isinstance(vocabulary[0], str)
        if not all(isinstance(v, str) == self._is_string for v in vocabulary):
            raise TypeError("IdEmbedding vocabulary must be all strings or all integers.")
        if not self._is_string:
            vocabulary = [int(v) for v in vocabulary]
        if not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"embedding_dim must be a positive int, got {embedding_dim!r}.")
        if not isinstance(num_oov_buckets, int) or num_oov_buckets < 1:
            raise ValueError(f"num_oov_buckets must be an int >= 1, got {num_oov_buckets!r}.")
        self.vocabulary = vocabulary
        self.embedding_dim = embedding_dim
        self.num_oov_buckets = num_oov_buckets
        self.embeddings_initializer = tf.keras.initializers.get(embeddings_initializer)
        self.embeddings_regularizer = tf.keras.regularizers.get(embeddings_regularizer)
        lookup_cls = (tf.keras.layers.StringLookup if self._is_string
                      else tf.keras.layers.IntegerLookup)
        self.lookup = lookup_cls(vocabulary=vocabulary, mask_token=None,
                                 num_oov_indices=num_oov_buckets, name="lookup")
        self.embedding = tf.keras.layers.Embedding(
            len(vocabulary) + num_oov_buckets, embedding_dim,
            embeddings_initializer=self.embeddings_initializer,
            embeddings_regularizer=self.embeddings_regularizer, name="embedding")

    def is_known(self, inputs) -> tf.Tensor:
        """Whether each id is in the vocabulary: bool, the input's shape.

        Ids outside it (new users, `""`, bytes that are not UTF-8, typos) share the OOV rows,
        so the tower answers them with a generic embedding; serving reports them with this.
        """
        inputs = self._check_dtype(tf.convert_to_tensor(inputs))
        return self.lookup(inputs) >= self.num_oov_buckets

    @property
    def vocabulary_size(self) -> int:
        """Rows of the embedding table: known ids plus OOV buckets."""
        return len(self.vocabulary) + self.num_oov_buckets

    def _check_dtype(self, inputs: tf.Tensor) -> tf.Tensor:
        if self._is_string:
            if inputs.dtype != tf.string:
                raise TypeError(
                    f"{self.name} has a string vocabulary but got {inputs.dtype.name} ids; "
                    "pass ids as tf.string (e.g. tf.strings.as_string(ids)).")
            return inputs
        if inputs.dtype == tf.bool or inputs.dtype.is_integer:
            return tf.cast(inputs, tf.int64)
        raise TypeError(
            f"{self.name} has an integer vocabulary but got {inputs.dtype.name} ids; "
            "pass integer (or bool) ids.")

    def lookup_ids(self, inputs) -> tf.Tensor:
        """Row indices of the ids (int64, the input's shape): the lookup half of `call`.

        An input pipeline can look ids up once (`dataset.map`) and feed the indices to
        `embed_indices` in the training step (see `FeatureSet.lookup_ids`).
        """
        return self.lookup(self._check_dtype(tf.convert_to_tensor(inputs)))

    def embed_indices(self, indices: tf.Tensor) -> tf.Tensor:
        """Embeddings of row indices from `lookup_ids`: the embedding half of `call`."""
        return self.embedding(indices)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return self.embed_indices(self.lookup_ids(inputs))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "vocabulary": list(self.vocabulary),
            "embedding_dim": self.embedding_dim,
            "num_oov_buckets": self.num_oov_buckets,
            "embeddings_initializer": tf.keras.initializers.serialize(self.embeddings_initializer),
            "embeddings_regularizer": tf.keras.regularizers.serialize(self.embeddings_regularizer)
            if self.embeddings_regularizer is not None else None,
        })
        return config
