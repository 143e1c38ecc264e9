"""Timestamp features: a bucketised embedding plus the standardised value."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from towerkit.features.numeric import NormalizedNumeric

__all__ = ["TimestampEmbedding"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class TimestampEmbedding(tf.keras.layers.Layer):
    """Embeds a Unix timestamp as `concat(embedding(bucket(t)), standardised(t))`.

    The TFRS featurization and context-features tutorials represent time both ways: bucket
    embeddings learn non-linear effects, the standardised value keeps the ordering.

    Example:
    ```python
    ts = TimestampEmbedding.adapt_from(train_timestamps, num_buckets=1000, embedding_dim=32)
    ts(tf.constant([879024327]))  # [1, 33]
    ```

    Args:
      bin_boundaries: Sequence[float]. Increasing bucket boundaries (`len + 1` buckets).
      embedding_dim: int. Width of the bucket embedding.
      mean: float. Mean timestamp of the training data.
      variance: float. Variance of the training timestamps.

    Output shape: `[batch, embedding_dim + 1]`.

    References:
      TFRS context features tutorial:
      https://www.tensorflow.org/recommenders/examples/context_features
    """

    def __init__(self, bin_boundaries: Sequence[float], embedding_dim: int, mean: float,
                 variance: float, **kwargs):
        super().__init__(**kwargs)
        boundaries = [float(b) for b in bin_boundaries]
        if not boundaries or any(b >= c for b, c in zip(boundaries, boundaries[1:])):
            raise ValueError("bin_boundaries must be a non-empty, strictly increasing sequence.")
        self.bin_boundaries = boundaries
        self.embedding_dim = int(embedding_dim)
        self.normalized = NormalizedNumeric(mean, variance, name="normalized")
        self.embedding = tf.keras.layers.Embedding(len(boundaries) + 1, self.embedding_dim,
                                                   name="embedding")

    @classmethod
    def adapt_from(cls, timestamps, num_buckets: int = 1000, embedding_dim: int = 32,
                   **kwargs) -> "TimestampEmbedding":
        """Evenly spaced buckets between the min and max of `timestamps` (as in the tutorials)."""
        timestamps = np.asarray(timestamps, dtype=np.float64)
        if timestamps.size < 2 or timestamps.min() == timestamps.max():
            raise ValueError("TimestampEmbedding.adapt_from needs at least two distinct values.")
        if num_buckets < 2:
            raise ValueError(f"num_buckets must be >= 2, got {num_buckets}.")
        boundaries = np.linspace(timestamps.min(), timestamps.max(), num=num_buckets)[1:-1]
        return cls(boundaries.tolist(), embedding_dim, float(timestamps.mean()),
                   float(timestamps.var()), **kwargs)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        inputs = tf.convert_to_tensor(inputs)
        if not (inputs.dtype.is_integer or inputs.dtype.is_floating):
            raise TypeError(f"{self.name} expects numeric Unix timestamps, got {inputs.dtype.name}.")
        buckets = tf.raw_ops.Bucketize(input=tf.cast(inputs, tf.float64),
                                       boundaries=self.bin_boundaries)
        return tf.concat([self.embedding(buckets), self.normalized(inputs)], axis=-1)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"bin_boundaries": list(self.bin_boundaries),
                       "embedding_dim": self.embedding_dim,
                       "mean": self.normalized.mean, "variance": self.normalized.variance})
        return config
