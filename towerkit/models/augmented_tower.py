"""A tower whose input carries a learned per-id augmented vector (DAT's `a_u` / `a_v`)."""

from __future__ import annotations

from typing import Mapping, Optional

import tensorflow as tf

from towerkit.features import FeatureSet, IdEmbedding
from towerkit.models.mlp import MLP

__all__ = ["AugmentedTower"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class AugmentedTower(tf.keras.layers.Layer):
    """`p = l2_normalize(MLP([features(x), a_id]))`: a tower with an augmented vector.

    The Dual Augmented Two-tower model (DAT) concatenates, at each tower's input, the field
    embeddings `[e_1, ..., e_n]` (here: a `FeatureSet`, the same features as `two_tower`) with
    an augmented vector `a` looked up by the example's id (`a_u` by user id in the query tower,
    `a_v` by item id in the candidate tower): `z = [e_1, ..., e_n, a]`. An `MLP` maps `z` to the
    tower output, which is L2-normalised (`p_u`, `p_v`). The augmented vector is learned by the
    main loss through the tower and by the Adaptive-Mimic loss, which pulls it towards the
    *other* tower's output (`towerkit.tasks.AdaptiveMimicLoss`); its width must therefore equal
    the tower's output width.

    Unknown ids: the augmented table is an `IdEmbedding` with one out-of-vocabulary row. No
    training id reaches that row (vocabularies are built from the training data), so it keeps
    its initial value. The `dat` recipe builds the table with `embeddings_initializer="zeros"`,
    so an unknown user or item gets `a = 0`: the tower sees "no augmentation information" and
    its output depends on the other features only, through the trained weights. (With a random
    initializer the OOV row would be a fixed random vector.)

    Without `augment` the layer is the plain tower (the ablation "same towers, no
    augmentation"): `p = l2_normalize(MLP(features(x)))`.

    Example:
    ```python
    users = user_vocabulary.as_list()
    query_tower = AugmentedTower(FeatureSet({"user_id": IdEmbedding(users, 32)}),
                                 MLP([64, 32]), augment=IdEmbedding(users, 32),
                                 augment_key="user_id")
    p_u, a_u = query_tower.encode({"user_id": tf.constant(["42"])})  # [1, 32], [1, 32]
    p_u = query_tower({"user_id": tf.constant(["42"])})              # serving: [1, 32]
    ```

    Args:
      features: FeatureSet. The tower's input features.
      mlp: MLP. Dense layers on `[features, a]`; its last width is the output width.
      augment: IdEmbedding or None. The augmented-vector table, width = the MLP's last width.
      augment_key: str or None. The feature holding the id that indexes `augment` (required with
        `augment`).
      l2_normalize: bool. L2-normalise the output (DAT does).

    Raises:
      TypeError: `features` is not a FeatureSet, `mlp` not an MLP, `augment` not an IdEmbedding.
      ValueError: `augment` without `augment_key`, or its width differs from the MLP's output.

    References:
      Yu et al., "A Dual Augmented Two-tower Model for Online Large-scale Recommendation",
      DLP-KDD 2021 (workshop proceedings: https://dlp-kdd.github.io/).
    """

    def __init__(self, features: FeatureSet, mlp: MLP, augment: Optional[IdEmbedding] = None,
                 augment_key: Optional[str] = None, l2_normalize: bool = True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(features, FeatureSet):
            raise TypeError(f"AugmentedTower features must be a FeatureSet, got "
                            f"{type(features).__name__}.")
        if not isinstance(mlp, MLP):
            raise TypeError(f"AugmentedTower mlp must be an MLP, got {type(mlp).__name__}.")
        if augment is not None:
            if not isinstance(augment, IdEmbedding):
                raise TypeError(f"augment must be an IdEmbedding, got {type(augment).__name__}.")
            if not augment_key:
                raise ValueError("augment needs augment_key, the feature holding the id that "
                                 "indexes the augmented vectors (e.g. 'user_id').")
            if augment.embedding_dim != mlp.layer_sizes[-1]:
                raise ValueError(
                    f"The augmented vectors ({augment.embedding_dim} wide) must be as wide as the "
                    f"tower output ({mlp.layer_sizes[-1]}) to mimic the other tower; set the "
                    "augment width to the MLP's last layer size.")
        self.features = features
        self.mlp = mlp
        self.augment = augment
        self.augment_key = augment_key if augment is not None else None
        self.l2_normalize = bool(l2_normalize)

    @property
    def feature_names(self) -> list:
        """The raw feature keys the tower reads."""
        names = set(self.features.feature_names)
        if self.augment_key:
            names.add(self.augment_key)
        return sorted(names)

    def known_queries(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """bool `[batch]`: True where every id feature is in the tower's vocabularies (False:
        the row's embeddings, augmented vector included, come from out-of-vocabulary rows)."""
        known = self.features.known_queries(inputs)
        if self.augment is not None and hasattr(self.augment, "is_known"):
            known = tf.logical_and(known, self.augment.is_known(inputs[self.augment_key]))
        return known

    def augmented_vector(self, inputs: Mapping[str, tf.Tensor]) -> Optional[tf.Tensor]:
        """The augmented vectors `a` `[batch, dim]` of the inputs' ids (None without augment)."""
        if self.augment is None:
            return None
        if self.augment_key not in inputs:
            raise ValueError(f"{self.name} needs feature {self.augment_key!r} for its augmented "
                             f"vectors; got {sorted(inputs)}.")
        return self.augment(inputs[self.augment_key])

    def encode(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> tuple:
        """Returns `(p, a)`: the output `[batch, dim]` and the augmented vector (or None)."""
        x = self.features(inputs)
        augmented = self.augmented_vector(inputs)
        if augmented is not None:
            x = tf.concat([x, tf.cast(augmented, x.dtype)], axis=-1)
        p = self.mlp(x, training=training)
        if self.l2_normalize:
            p = tf.math.l2_normalize(p, axis=-1)
        return p, augmented

    def call(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        return self.encode(inputs, training=training)[0]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "features": tf.keras.layers.serialize(self.features),
            "mlp": tf.keras.layers.serialize(self.mlp),
            "augment": (tf.keras.layers.serialize(self.augment)
                        if self.augment is not None else None),
            "augment_key": self.augment_key,
            "l2_normalize": self.l2_normalize})
        return config

    @classmethod
    def from_config(cls, config: dict) -> "AugmentedTower":
        config = dict(config)
        for key in ("features", "mlp", "augment"):
            if config.get(key) is not None:
                config[key] = tf.keras.layers.deserialize(config[key])
        return cls(**config)
