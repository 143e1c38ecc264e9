"""ComiRec-DR: the dynamic-routing multi-interest extractor of ComiRec (Cen et al., KDD 2020)."""

from __future__ import annotations

import tensorflow as tf

from towerkit.layers.capsule_routing import CapsuleRouting, l2_or_none as _l2
from towerkit.layers.multi_interest_tower import MultiInterestTower

__all__ = ["ComiRecDR"]

DEFAULT_STDDEV = 0.3  # of the routing transforms W (see `kernel_initializer`)


@tf.keras.utils.register_keras_serializable(package="towerkit")
class ComiRecDR(MultiInterestTower):
    """The ComiRec-DR query tower: capsule routing with per-(input, interest) transforms.

    Unlike MIND, each (behaviour position i, interest j) pair has its own matrix `W_ij`
    (`e_hat_j|i = W_ij e_i`), the routing logits start at zero (no randomness: the separate
    matrices already break the symmetry), the coupling coefficients are a softmax over
    interests, and all `K` interests are always active. The capsules are the interest vectors
    (no extra layers). Training picks, for each target, the interest with the largest signed
    dot product (`argmax`, ComiRec Section 3.3). No gradient flows through the routing
    coefficients (see `CapsuleRouting`).

    Positions are the rank among the valid behaviours, counted from the oldest fed item
    (`position_order="oldest_first"`: the slot index of towerkit's left-aligned, right-padded
    histories, as in the authors' code) or from the most recent one (`"recent_first"`: `W_0j`
    always transforms the latest behaviour, `W_1j` the one before, whatever the history's
    length). The paper indexes `W_ij` by "behaviour i" without fixing the order.

    Args:
      item_embedding: Keras layer, item indices -> `[..., dim]`.
      num_interests: int. K.
      max_length: int. Longest history fed (one `W` per position).
      routing_iterations: int. 3 in the paper.
      weight_decay: float. L2 penalty `weight_decay * sum(W^2)` on the routing transforms,
        added to the training loss (`self.losses`); 0 = none. The paper trains without it,
        but its `K * max_length` matrices overfit MovieLens 100k (see the recipe).
      kernel_initializer: initializer of the transforms `W`; None (default) =
        `RandomNormal(stddev=0.3)`, chosen on the valid users. `"glorot_normal"` (the former
        default) computes its fans over the whole `[max_length, K, dim, dim]` tensor (stddev
        about 0.014 for 20 x 4 x 64 x 64): the agreements `u_j . W_ij e_i` are then ~1e-4 and
        the coupling coefficients stay at 1/K (routing does nothing). The authors' code draws
        `W` from `tf.random_normal_initializer()` (stddev 1.0): pass
        `tf.keras.initializers.RandomNormal(stddev=1.0)` for that; on MovieLens 100K it
        routes most but trains to a lower recall (benchmarks/sequential/RESULTS.md).
      position_order: str. `"oldest_first"` or `"recent_first"` (see above).
      readout: LabelAwareAttention or None (argmax of the dot product by default). With cosine
        scores pass `LabelAwareAttention(hard=True, cosine=True)`, as the `comirec_dr` recipe
        does: it trains the interest that cosine retrieval ranks the target by.
      dropout: float. Dropout rate on the history embeddings in training.

    Call args:
      inputs: dict with `"history"` `[batch, length <= max_length]` int item indices (0 = pad).

    Returns:
      `[batch, num_interests, dim]` interest vectors.

    Example:
      >>> tower = ComiRecDR(tf.keras.layers.Embedding(1350, 64), num_interests=4, max_length=20)
      >>> vectors = tower({"history": tf.constant([[5, 9, 2, 0]])})     # [1, 4, 64]

    References:
      Cen et al., "Controllable Multi-Interest Framework for Recommendation", KDD 2020,
      https://arxiv.org/abs/2005.09347 (Section 3.2, dynamic routing).
    """

    def __init__(self, item_embedding, num_interests: int = 4, max_length: int = 20,
                 routing_iterations: int = 3, weight_decay: float = 0.0,
                 kernel_initializer=None, position_order: str = "oldest_first",
                 readout=None, **kwargs):
        super().__init__(item_embedding, num_interests, readout=readout, **kwargs)
        self.max_length = max_length
        self.routing_iterations = routing_iterations
        self.weight_decay = float(weight_decay)
        self.position_order = position_order
        if kernel_initializer is None:
            kernel_initializer = tf.keras.initializers.RandomNormal(stddev=DEFAULT_STDDEV)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.routing = CapsuleRouting(num_interests, iterations=routing_iterations,
                                      transform="per_position", initial_logits="zeros",
                                      max_length=max_length, position_order=position_order,
                                      dynamic_interests=False,
                                      kernel_initializer=self.kernel_initializer,
                                      kernel_regularizer=_l2(self.weight_decay), name="routing")

    def interests(self, inputs, training=None):
        embeddings, mask = self.embed_history(inputs, training=training)
        return self.routing(embeddings, mask=mask, training=training)

    def get_config(self):
        config = super().get_config()
        config.update({"max_length": self.max_length,
                       "routing_iterations": self.routing_iterations,
                       "weight_decay": self.weight_decay,
                       "position_order": self.position_order,
                       "kernel_initializer": tf.keras.initializers.serialize(
                           self.kernel_initializer)})
        return config
