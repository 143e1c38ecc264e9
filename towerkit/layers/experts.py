"""A bank of independently initialised expert MLPs, the building block of MMoE, CGC and PLE."""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

__all__ = ["Experts"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class Experts(tf.keras.layers.Layer):
    """`num_experts` MLPs applied to the same input, stacked: `[batch, num_experts, units]`.

    Every expert gets its own initial weights. A known pitfall of multi-task libraries is to build
    every expert with one seeded initializer: the experts then start identical, receive identical
    gradients through the gates, and stay interchangeable copies (identical task AUCs are the
    symptom). Here each dense layer of each expert draws its own initial kernel: from the global
    random state when `seed` is None, else from `seed` offset by the expert and layer index.

    Example:
    ```python
    experts = Experts(num_experts=4, layer_sizes=[64, 32])
    experts(tf.zeros([8, 100]))  # [8, 4, 32]
    ```

    Args:
      num_experts: int. Number of experts (>= 1).
      layer_sizes: Sequence[int]. Widths of each expert's dense layers; every layer (the last
        included) uses `activation`.
      activation: str. Activation of every layer.
      seed: int or None. Base seed of the kernels' Glorot-uniform initializers.

    Input shape: `[batch, in_dim]`. Output shape: `[batch, num_experts, layer_sizes[-1]]`.

    Raises:
      ValueError: `num_experts` < 1 or `layer_sizes` empty or not positive.

    References:
      Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
      Mixture-of-Experts", KDD 2018: https://doi.org/10.1145/3219819.3220007
    """

    def __init__(self, num_experts: int, layer_sizes: Sequence[int], activation: str = "relu",
                 seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_experts, int) or num_experts < 1:
            raise ValueError(f"num_experts must be an int >= 1, got {num_experts!r}.")
        sizes = [int(s) for s in layer_sizes]
        if not sizes or any(s < 1 for s in sizes):
            raise ValueError(f"layer_sizes must be non-empty positive ints, got {layer_sizes!r}.")
        self.num_experts, self.layer_sizes = num_experts, sizes
        self.activation, self.seed = activation, seed
        self.experts = []
        for e in range(num_experts):
            layers = []
            for j, size in enumerate(sizes):
                init = tf.keras.initializers.GlorotUniform(
                    seed=None if seed is None else int(seed) + 1000 * e + j)
                layers.append(tf.keras.layers.Dense(size, activation=activation,
                                                    kernel_initializer=init,
                                                    name=f"expert_{e}_dense_{j}"))
            self.experts.append(layers)

    @property
    def units(self) -> int:
        """Width of each expert's output."""
        return self.layer_sizes[-1]

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        outputs = []
        for layers in self.experts:
            x = inputs
            for layer in layers:
                x = layer(x)
            outputs.append(x)
        return tf.stack(outputs, axis=1)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"num_experts": self.num_experts, "layer_sizes": list(self.layer_sizes),
                       "activation": self.activation, "seed": self.seed})
        return config
