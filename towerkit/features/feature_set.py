"""A named set of feature layers applied to a feature dict and concatenated."""

from __future__ import annotations

from typing import Mapping

import tensorflow as tf

__all__ = ["FeatureSet", "INDEX_SUFFIX"]

INDEX_SUFFIX = ":index"  # key of a feature's looked-up row indices (see FeatureSet.lookup_ids)


@tf.keras.utils.register_keras_serializable(package="towerkit")
class FeatureSet(tf.keras.layers.Layer):
    """Applies one layer per input feature and concatenates the results in key order.

    Extra keys in the input dict are ignored, so one dict of query and candidate features can
    feed both towers. An id feature may come as raw ids (`name`) or as row indices looked up
    beforehand (`name + INDEX_SUFFIX`, from `lookup_ids`); the indices win when both are given.

    Example:
    ```python
    query_features = FeatureSet({"user_id": IdEmbedding(user_ids, 32),
                                 "timestamp": TimestampEmbedding.adapt_from(ts)})
    query_features({"user_id": ..., "timestamp": ..., "item_id": ...})  # [batch, 65]
    ```

    Args:
      features: Mapping[str, tf.keras.layers.Layer]. Feature name -> layer producing
        `[batch, width]`.

    References:
      TFRS context features tutorial:
      https://www.tensorflow.org/recommenders/examples/context_features
    """

    def __init__(self, features: Mapping[str, tf.keras.layers.Layer], **kwargs):
        super().__init__(**kwargs)
        if not features:
            raise ValueError("FeatureSet needs at least one feature layer.")
        for key, layer in features.items():
            if not isinstance(layer, tf.keras.layers.Layer):
                raise TypeError(f"FeatureSet[{key!r}] must be a Keras layer, got {type(layer)}.")
        self.feature_names = sorted(features)
        self.features = {key: features[key] for key in self.feature_names}

    def known_queries(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """bool `[batch]`: True where every id feature (`IdEmbedding`) is in its vocabulary."""
        known = None
        for key in self.feature_names:
            layer = self.features[key]
            if hasattr(layer, "is_known"):
                flag = layer.is_known(inputs[key])
                if flag.shape.rank and flag.shape.rank > 1:
                    flag = tf.reduce_all(flag, axis=list(range(1, flag.shape.rank)))
                known = flag if known is None else tf.logical_and(known, flag)
        if known is None:
            first = tf.convert_to_tensor(inputs[self.feature_names[0]])
            known = tf.ones(tf.shape(first)[:1], tf.bool)
        return known

    def lookup_ids(self, inputs: Mapping[str, tf.Tensor]) -> dict:
        """`{name + INDEX_SUFFIX: row indices}` for every id feature (layers with `lookup_ids`).

        Run it once in the input pipeline (`dataset.map`): `call` then embeds the indices
        without looking the ids up again in each training step, and a training step without
        string ops can be compiled (`jit_compile`). Serving keeps calling the layer on raw ids.
        """
        return {key + INDEX_SUFFIX: self.features[key].lookup_ids(inputs[key])
                for key in self.feature_names
                if hasattr(self.features[key], "lookup_ids") and key in inputs}

    def call(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        if not isinstance(inputs, Mapping):
            raise TypeError(f"{self.name} expects a dict of features {self.feature_names}, got "
                            f"{type(inputs).__name__}.")
        missing = [k for k in self.feature_names if k not in inputs
                   and k + INDEX_SUFFIX not in inputs]
        if missing:
            raise ValueError(f"{self.name} is missing features {missing}; it needs "
                             f"{self.feature_names} (got {sorted(inputs)}).")
        outputs = [self.features[k].embed_indices(inputs[k + INDEX_SUFFIX])
                   if k + INDEX_SUFFIX in inputs else self.features[k](inputs[k])
                   for k in self.feature_names]
        return outputs[0] if len(outputs) == 1 else tf.concat(outputs, axis=-1)

    def get_config(self) -> dict:
        config = super().get_config()
        config["features"] = {k: tf.keras.layers.serialize(v) for k, v in self.features.items()}
        return config

    @classmethod
    def from_config(cls, config: dict) -> "FeatureSet":
        config = dict(config)
        config["features"] = {k: tf.keras.layers.deserialize(v)
                              for k, v in config["features"].items()}
        return cls(**config)
