"""Label-aware attention: reads one training vector out of several interests, given the target."""

from __future__ import annotations

import math

import tensorflow as tf

__all__ = ["LabelAwareAttention"]


@tf.keras.utils.register_keras_serializable(package="towerkit")
class LabelAwareAttention(tf.keras.layers.Layer):
    """Attends over a user's interest vectors with the target item as the query.

    Scores are the signed dot products `s_k = v_k . e_target`. The readout is
    `v = sum_k a_k v_k` with

      * `hard=False`: `a = softmax(p * s)` over the active interests;
      * `hard=True`:  `a = one_hot(argmax_k s_k)` (the largest *signed* dot; ComiRec's training
        readout, and the `p -> inf` limit of MIND's).

    MIND writes `a = softmax(pow(s, p))`. Taken literally that drops the sign of negative scores
    for even `p` (a strongly anti-aligned interest wins) and overflows float32 for `p` around
    100. The paper's intent is a sharpness knob: `p = 0` is uniform attention, `p = 1` ordinary
    dot-product attention, `p -> inf` hard attention. `softmax(p * s)` matches the paper exactly
    at those three points, is monotone in the signed score for every `p > 0`, and cannot
    overflow (softmax subtracts the maximum). That is the choice made here.

    With `cosine=True` the scores are `s_k = cos(v_k, e_target)`. Use it when retrieval scores
    by cosine (`l2_normalize`): an item is then retrieved by the interest with the largest
    cosine, so training that interest on the target keeps training and retrieval in agreement.
    Raw dots would favour interests with a larger norm, which retrieval ignores.

    Args:
      p: float >= 0. Sharpness. Ignored when `hard`.
      hard: bool. Pick the single interest with the largest signed score.
      cosine: bool. Score by cosine instead of the dot product.

    Call args:
      interests: float tensor `[batch, num_interests, dim]`.
      target: float tensor `[batch, dim]`. Target item embeddings.
      interest_mask: optional bool tensor `[batch, num_interests]`; inactive interests get
        weight 0 (and are never picked by the hard readout).

    Returns:
      `[batch, dim]` user vectors for the targets.

    Example:
      >>> attention = LabelAwareAttention(hard=True)
      >>> user = attention(tf.random.normal([2, 4, 8]), tf.random.normal([2, 8]))

    References:
      Li et al., "Multi-Interest Network with Dynamic Routing for Recommendation at Tmall",
      CIKM 2019, https://arxiv.org/abs/1904.08030 (Section 4.3).
      Cen et al., "Controllable Multi-Interest Framework for Recommendation", KDD 2020,
      https://arxiv.org/abs/2005.09347 (Section 3.3, `argmax` readout).
    """

    def __init__(self, p: float = 1.0, hard: bool = False, cosine: bool = False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not p >= 0:
            raise ValueError(f"p must be a float >= 0, got {p!r}.")
        if math.isinf(p):
            raise ValueError("p = inf is the hard readout: pass hard=True instead.")
        self.p = float(p)
        self.hard = bool(hard)
        self.cosine = bool(cosine)

    def attention(self, interests, target, interest_mask=None):
        """The weights `[batch, num_interests]` (one-hot when `hard`)."""
        interests = tf.convert_to_tensor(interests)
        target = tf.convert_to_tensor(target, dtype=interests.dtype)
        if interests.shape.rank != 3 or target.shape.rank != 2:
            raise ValueError(
                "LabelAwareAttention expects interests [batch, num_interests, dim] and target "
                f"[batch, dim], got {interests.shape} and {target.shape}.")
        scores = self.scores(interests, target)
        logits = scores if self.hard else self.p * scores
        if interest_mask is not None:
            interest_mask = tf.cast(interest_mask, tf.bool)
            logits = tf.where(interest_mask, logits, -1e30)
        if self.hard:
            return tf.one_hot(tf.argmax(logits, axis=1), tf.shape(interests)[1],
                              dtype=interests.dtype)
        weights = tf.nn.softmax(logits, axis=1)
        if interest_mask is not None:
            weights = tf.where(interest_mask, weights, 0.0)
        return weights

    def scores(self, interests, target):
        """The signed scores `[batch, num_interests]`: dot products, or cosines if `cosine`."""
        if self.cosine:
            interests = tf.math.l2_normalize(interests, axis=-1)
            target = tf.math.l2_normalize(target, axis=-1)
        return tf.einsum("bkd,bd->bk", interests, target)

    def call(self, interests, target, interest_mask=None):
        weights = self.attention(interests, target, interest_mask)
        return tf.einsum("bk,bkd->bd", weights, interests)

    def get_config(self):
        config = super().get_config()
        config.update({"p": self.p, "hard": self.hard, "cosine": self.cosine})
        return config
