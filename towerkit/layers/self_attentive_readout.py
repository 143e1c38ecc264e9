"""The multi-head self-attentive readout of ComiRec-SA: `A = softmax(W2^T tanh(W1 H))`."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

__all__ = ["SelfAttentiveReadout"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class SelfAttentiveReadout(tf.keras.layers.Layer):
    """Reads `num_interests` vectors out of a masked sequence with additive self-attention.

    With the sequence `H [length, dim]` of one user, `W1 [dim, hidden]` and
    `W2 [hidden, num_interests]`:

        A = softmax_over_positions(tanh(H W1) W2)      # [length, num_interests]
        V = A^T H                                      # [num_interests, dim]

    which is the paper's `A = softmax(W2^T tanh(W1 H))^T`, `V_u = H A` with `H` stored row-wise.
    The softmax runs over valid positions only: padded positions get weight exactly 0 and each
    head's weights sum to 1 over the valid positions. As in the paper's equations, `W1` and `W2`
    have no bias. A history with no valid position reads out zeros.

    Args:
      num_interests: int. K, the number of attention heads (interests).
      hidden_units: int or None. Width of `W1`; defaults to 4 * dim (the paper's `d_a = 4d`).
      kernel_initializer: initializer of `W1` and `W2`.

    Call args:
      inputs: float tensor `[batch, length, dim]`. The sequence the attention reads (item +
        position embeddings in ComiRec-SA).
      mask: bool tensor `[batch, length]`. True at valid positions.
      values: optional float tensor `[batch, length, dim_v]` read out with the attention
        weights instead of `inputs` (`V = A^T values`; ComiRec's code reads the item
        embeddings without positions).

    Returns:
      `[batch, num_interests, dim]` interest vectors.

    Example:
      >>> readout = SelfAttentiveReadout(num_interests=4)
      >>> interests = readout(tf.random.normal([2, 20, 32]), mask=tf.ones([2, 20], bool))

    References:
      Cen et al., "Controllable Multi-Interest Framework for Recommendation", KDD 2020,
      https://arxiv.org/abs/2005.09347 (Section 3.2, self-attentive method), after
      Lin et al., "A Structured Self-attentive Sentence Embedding", ICLR 2017.
    """

    def __init__(self, num_interests: int, hidden_units: Optional[int] = None,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_interests, int) or num_interests < 1:
            raise ValueError(f"num_interests must be a positive int, got {num_interests!r}.")
        if hidden_units is not None and (not isinstance(hidden_units, int) or hidden_units < 1):
            raise ValueError(f"hidden_units must be a positive int or None, got {hidden_units!r}.")
        self.num_interests = num_interests
        self.hidden_units = hidden_units
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        hidden = self.hidden_units or 4 * dim
        # A fresh initializer per weight: tf-keras warns when one instance is reused.
        fresh = tf.keras.initializers.serialize(self.kernel_initializer)
        self.w1 = self.add_weight("w1", shape=[dim, hidden],
                                  initializer=tf.keras.initializers.get(fresh))
        self.w2 = self.add_weight("w2", shape=[hidden, self.num_interests],
                                  initializer=tf.keras.initializers.get(fresh))
        super().build(input_shape)

    def attention(self, inputs, mask=None):
        """The attention matrix `A [batch, length, num_interests]` (0 on padding)."""
        inputs = tf.convert_to_tensor(inputs)
        if inputs.shape.rank != 3:
            raise ValueError(
                "SelfAttentiveReadout expects [batch, length, dim] inputs, "
                f"got shape {inputs.shape}.")
        if not inputs.dtype.is_floating:
            raise TypeError(f"SelfAttentiveReadout expects float inputs, got {inputs.dtype}.")
        if not self.built:
            self.build(inputs.shape)
        scores = tf.einsum("blh,hk->blk", tf.tanh(tf.einsum("bld,dh->blh", inputs, self.w1)),
                           self.w2)
        if mask is None:
            return tf.nn.softmax(scores, axis=1)
        valid = tf.cast(mask, tf.bool)[:, :, None]
        weights = tf.nn.softmax(tf.where(valid, scores, -1e9), axis=1)
        return tf.where(valid, weights, 0.0)

    def call(self, inputs, mask=None, values=None):
        weights = self.attention(inputs, mask)
        values = inputs if values is None else tf.convert_to_tensor(values, inputs.dtype)
        return tf.einsum("blk,bld->bkd", weights, values)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_interests": self.num_interests,
            "hidden_units": self.hidden_units,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
        })
        return config
