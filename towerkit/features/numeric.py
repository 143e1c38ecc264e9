"""Numeric features standardised with statistics from the training data."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["NormalizedNumeric"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class NormalizedNumeric(tf.keras.layers.Layer):
    """Standardises a numeric feature: `(x - mean) / sqrt(variance)`, as a `[batch, 1]` column.

    Build it from data with `NormalizedNumeric.adapt_from(values)`; statistics live in the
    config, so the layer needs no `adapt` call after loading. Arithmetic runs in float64 so large
    values such as Unix timestamps keep their precision, and the result is float32.

    Example:
    ```python
    age = NormalizedNumeric.adapt_from(np.array([20.0, 30.0, 40.0]))
    age(tf.constant([30.0]))  # [[0.0]]
    ```

    Args:
      mean: float. Mean of the training values.
      variance: float. Variance of the training values (> 0).

    References:
      TFRS featurization tutorial: https://www.tensorflow.org/recommenders/examples/featurization
    """

    def __init__(self, mean: float, variance: float, **kwargs):
        super().__init__(**kwargs)
        if not np.isfinite(mean) or not np.isfinite(variance) or variance <= 0:
            raise ValueError(
                f"NormalizedNumeric needs a finite mean and a positive variance, got mean={mean}, "
                f"variance={variance}; a constant feature carries no signal, drop it.")
        self.mean = float(mean)
        self.variance = float(variance)

    @classmethod
    def adapt_from(cls, values, **kwargs) -> "NormalizedNumeric":
        """Builds the layer with the mean and variance of `values`."""
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            raise ValueError("NormalizedNumeric.adapt_from needs at least one value.")
        return cls(float(values.mean()), float(values.var()), **kwargs)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        inputs = tf.convert_to_tensor(inputs)
        if not (inputs.dtype.is_floating or inputs.dtype.is_integer or inputs.dtype == tf.bool):
            raise TypeError(f"{self.name} expects a numeric feature, got {inputs.dtype.name}; "
                            "use IdEmbedding or TextEmbedding for strings.")
        x = tf.cast(inputs, tf.float64)
        x = (x - self.mean) / np.sqrt(self.variance)
        return tf.expand_dims(tf.cast(x, tf.float32), -1)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"mean": self.mean, "variance": self.variance})
        return config
