"""The base of multi-interest query towers (MIND, ComiRec-DR, ComiRec-SA)."""

from __future__ import annotations

import abc

import tensorflow as tf

from towerkit.layers.label_aware_attention import LabelAwareAttention

__all__ = ["MultiInterestTower", "HISTORY"]

HISTORY = "history"


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
    """

    def __init__(self, item_embedding: tf.keras.layers.Layer, num_interests: int,
                 readout=None, dropout: float = 0.0, **kwargs):
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
        self.dropout = float(dropout)
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
        interests, interest_mask = self.interests(inputs, training=training)
        return self.readout(interests, target_embeddings, interest_mask)

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
