"""ComiRec-SA: the self-attentive multi-interest extractor of ComiRec (Cen et al., KDD 2020)."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from towerkit.layers.multi_interest_tower import MultiInterestTower
from towerkit.layers.self_attentive_readout import SelfAttentiveReadout

__all__ = ["ComiRecSA", "READOUT_SOURCES"]

READOUT_SOURCES = ("items", "items_and_positions")


@tf.keras.utils.register_keras_serializable(package="towerkit")
class ComiRecSA(MultiInterestTower):
    """The ComiRec-SA query tower: multi-head self-attention over the history.

    `H` is the history's item embeddings plus a trainable position embedding per slot;
    `A = softmax(W2^T tanh(W1 H))` over the valid positions (padding gets weight 0)
    (`SelfAttentiveReadout`). The interests are `V = E A`, with `E` the item embeddings alone
    (`readout_source="items"`, the default: the authors' code adds the positions only where
    the attention is computed, `interest_emb = matmul(item_att_w, item_list_emb)`), or
    `V = H A` (`"items_and_positions"`: the paper's `V_u = H A` read with `H` including the
    positions, towerkit's form before the option existed). Training picks, for each target,
    the interest with the largest signed dot product (`argmax`, ComiRec Section 3.3).
    Differences from the authors' code: `W1` and `W2` have no bias (the paper's equations;
    the code's dense layers have biases), and positions are counted from the oldest valid
    behaviour (the code's slot index, the same for right-padded histories).

    Positions are the rank among the valid behaviours (oldest fed item = 0), which is the slot
    index of towerkit's left-aligned, right-padded histories.

    Args:
      item_embedding: Keras layer, item indices -> `[..., dim]`.
      num_interests: int. K.
      max_length: int. Longest history fed (one position embedding per slot).
      hidden_units: int or None. Width of `W1` (default 4 * dim, as in the paper).
      readout_source: str. `"items"` (default) or `"items_and_positions"`: what the attention
        weights read the interests out of (see above).
      readout: LabelAwareAttention or None (argmax readout by default).
      dropout: float. Dropout rate on the history embeddings in training.

    Call args:
      inputs: dict with `"history"` `[batch, length <= max_length]` int item indices (0 = pad).

    Returns:
      `[batch, num_interests, dim]` interest vectors.

    Example:
      >>> tower = ComiRecSA(tf.keras.layers.Embedding(1350, 64), num_interests=4, max_length=20)
      >>> vectors = tower({"history": tf.constant([[5, 9, 2, 0]])})     # [1, 4, 64]

    References:
      Cen et al., "Controllable Multi-Interest Framework for Recommendation", KDD 2020,
      https://arxiv.org/abs/2005.09347 (Section 3.2, self-attentive method).
    """

    def __init__(self, item_embedding, num_interests: int = 4, max_length: int = 20,
                 hidden_units: Optional[int] = None, readout=None,
                 readout_source: str = "items", **kwargs):
        super().__init__(item_embedding, num_interests, readout=readout, **kwargs)
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}.")
        if readout_source not in READOUT_SOURCES:
            raise ValueError(f"readout_source must be one of {READOUT_SOURCES}, got "
                             f"{readout_source!r}.")
        self.readout_source = readout_source
        self.max_length = max_length
        self.hidden_units = hidden_units
        self.attention = SelfAttentiveReadout(num_interests, hidden_units=hidden_units,
                                              name="attention")
        self.position_embedding = None

    def build(self, input_shape):
        dim = getattr(self.item_embedding, "output_dim", None)
        if dim is None:
            raise ValueError("ComiRecSA needs item_embedding.output_dim "
                             "(a tf.keras.layers.Embedding).")
        self.position_embedding = self.add_weight(
            "position_embedding", shape=[self.max_length, int(dim)],
            initializer=tf.keras.initializers.RandomNormal(stddev=0.02))
        super().build(input_shape)

    def _sequence(self, inputs, training=None):
        """`(H [batch, length, dim], E [batch, length, dim], mask)`: item + position
        embeddings and item embeddings alone, 0 on padding."""
        if self.position_embedding is None:
            self.build(None)
        embeddings, mask = self.embed_history(inputs, training=training)
        positions = tf.maximum(tf.cumsum(tf.cast(mask, tf.int32), axis=1) - 1, 0)
        positions = tf.minimum(positions, self.max_length - 1)
        valid = tf.cast(mask, embeddings.dtype)[:, :, None]
        h = embeddings + tf.gather(self.position_embedding, positions) * valid
        return h, embeddings, mask

    def interests(self, inputs, training=None):
        h, items, mask = self._sequence(inputs, training=training)
        values = items if self.readout_source == "items" else h
        interests = self.attention(h, mask=mask, values=values)
        return interests, tf.ones([tf.shape(interests)[0], self.num_interests], tf.bool)

    def attention_weights(self, inputs):
        """`A [batch, length, num_interests]` (0 on padding, columns sum to 1)."""
        h, _, mask = self._sequence(inputs)
        return self.attention.attention(h, mask)

    def get_config(self):
        config = super().get_config()
        config.update({"max_length": self.max_length, "hidden_units": self.hidden_units,
                       "readout_source": self.readout_source})
        return config
