"""MIND: Multi-Interest Network with Dynamic routing (Li et al., CIKM 2019)."""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from towerkit.layers.capsule_routing import CapsuleRouting, l2_or_none as _l2
from towerkit.layers.label_aware_attention import LabelAwareAttention
from towerkit.layers.multi_interest_tower import MultiInterestTower, _deserialize, _serialize

__all__ = ["MIND"]

DEFAULT_STDDEV = 0.3  # of the bilinear map S (see `kernel_initializer`)


@tf.keras.utils.register_keras_serializable(package="towerkit")
class MIND(MultiInterestTower):
    """The MIND query tower: B2I dynamic routing, profile concatenation, ReLU layers.

    1. History items are embedded (`item_embedding`, shared with the candidates).
    2. `CapsuleRouting` with one shared bilinear map `S`, random routing logits and the dynamic
       interest count `K'_u = max(1, min(K, floor(log2 |I_u|)))` turns the valid behaviours into
       interest capsules (MIND Algorithm 1). Logits are drawn fresh per training call and are a
       fixed table at inference (a non-trainable weight saved with the model), so one history
       always retrieves the same items; no gradient flows through the routing coefficients
       (see `CapsuleRouting`).
    3. Each capsule is concatenated with the user profile embedding (`profile_embedding`,
       optional) and passed through ReLU layers (`hidden_units`), then a final projection to the
       item dimension. The final projection is linear by default (`output_activation=None`) so
       that user vectors can score items with either sign; the paper draws every layer as ReLU:
       pass `output_activation="relu"` for that reading.
    4. Training reads one vector per target with label-aware attention
       (`LabelAwareAttention(p)`, `softmax(p * score)`; see there why not `pow(score, p)`).

    Args:
      item_embedding: Keras layer, item indices -> `[..., dim]`.
      num_interests: int. K, the maximum number of interests.
      hidden_units: sequence of int. Widths of the ReLU layers after the concatenation.
      output_activation: str or None. Activation of the final `dim`-wide projection.
      routing_iterations: int. r (3 in the paper).
      logit_stddev: float. Standard deviation of the random routing logits.
      p: float. Label-aware attention sharpness; ignored when `hard_readout`.
      hard_readout: bool. Train with the argmax interest instead of soft attention.
      profile_embedding: optional Keras layer mapping the input dict to `[batch, profile_dim]`.
      seed: int. Seed of the fixed inference-time routing logits.
      weight_decay: float. L2 penalty `weight_decay * sum(S^2)` on the bilinear map, added to
        the training loss (`self.losses`); 0 = none.
      readout: LabelAwareAttention or None (built from `p` / `hard_readout` when None).
      dropout: float. Dropout rate on the history embeddings in training.
      max_length: int or None. Longest history fed: rows of the stored inference routing
        logits (a non-trainable weight saved with the model, see `CapsuleRouting`); default
        the static history length at build time.
      kernel_initializer: initializer of the bilinear map `S`; None (default) =
        `RandomNormal(stddev=0.3)`, chosen on the valid users. DeepMatch's MIND draws `S`
        from N(0, 1), which routes most but separates the interests at a recall cost on
        MovieLens 100K; Glorot normal (the former default, stddev 0.125 for 64 x 64) leaves
        the coupling near its random initial value (benchmarks/sequential/RESULTS.md).

    Call args:
      inputs: dict with `"history"` `[batch, length]` int item indices (0 = padding), plus what
        `profile_embedding` reads.

    Returns:
      `[batch, num_interests, dim]` interest vectors (inactive slots repeat interest 0).

    Example:
      >>> items = tf.keras.layers.Embedding(1350, 64)
      >>> tower = MIND(items, num_interests=4)
      >>> vectors = tower({"history": tf.constant([[5, 9, 2, 0]])})     # [1, 4, 64]

    References:
      Li et al., "Multi-Interest Network with Dynamic Routing for Recommendation at Tmall",
      CIKM 2019, https://arxiv.org/abs/1904.08030.
    """

    _layer_arguments = ("profile_embedding",)

    def __init__(self, item_embedding, num_interests: int = 4,
                 hidden_units: Sequence[int] = (256,), output_activation: Optional[str] = None,
                 routing_iterations: int = 3, logit_stddev: float = 1.0, p: float = 1.0,
                 hard_readout: bool = False, profile_embedding=None, seed: int = 0,
                 weight_decay: float = 0.0, readout=None, max_length: Optional[int] = None,
                 kernel_initializer=None, **kwargs):
        if readout is None:
            readout = LabelAwareAttention(p=p, hard=hard_readout)
        super().__init__(item_embedding, num_interests, readout=readout, **kwargs)
        if isinstance(hidden_units, int) or any(
                not isinstance(u, int) or u < 1 for u in hidden_units):
            raise ValueError(f"hidden_units must be a sequence of positive ints, got {hidden_units!r}.")
        self.hidden_units = tuple(hidden_units)
        self.output_activation = output_activation
        self.routing_iterations = routing_iterations
        self.logit_stddev = float(logit_stddev)
        self.profile_embedding = profile_embedding
        self.seed = int(seed)
        self.weight_decay = float(weight_decay)
        self.max_length = max_length
        if kernel_initializer is None:
            kernel_initializer = tf.keras.initializers.RandomNormal(stddev=DEFAULT_STDDEV)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.routing = CapsuleRouting(num_interests, iterations=routing_iterations,
                                      transform="shared", initial_logits="random_normal",
                                      logit_stddev=logit_stddev, dynamic_interests=True,
                                      max_length=max_length, seed=seed,
                                      kernel_initializer=self.kernel_initializer,
                                      kernel_regularizer=_l2(self.weight_decay),
                                      name="routing")
        self.hidden = [tf.keras.layers.Dense(u, activation="relu", name=f"hidden_{i}")
                       for i, u in enumerate(self.hidden_units)]
        self._output_units = None
        self.projection = None

    def build(self, input_shape):
        dim = int(self.item_embedding.output_dim) if hasattr(self.item_embedding, "output_dim") \
            else None
        if dim is None:
            raise ValueError("MIND needs item_embedding.output_dim (a tf.keras.layers.Embedding).")
        self.projection = tf.keras.layers.Dense(dim, activation=self.output_activation,
                                                name="projection")
        super().build(input_shape)

    def interests(self, inputs, training=None):
        if self.projection is None:
            self.build(None)
        embeddings, mask = self.embed_history(inputs, training=training)
        capsules, interest_mask = self.routing(embeddings, mask=mask, training=training)
        x = capsules
        if self.profile_embedding is not None:
            profile = self.profile_embedding(inputs)
            profile = tf.repeat(profile[:, None, :], self.num_interests, axis=1)
            x = tf.concat([x, profile], axis=-1)
        for layer in self.hidden:
            x = layer(x)
        return self.projection(x), interest_mask

    def get_config(self):
        config = super().get_config()
        config.update({
            "hidden_units": list(self.hidden_units),
            "output_activation": self.output_activation,
            "routing_iterations": self.routing_iterations,
            "logit_stddev": self.logit_stddev,
            "profile_embedding": _serialize(self.profile_embedding),
            "seed": self.seed,
            "weight_decay": self.weight_decay,
            "max_length": self.routing.max_length,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
        })
        return config
