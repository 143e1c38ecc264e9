"""A stack of dense layers, the building block of deep towers and rating heads."""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

__all__ = ["MLP"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class MLP(tf.keras.layers.Layer):
    """Dense layers with `activation` between them; the last layer is linear by default.

    Example:
    ```python
    head = MLP([256, 64, 1])  # the TFRS basic ranking tutorial's rating head
    head(tf.zeros([8, 64]))   # [8, 1]
    ```

    Args:
      layer_sizes: Sequence[int]. Width of each layer (at least one).
      activation: str. Activation of every layer but the last.
      final_activation: str or None. Activation of the last layer.
      kernel_regularizer: Optional regularizer of every kernel.

    Input shape: `[batch, in_dim]`. Output shape: `[batch, layer_sizes[-1]]`.

    References:
      Covington et al., "Deep Neural Networks for YouTube Recommendations", RecSys 2016
      (the deep tower): https://doi.org/10.1145/2959100.2959190
    """

    def __init__(self, layer_sizes: Sequence[int], activation: str = "relu",
                 final_activation: Optional[str] = None, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        sizes = [int(s) for s in layer_sizes]
        if not sizes or any(s < 1 for s in sizes):
            raise ValueError(f"layer_sizes must be non-empty positive ints, got {layer_sizes!r}.")
        self.layer_sizes = sizes
        self.activation = activation
        self.final_activation = final_activation
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)
        self.dense_layers = [
            tf.keras.layers.Dense(size, activation=(activation if i < len(sizes) - 1
                                                    else final_activation),
                                  kernel_regularizer=self.kernel_regularizer, name=f"dense_{i}")
            for i, size in enumerate(sizes)]

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = inputs
        for layer in self.dense_layers:
            x = layer(x)
        return x

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "layer_sizes": list(self.layer_sizes), "activation": self.activation,
            "final_activation": self.final_activation,
            "kernel_regularizer": tf.keras.regularizers.serialize(self.kernel_regularizer)
            if self.kernel_regularizer is not None else None})
        return config
