"""A tower: raw feature dict -> embedding, as `FeatureSet` followed by an optional `MLP`."""

from __future__ import annotations

from typing import Mapping, Optional

import tensorflow as tf

from towerkit.features import FeatureSet
from towerkit.models.mlp import MLP

__all__ = ["Tower"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class Tower(tf.keras.layers.Layer):
    """Maps a dict of raw features to a `[batch, dim]` embedding.

    `features` turns each raw feature into a vector and concatenates them; `mlp` (optional)
    transforms the result; `l2_normalize` puts the output on the unit sphere (cosine scores,
    pair it with a `temperature` in the retrieval task).

    Example:
    ```python
    query_tower = Tower(FeatureSet({"user_id": IdEmbedding(user_ids, 32)}))
    query_tower({"user_id": tf.constant(["42"])})  # [1, 32]
    ```

    Args:
      features: FeatureSet. The tower's input features.
      mlp: MLP or None. Dense layers on top of the concatenated features.
      l2_normalize: bool. L2-normalise the output.

    References:
      Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
      Recommendations", RecSys 2019 (two-tower model): https://doi.org/10.1145/3298689.3346996
    """

    def __init__(self, features: FeatureSet, mlp: Optional[MLP] = None,
                 l2_normalize: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(features, FeatureSet):
            raise TypeError(f"Tower features must be a FeatureSet, got {type(features).__name__}.")
        self.features = features
        self.mlp = mlp
        self.l2_normalize = bool(l2_normalize)

    @property
    def feature_names(self) -> list:
        """The raw feature keys the tower reads."""
        return list(self.features.feature_names)

    def known_queries(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """bool `[batch]`: True where every id feature of the row is in the tower's vocabularies
        (False: the row's embedding comes from the out-of-vocabulary rows, i.e. a fallback)."""
        return self.features.known_queries(inputs)

    def lookup_ids(self, inputs: Mapping[str, tf.Tensor]) -> dict:
        """Row indices of the tower's id features (see `FeatureSet.lookup_ids`)."""
        return self.features.lookup_ids(inputs)

    def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        x = self.features(inputs)
        if self.mlp is not None:
            x = self.mlp(x)
        if self.l2_normalize:
            x = tf.math.l2_normalize(x, axis=-1)
        return x

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "features": tf.keras.layers.serialize(self.features),
            "mlp": tf.keras.layers.serialize(self.mlp) if self.mlp is not None else None,
            "l2_normalize": self.l2_normalize})
        return config

    @classmethod
    def from_config(cls, config: dict) -> "Tower":
        config = dict(config)
        config["features"] = tf.keras.layers.deserialize(config["features"])
        if config.get("mlp") is not None:
            config["mlp"] = tf.keras.layers.deserialize(config["mlp"])
        return cls(**config)
