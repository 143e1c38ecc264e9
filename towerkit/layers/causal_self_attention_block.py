"""One SASRec self-attention block: causal multi-head self-attention and a point-wise
feed-forward network, each as `x + Dropout(sublayer(LayerNorm(x)))`."""

from __future__ import annotations

import math

import tensorflow as tf

__all__ = ["CausalSelfAttentionBlock"]

# Logit of a forbidden (later or padded) key before the softmax; its weight is then also
# multiplied by 0, so it is exactly 0 even in a row with no allowed key.
_MASKED_LOGIT = -1e9


@tf.keras.utils.register_keras_serializable(package="towerkit")
class CausalSelfAttentionBlock(tf.keras.layers.Layer):
    """A SASRec block over a padded sequence; position `t` only sees positions `<= t`.

    With the sequence `X [length, d]` of one user, valid-position mask `m` and `h` heads of
    width `d / h` (Section III-B/C of the paper, with its pre-layer-norm residual
    `g(x) = x + Dropout(g(LayerNorm(x)))`):

        Z = LayerNorm_1(X)
        per head j: A_j = softmax(Q_j K_j^T / sqrt(d / h) + causal/padding mask),
                    Q_j = Z W_Q^j + b, K_j = Z W_K^j + b, V_j = Z W_V^j + b
        S = X + Dropout([A_1 V_1, ..., A_h V_h])           # heads concatenated, width d
        F = S + Dropout(ReLU(LayerNorm_2(S) W_1 + b_1) W_2 + b_2)
        output = F * m                                       # padded positions are zeros

    The mask lets query `t` attend to key `s` only when `s <= t` (causality: no position sees a
    later one) and `s` is a valid position; forbidden weights are exactly 0. A padded query
    row (or one with no valid key) attends to nothing: its weights are all 0, and the output is
    zeroed at padded positions anyway, as the paper's code does after every block. `W_1, W_2`
    are `d x d` (the paper's point-wise feed-forward of width d). The heads are concatenated
    without an output projection: with one head (the paper's setting) this is exactly
    `S = SA(X)` of Eq. (2).

    Args:
      num_heads: int. Attention heads; must divide the input width d.
      dropout_rate: float in [0, 1). Dropout on both sublayer outputs (training only).
      epsilon: float. Layer-norm epsilon.
      kernel_initializer: initializer of the projection and feed-forward kernels.

    Call args:
      inputs: float tensor `[batch, length, d]`.
      mask: bool tensor `[batch, length]`, True at valid positions (default: all valid).
      training: bool. Applies dropout when True.
      return_attention_scores: bool. Also returns the attention weights.

    Returns:
      `[batch, length, d]`, zeros at padded positions; with `return_attention_scores`, also the
      weights `[batch, num_heads, length (queries), length (keys)]`.

    Raises:
      ValueError: on a bad argument, an input that is not `[batch, length, d]`, or a d that
        `num_heads` does not divide.

    Example:
      >>> block = CausalSelfAttentionBlock(num_heads=2, dropout_rate=0.2)
      >>> out = block(tf.random.normal([4, 20, 64]), mask=tf.sequence_mask([3, 20, 1, 7], 20))

    References:
      Kang and McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018,
      https://arxiv.org/abs/1808.09781 (Section III-B, III-C); multi-head attention after
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
    """

    def __init__(self, num_heads: int = 1, dropout_rate: float = 0.0, epsilon: float = 1e-8,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_heads must be a positive int, got {num_heads!r}.")
        if (isinstance(dropout_rate, bool) or not isinstance(dropout_rate, (int, float))
                or not 0.0 <= dropout_rate < 1.0):
            raise ValueError(f"dropout_rate must be a float in [0, 1), got {dropout_rate!r}.")
        if not isinstance(epsilon, (int, float)) or epsilon <= 0:
            raise ValueError(f"epsilon must be a positive float, got {epsilon!r}.")
        self.num_heads = num_heads
        self.dropout_rate = float(dropout_rate)
        self.epsilon = float(epsilon)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 3 or input_shape[-1] is None:
            raise ValueError("CausalSelfAttentionBlock expects inputs [batch, length, d] with a "
                             f"known d, got shape {input_shape}.")
        dim = int(input_shape[-1])
        if dim % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} must divide the input width {dim}; "
                             "choose a divisor of the embedding dimension.")
        init = lambda: tf.keras.initializers.get(  # noqa: E731  (a fresh copy per weight)
            tf.keras.initializers.serialize(self.kernel_initializer))
        self.attention_norm = tf.keras.layers.LayerNormalization(epsilon=self.epsilon,
                                                                 name="attention_norm")
        self.query_dense = tf.keras.layers.Dense(dim, kernel_initializer=init(), name="query")
        self.key_dense = tf.keras.layers.Dense(dim, kernel_initializer=init(), name="key")
        self.value_dense = tf.keras.layers.Dense(dim, kernel_initializer=init(), name="value")
        self.feed_forward_norm = tf.keras.layers.LayerNormalization(epsilon=self.epsilon,
                                                                    name="feed_forward_norm")
        self.feed_forward_1 = tf.keras.layers.Dense(dim, activation="relu",
                                                    kernel_initializer=init(),
                                                    name="feed_forward_1")
        self.feed_forward_2 = tf.keras.layers.Dense(dim, kernel_initializer=init(),
                                                    name="feed_forward_2")
        self.dropout = tf.keras.layers.Dropout(self.dropout_rate)
        for layer in (self.attention_norm, self.query_dense, self.key_dense, self.value_dense,
                      self.feed_forward_norm, self.feed_forward_1, self.feed_forward_2):
            layer.build(input_shape)
        super().build(input_shape)

    def _split_heads(self, x: tf.Tensor) -> tf.Tensor:
        """`[batch, length, d]` -> `[batch, heads, length, d / heads]`."""
        batch, length = tf.shape(x)[0], tf.shape(x)[1]
        x = tf.reshape(x, [batch, length, self.num_heads, x.shape[-1] // self.num_heads])
        return tf.transpose(x, [0, 2, 1, 3])

    def call(self, inputs: tf.Tensor, mask=None, training: bool = False,
             return_attention_scores: bool = False):
        inputs = tf.convert_to_tensor(inputs)
        length = tf.shape(inputs)[1]
        if mask is None:
            mask = tf.ones(tf.shape(inputs)[:2], tf.bool)
        mask = tf.cast(mask, tf.bool)
        dim = inputs.shape[-1]
        head_dim = dim // self.num_heads

        z = self.attention_norm(inputs)
        q = self._split_heads(self.query_dense(z))
        k = self._split_heads(self.key_dense(z))
        v = self._split_heads(self.value_dense(z))
        logits = tf.matmul(q, k, transpose_b=True) / math.sqrt(head_dim)  # [b, h, t, s]
        # allowed[b, t, s]: key s is not later than query t, and s is a valid position.
        causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
        allowed = tf.logical_and(causal[tf.newaxis], mask[:, tf.newaxis, :])[:, tf.newaxis]
        logits = tf.where(allowed, logits, tf.cast(_MASKED_LOGIT, logits.dtype))
        weights = tf.nn.softmax(logits, axis=-1) * tf.cast(allowed, logits.dtype)
        heads = tf.matmul(weights, v)  # [b, h, t, d / h]
        heads = tf.reshape(tf.transpose(heads, [0, 2, 1, 3]), [tf.shape(inputs)[0], length, dim])
        x = inputs + self.dropout(heads, training=training)

        ff = self.feed_forward_2(self.feed_forward_1(self.feed_forward_norm(x)))
        x = x + self.dropout(ff, training=training)
        x = x * tf.cast(mask, x.dtype)[:, :, tf.newaxis]
        return (x, weights) if return_attention_scores else x

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"num_heads": self.num_heads, "dropout_rate": self.dropout_rate,
                       "epsilon": self.epsilon,
                       "kernel_initializer": tf.keras.initializers.serialize(
                           self.kernel_initializer)})
        return config
