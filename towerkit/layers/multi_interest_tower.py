"""The base of multi-interest query towers (MIND, ComiRec-DR, ComiRec-SA)."""

from __future__ import annotations

import abc

import tensorflow as tf

from towerkit.layers.label_aware_attention import LabelAwareAttention

__all__ = ["MultiInterestTower", "HISTORY", "mean_pairwise_cosine"]

HISTORY = "history"


def mean_pairwise_cosine(interests, interest_mask, margin: float = 0.0) -> tf.Tensor:
    """Mean over users with >= 2 active interests of `mean_{j != l} max(0, cos(v_j, v_l) - margin)`.

    With `margin=0` and interests that are never opposed, this is the diagnostic
    `interest_mean_pairwise_cosine` of `towerkit.recipes.multi_interest` (on one batch); it is
    the training penalty of `MultiInterestTower(diversity_weight=...)`.

    Args:
      interests: float `[batch, K, dim]`.
      interest_mask: bool `[batch, K]`, the active interests.
      margin: float in `[-1, 1)`. Cosines at or below it cost nothing.

    Returns:
      float32 scalar (0 when no user has two active interests).
    """
    unit = tf.math.l2_normalize(interests, axis=-1)
    cosine = tf.einsum("bkd,bld->bkl", unit, unit)
    active = tf.cast(interest_mask, cosine.dtype)
    k = tf.shape(active)[1]
    pairs = active[:, :, None] * active[:, None, :] * (1.0 - tf.eye(k, dtype=cosine.dtype))
    count = tf.reduce_sum(pairs, axis=[1, 2])
    per_user = tf.reduce_sum(tf.nn.relu(cosine - margin) * pairs, axis=[1, 2]) / tf.maximum(
        count, 1.0)
    users = tf.cast(count > 0, cosine.dtype)
    return tf.reduce_sum(per_user * users) / tf.maximum(tf.reduce_sum(users), 1.0)


def _serialize(layer):
    return None if layer is None else tf.keras.layers.serialize(layer)


def _deserialize(config):
    return None if config is None else tf.keras.layers.deserialize(config)


class MultiInterestTower(tf.keras.layers.Layer, abc.ABC):
    """Maps a behaviour history to `num_interests` query vectors.

    Subclasses implement `interests(inputs, training) -> (interests, interest_mask)`. This base
    class provides the two ways the vectors are used:

      * `call(inputs)` -> `[batch, num_interests, dim]` for retrieval: each interest searches the
        index and the results are merged by max score. Inactive interests (MIND's dynamic
        interest count) are filled with a copy of the first interest, so a max-merge over all
        `num_interests` slots with duplicates removed equals retrieval with the active ones.
      * `training_vector(inputs, target_embeddings)` -> `[batch, dim]`: the label-aware readout
        (`readout`, a `LabelAwareAttention`) picks or mixes the interests for each target.

    Inputs are a dict with `"history"`: int tensor `[batch, length]` of item indices, 0 =
    padding (a tensor is accepted as the history alone). Other keys are ignored unless the
    subclass uses them.

    Args:
      item_embedding: a Keras layer mapping item indices `[...]` to `[..., dim]` (shared with
        the candidate side).
      num_interests: int. K.
      readout: LabelAwareAttention or None (hard readout by default).
      dropout: float. Dropout rate on the history embeddings in training (0 = none).
      diversity_weight: float >= 0. Adds `diversity_weight * mean_pairwise_cosine(interests,
        mask, diversity_margin)` of the batch to the training loss (`training_outputs`), which
        pushes a user's interests apart; 0 (the base default) = no penalty, the papers' models.
        None of the three papers has this term: it is towerkit's, for towers whose interests
        otherwise collapse into one vector (MIND on MovieLens 100K,
        benchmarks/sequential/RESULTS.md).
      diversity_margin: float in `[-1, 1)`. Pairwise cosines at or below it are not penalised.
    """

    def __init__(self, item_embedding: tf.keras.layers.Layer, num_interests: int,
                 readout=None, dropout: float = 0.0, diversity_weight: float = 0.0,
                 diversity_margin: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(item_embedding, tf.keras.layers.Layer):
            raise TypeError(
                "item_embedding must be a Keras layer (e.g. tf.keras.layers.Embedding("
                f"num_items + 1, dim)), got {type(item_embedding).__name__}.")
        if not isinstance(num_interests, int) or num_interests < 1:
            raise ValueError(f"num_interests must be a positive int, got {num_interests!r}.")
        if readout is None:
            readout = LabelAwareAttention(hard=True)
        if not isinstance(readout, LabelAwareAttention):
            raise TypeError(f"readout must be a LabelAwareAttention, got {type(readout).__name__}.")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
        self.item_embedding = item_embedding
        self.num_interests = num_interests
        self.readout = readout
        if not float(diversity_weight) >= 0.0:
            raise ValueError(f"diversity_weight must be >= 0, got {diversity_weight!r}.")
        if not -1.0 <= float(diversity_margin) < 1.0:
            raise ValueError(f"diversity_margin must be in [-1, 1), got {diversity_margin!r}.")
        self.dropout = float(dropout)
        self.diversity_weight = float(diversity_weight)
        self.diversity_margin = float(diversity_margin)
        self.history_dropout = tf.keras.layers.Dropout(self.dropout, name="history_dropout")

    @staticmethod
    def history_of(inputs) -> tf.Tensor:
        """The `[batch, length]` int history from the inputs (validated)."""
        if isinstance(inputs, dict):
            if HISTORY not in inputs:
                raise ValueError(
                    f"Multi-interest towers need a {HISTORY!r} feature ([batch, length] item "
                    f"indices, 0 = padding); got keys {sorted(inputs)}.")
            history = inputs[HISTORY]
        else:
            history = inputs
        history = tf.convert_to_tensor(history)
        if not history.dtype.is_integer:
            raise TypeError(
                f"history must hold integer item indices, got {history.dtype}. Fix: map TFDS "
                "movie ids to indices first (UserSequences.item_index).")
        if history.shape.rank != 2:
            raise ValueError(
                f"history must be [batch, length], got shape {history.shape}; "
                "add a batch dimension for a single user.")
        return history

    def embed_history(self, inputs, training=None):
        """`(embeddings [batch, length, dim], mask [batch, length] bool)`; padding rows are 0.

        In training, `dropout` is applied to the embeddings (inputs dropout).
        """
        history = self.history_of(inputs)
        mask = tf.not_equal(history, 0)
        embeddings = self.item_embedding(history)
        if self.dropout > 0:
            embeddings = self.history_dropout(embeddings, training=training)
        return embeddings * tf.cast(mask, embeddings.dtype)[:, :, None], mask

    @abc.abstractmethod
    def interests(self, inputs, training=None):
        """Returns `(interests [batch, K, dim], interest_mask [batch, K] bool)`."""

    def call(self, inputs, training=None):
        interests, interest_mask = self.interests(inputs, training=training)
        return tf.where(interest_mask[:, :, None], interests, interests[:, :1, :])

    def training_vector(self, inputs, target_embeddings, training=None):
        """The label-aware user vector `[batch, dim]` for the targets `[batch, dim]`."""
        return self.training_outputs(inputs, target_embeddings, training=training)[0]

    def training_outputs(self, inputs, target_embeddings, training=None):
        """`(training_vector [batch, dim], penalty)`: the penalty (a float32 scalar, 0.0 without
        `diversity_weight`) is `diversity_weight * mean_pairwise_cosine` of the batch's
        interests, to be added to the training loss."""
        interests, interest_mask = self.interests(inputs, training=training)
        vector = self.readout(interests, target_embeddings, interest_mask)
        if self.diversity_weight == 0.0:
            return vector, tf.constant(0.0)
        penalty = mean_pairwise_cosine(tf.cast(interests, tf.float32), interest_mask,
                                       self.diversity_margin)
        return vector, self.diversity_weight * penalty

    def assignments(self, inputs, target_embeddings):
        """Index `[batch]` of the interest with the largest signed score with each target.

        The score is the readout's (dot product, or cosine with `readout.cosine`). Inference
        mode (fixed routing); inactive interests are never picked.
        """
        interests, interest_mask = self.interests(inputs, training=False)
        scores = self.readout.scores(interests, target_embeddings)
        return tf.argmax(tf.where(interest_mask, scores, tf.float32.min), axis=1,
                         output_type=tf.int32)

    def get_config(self):
        config = super().get_config()
        config.update({
            "item_embedding": _serialize(self.item_embedding),
            "num_interests": self.num_interests,
            "readout": _serialize(self.readout),
            "dropout": self.dropout,
            "diversity_weight": self.diversity_weight,
            "diversity_margin": self.diversity_margin,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("item_embedding", "readout") + tuple(cls._layer_arguments):
            if key in config:
                config[key] = _deserialize(config[key])
        return cls(**config)

    _layer_arguments: tuple = ()
