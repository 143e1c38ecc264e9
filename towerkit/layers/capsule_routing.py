"""Dynamic routing from behaviour capsules to interest capsules (MIND B2I, ComiRec-DR)."""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

__all__ = ["CapsuleRouting", "squash", "interest_count", "l2_or_none", "coupling_statistics"]

_TRANSFORMS = ("shared", "per_position")
_INITIAL_LOGITS = ("random_normal", "zeros")
_POSITION_ORDERS = ("oldest_first", "recent_first")


def l2_or_none(weight_decay: float):
    """`tf.keras.regularizers.L2(weight_decay)`, or None for 0 (no penalty, no extra loss).

    Raises:
      ValueError: for a negative `weight_decay`.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}.")
    return tf.keras.regularizers.L2(float(weight_decay)) if weight_decay > 0 else None


def squash(z: tf.Tensor, axis: int = -1) -> tf.Tensor:
    """The capsule non-linearity `squash(z) = |z|^2 / (1 + |z|^2) * z / |z|`.

    Written as `z * |z| / (1 + |z|^2)` so that `z = 0` maps to 0 with a finite gradient.

    Args:
      z: float tensor. Capsules along `axis`.
      axis: int. The capsule dimension.

    Returns:
      A tensor shaped like `z` whose vectors have norm `|z|^2 / (1 + |z|^2) < 1`.
    """
    squared = tf.reduce_sum(tf.square(z), axis=axis, keepdims=True)
    return z * tf.sqrt(squared + 1e-9) / (1.0 + squared)


def interest_count(lengths: tf.Tensor, max_interests: int) -> tf.Tensor:
    """MIND's dynamic interest count `K'_u = max(1, min(K, log2(|I_u|)))`, rounded down.

    The paper leaves the rounding of `log2` open; towerkit takes the floor, computed exactly in
    integers (`floor(log2(n))` is the bit length of `n` minus one) so that powers of two never
    fall one short through float error: lengths 1, 3, 8, 16 give 1, 1, 3, 4 (with K >= 4).

    Args:
      lengths: int tensor `[batch]`. Number of valid behaviours per user.
      max_interests: int. K.

    Returns:
      int32 tensor `[batch]` with values in `[1, max_interests]`.
    """
    lengths = tf.cast(lengths, tf.int64)
    floor_log2 = tf.zeros_like(lengths)
    remaining = lengths
    # Binary search on the bit length: six shifts cover every int64.
    for shift in (32, 16, 8, 4, 2, 1):
        big = remaining >= (1 << shift)
        remaining = tf.where(big, tf.bitwise.right_shift(remaining, tf.constant(shift, tf.int64)),
                             remaining)
        floor_log2 = tf.where(big, floor_log2 + shift, floor_log2)
    count = tf.clip_by_value(floor_log2, 1, max_interests)
    return tf.cast(count, tf.int32)


def coupling_statistics(initial, final, valid, interest_mask) -> dict:
    """How far dynamic routing moved the coupling coefficients (NumPy, per batch).

    Args:
      initial, final: float arrays `[batch, length, K]`: `w_ij` before the first and in the
        last routing iteration (`CapsuleRouting.coupling`).
      valid: bool `[batch, length]`. Valid behaviours.
      interest_mask: bool `[batch, K]`. Active interests.

    Returns:
      dict of float sums over the valid behaviours (divide by `count` for means):
      `shift_sum`: sum of the total-variation distances `0.5 * sum_j |w_ij - w0_ij|` between
      each behaviour's final and initial coupling (0: routing changed nothing; at most
      `1 - 1/K'`); `max_excess_sum`: sum of `max_j w_ij - 1/K'_u` (0: uniform coupling,
      `1 - 1/K'` one-hot); `count`: number of valid behaviours of users with `K'_u >= 2`
      (with a single active interest the coupling is 1 whatever routing does, so those
      users are left out).
    """
    initial, final = np.asarray(initial, np.float64), np.asarray(final, np.float64)
    active = np.asarray(interest_mask).sum(axis=1)                      # [batch]
    keep = np.asarray(valid, bool) & (active >= 2)[:, None]
    shift = 0.5 * np.abs(final - initial).sum(axis=-1)
    excess = final.max(axis=-1) - 1.0 / np.maximum(active, 1)[:, None]
    return {"shift_sum": float(shift[keep].sum()), "max_excess_sum": float(excess[keep].sum()),
            "count": int(keep.sum())}


@tf.keras.utils.register_keras_serializable(package="towerkit")
class CapsuleRouting(tf.keras.layers.Layer):
    """Dynamic routing of behaviour embeddings into interest capsules, with masking.

    For behaviour capsules `e_i` (the valid positions of a history) and interest capsules `j`:

    1. prediction vectors `e_hat_ij`: `S e_i` with one bilinear map `S` shared by all interests
       (`transform="shared"`, MIND's B2I routing) or `W_pj e_i` with one matrix per
       (input position p, interest j) pair (`transform="per_position"`, ComiRec-DR);
    2. routing logits `b_ij`: drawn from `N(0, logit_stddev^2)` (`"random_normal"`, MIND: with a
       shared map, equal logits would give identical capsules) or zeros (`"zeros"`, ComiRec-DR);
    3. `iterations` times: `w_ij = softmax_j(b_ij)` (over interests), `z_j = sum_i w_ij e_hat_ij`,
       `u_j = squash(z_j)`, `b_ij += u_j . e_hat_ij`.

    Padded behaviours get `w_ij = 0`, so they change nothing. With `dynamic_interests=True` only
    the first `K'_u = interest_count(|I_u|, K)` interests take part in the softmax; the others are
    zero and flagged in the returned interest mask.

    Choices where the papers leave room (documented here, tested in `tests/layers`):
      * No gradient flows through the routing coefficients: they are computed from
        `stop_gradient(e_hat)`; the output `squash(sum_i w_ij e_hat_ij)` is differentiable in
        `e_hat` with `w` held fixed (as ComiRec's reference code does).
      * Random logits are drawn fresh on every training call (`tf.random.normal`, never a variable
        carried across batches; ComiRec's reference code draws them per call too, DeepMatch's
        MIND keeps one `[K, max_len]` variable that it updates across batches). At inference
        they are a fixed table `inference_table [max_length, num_interests]`, a non-trainable
        weight saved with the model (so an export routes identically under any TensorFlow
        version), indexed by each behaviour's rank among the valid positions: one history
        always yields the same capsules whatever its padding or batch. The table is
        initialised with `tf.random.stateless_normal([max_length, K], seed=[seed, 7])`, the
        draw that earlier towerkit versions regenerated in the graph at every call, so weights
        saved before the table existed route as they did (in this TensorFlow version).
      * A history with more than `max_length` valid behaviours has no position for its oldest
        ones (no `W_pj`, no fixed logit): the call fails with an InvalidArgumentError naming
        `max_length`, never clamping. Padding beyond `max_length` is fine.
      * Positions (of `"per_position"`'s `W_pj` and of the fixed inference logits) are the rank
        among the valid behaviours, counted from the oldest (`position_order="oldest_first"`,
        the slot index of a right-padded history, as in ComiRec's reference code) or from the
        most recent (`"recent_first"`: position 0 is the latest behaviour whatever the
        history's length). Both papers only say "behaviour i"; either order is a reading of it.

    Where the reference implementations differ (ComiRec's `CapsuleNetwork`, THUDM/ComiRec
    `src/model.py`; DeepMatch's MIND `CapsuleLayer`, shenweichen/DeepMatch
    `deepmatch/layers/core.py`):
      * Followed from ComiRec: softmax over interests (axis 1 of its `[batch, K, length]`
        logits), zero initial logits for per-position transforms, `stop_gradient` on the
        predictions inside the iterations, padding weights set to 0, squash as here.
        DeepMatch's MIND instead takes the softmax over the behaviours (its last axis) and
        keeps one `[1, K, max_len]` logit variable that every call `assign_add`s the batch's
        summed agreements to; towerkit follows the paper (softmax over interests, logits per
        behaviour and user).
      * Initialisers: both codes draw the transform from N(0, 1) (`W` in ComiRec, `S` in
        DeepMatch). This layer's default stays Glorot normal; the MIND and ComiRec-DR towers
        default to N(0, 0.3^2), the scale at which routing moves the coupling coefficients
        on MovieLens 100K while the valid recall holds (benchmarks/sequential/RESULTS.md).
        The agreement `u_j . e_hat_ij` scales with `|e_hat|`, so a tiny transform (Glorot
        over the whole `[P, K, d, d]` tensor: stddev 0.014) leaves the coupling at its
        initial value: routing then does nothing. `coupling` measures it.

    Args:
      num_interests: int. K, the number of interest capsules.
      units: int or None. Capsule dimension; defaults to the input dimension.
      iterations: int. Routing iterations r (both papers use 3).
      transform: str. `"shared"` or `"per_position"`.
      initial_logits: str. `"random_normal"` or `"zeros"`.
      logit_stddev: float. Standard deviation of random initial logits.
      max_length: int or None. Number of positions: of `"per_position"`'s `W` (required
        there) and of the fixed inference logits of `"random_normal"` (default: the static
        input length at build time).
      position_order: str. `"oldest_first"` or `"recent_first"`: which end of the history is
        position 0 (see above). Histories are given oldest first either way.
      dynamic_interests: bool. Use MIND's dynamic interest count.
      seed: int. Seed of the fixed inference-time logits.
      kernel_initializer: initializer of `S` / `W`.
      kernel_regularizer: regularizer of `S` / `W` (e.g. `tf.keras.regularizers.L2(1e-4)`:
        weight decay on the transforms); its penalty is added to `self.losses`.

    Call args:
      inputs: float tensor `[batch, length, input_dim]`. Behaviour embeddings.
      mask: bool tensor `[batch, length]`. True at valid behaviours.
      training: bool. Selects fresh (True) or fixed (False) random logits.

    Returns:
      `(capsules [batch, num_interests, units], interest_mask [batch, num_interests] bool)`.
      `coupling(inputs, mask)` gives the initial and final coupling coefficients (a
      diagnostic: `coupling_statistics` says how far routing moved them).

    Example:
      >>> routing = CapsuleRouting(num_interests=4, transform="shared", max_length=20)
      >>> capsules, active = routing(tf.random.normal([2, 20, 32]), mask=tf.ones([2, 20], bool))

    References:
      Li et al., "Multi-Interest Network with Dynamic Routing for Recommendation at Tmall",
      CIKM 2019, https://arxiv.org/abs/1904.08030 (Algorithm 1).
      Cen et al., "Controllable Multi-Interest Framework for Recommendation", KDD 2020,
      https://arxiv.org/abs/2005.09347 (Section 3.2).
    """

    def __init__(self, num_interests: int, units: Optional[int] = None, iterations: int = 3,
                 transform: str = "shared", initial_logits: str = "random_normal",
                 logit_stddev: float = 1.0, max_length: Optional[int] = None,
                 position_order: str = "oldest_first", dynamic_interests: bool = False,
                 seed: int = 0,
                 kernel_initializer="glorot_normal", kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_interests, int) or num_interests < 1:
            raise ValueError(f"num_interests must be a positive int, got {num_interests!r}.")
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a positive int, got {iterations!r}.")
        if transform not in _TRANSFORMS:
            raise ValueError(f"transform must be one of {_TRANSFORMS}, got {transform!r}.")
        if initial_logits not in _INITIAL_LOGITS:
            raise ValueError(
                f"initial_logits must be one of {_INITIAL_LOGITS}, got {initial_logits!r}.")
        if position_order not in _POSITION_ORDERS:
            raise ValueError(
                f"position_order must be one of {_POSITION_ORDERS}, got {position_order!r}.")
        if transform == "per_position" and (not isinstance(max_length, int) or max_length < 1):
            raise ValueError(
                "transform='per_position' needs max_length (the longest history fed), "
                f"got {max_length!r}.")
        if transform == "shared" and initial_logits == "zeros" and num_interests > 1:
            raise ValueError(
                "transform='shared' with initial_logits='zeros' makes every interest capsule "
                "identical (MIND, Section 4.2.2); use initial_logits='random_normal'.")
        self.num_interests = num_interests
        self.units = units
        self.iterations = iterations
        self.transform = transform
        self.initial_logits = initial_logits
        self.logit_stddev = float(logit_stddev)
        self.max_length = max_length
        self.position_order = position_order
        self.dynamic_interests = bool(dynamic_interests)
        self.seed = int(seed)
        self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        input_dim = int(input_shape[-1])
        units = self.units or input_dim
        if self.transform == "shared":
            shape = [input_dim, units]
        else:
            shape = [self.max_length, self.num_interests, input_dim, units]
        self.kernel = self.add_weight("kernel", shape=shape,
                                      initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, trainable=True)
        self.inference_table = None
        if self.initial_logits == "random_normal":
            if self.max_length is None:
                length = input_shape[1] if len(input_shape) > 1 else None
                if length is None:
                    raise ValueError(
                        "CapsuleRouting with random initial logits needs max_length (the "
                        "longest history fed) when the input length is not static.")
                self.max_length = int(length)
            seed, stddev, size = self.seed, self.logit_stddev, self.max_length

            def draw(shape, dtype=None):
                # The draw earlier versions made in the graph (stateless normals are
                # prefix-consistent: the first rows do not depend on the table's length).
                return tf.random.stateless_normal(shape, seed=[seed, 7], stddev=stddev)

            self.inference_table = self.add_weight(
                "inference_logits", shape=[size, self.num_interests], initializer=draw,
                trainable=False)
        super().build(input_shape)

    def _predictions(self, inputs):
        """`e_hat`: `[batch, length, units]` (shared) or `[batch, length, K, units]`.

        `inputs` are compacted (valid behaviours first, in `position_order`), so slot l holds
        the behaviour at position l.
        """
        if self.transform == "shared":
            return tf.einsum("bld,du->blu", inputs, self.kernel)
        # Valid behaviours never pass max_length (checked in `_route`); padded slots past it
        # read the last W, whose predictions get weight 0.
        slots = tf.minimum(tf.range(tf.shape(inputs)[1]), self.max_length - 1)
        return tf.einsum("bld,lkdu->blku", inputs, tf.gather(self.kernel, slots))

    def _initial_logits(self, batch, length, positions, training):
        shape = [batch, length, self.num_interests]
        if self.initial_logits == "zeros":
            return tf.zeros(shape)
        if training:
            return tf.random.normal(shape, stddev=self.logit_stddev)
        return self.inference_logits(positions)

    def inference_logits(self, positions):
        """The fixed initial logits `[batch, length, num_interests]` used at inference.

        Rows of the stored `inference_table` (a non-trainable weight); positions past the
        table (only padded slots reach them) read its last row.

        Args:
          positions: int tensor `[batch, length]`. Rank of each behaviour among the valid ones.
        """
        if self.initial_logits == "zeros":
            return tf.zeros(tf.concat([tf.shape(positions), [self.num_interests]], 0))
        positions = tf.minimum(positions, self.max_length - 1)
        return tf.gather(self.inference_table, positions)

    def _route(self, inputs, mask, training):
        """Routing; returns `(capsules, interest_mask, initial_weights, final_weights, valid)`.

        The weights are the coupling coefficients `w_ij` `[batch, length, num_interests]` of
        the first and of the last iteration, in compacted slot order (0 on padding and on
        inactive interests); `valid` `[batch, length]` marks the valid slots.
        """
        inputs = tf.convert_to_tensor(inputs)
        if inputs.shape.rank != 3:
            raise ValueError(
                f"CapsuleRouting expects behaviours [batch, length, dim], got shape {inputs.shape}.")
        if not inputs.dtype.is_floating:
            raise TypeError(f"CapsuleRouting expects float behaviours, got {inputs.dtype}.")
        if not self.built:
            self.build(inputs.shape)
        batch, length = tf.shape(inputs)[0], tf.shape(inputs)[1]
        if mask is None:
            mask = tf.ones([batch, length], tf.bool)
        mask = tf.cast(mask, tf.bool)
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
        checks = []
        if self.max_length is not None:
            checks.append(tf.debugging.assert_less_equal(
                lengths, tf.constant(self.max_length, tf.int32),
                message=f"CapsuleRouting: a history has more valid behaviours than "
                        f"max_length={self.max_length}; feed at most max_length items."))
        with tf.control_dependencies(checks):
            inputs = tf.identity(inputs)
        # Compact: valid behaviours first, oldest or most recent first (a stable sort), so that
        # the slot of a valid behaviour is its position. Routing sums over behaviours, so the
        # permutation changes nothing else.
        slot = tf.range(length)[None, :]
        if self.position_order == "recent_first":
            key = tf.where(mask, length - 1 - slot, length + slot)
        else:
            key = tf.cast(tf.logical_not(mask), tf.int32)
        order = tf.argsort(key, axis=1, stable=True)
        inputs = tf.gather(inputs, order, batch_dims=1)
        mask = tf.gather(mask, order, batch_dims=1)
        valid = tf.cast(mask, inputs.dtype)
        positions = tf.broadcast_to(tf.range(length)[None, :], [batch, length])
        if training is None:
            training = tf.keras.backend.learning_phase()
        training = bool(training) if isinstance(training, (bool, int)) else training

        e_hat = self._predictions(inputs)
        e_hat_fixed = tf.stop_gradient(e_hat)
        if self.dynamic_interests:
            counts = interest_count(lengths, self.num_interests)
            interest_mask = tf.sequence_mask(counts, self.num_interests)
        else:
            interest_mask = tf.ones([batch, self.num_interests], tf.bool)

        if isinstance(training, bool):
            logits = self._initial_logits(batch, length, positions, training)
        else:
            logits = tf.cond(
                tf.cast(training, tf.bool),
                lambda: self._initial_logits(batch, length, positions, True),
                lambda: self._initial_logits(batch, length, positions, False))
        # With a shared map, e_hat_j|i = S e_i is the same for every interest j.
        hat = "blu" if self.transform == "shared" else "blku"
        exclude = tf.logical_not(interest_mask)[:, None, :]
        initial_weights = None
        for iteration in range(self.iterations):
            weights = tf.nn.softmax(tf.where(exclude, -1e9, logits), axis=-1)
            weights = tf.where(exclude, 0.0, weights) * valid[:, :, None]
            if initial_weights is None:
                initial_weights = weights
            if iteration < self.iterations - 1:
                capsules = squash(tf.einsum(f"blk,{hat}->bku", weights, e_hat_fixed))
                logits = logits + tf.einsum(f"bku,{hat}->blk", capsules, e_hat_fixed)
            else:
                capsules = squash(tf.einsum(f"blk,{hat}->bku", weights, e_hat))
        return capsules, interest_mask, initial_weights, weights, mask

    def call(self, inputs, mask=None, training=None):
        capsules, interest_mask, _, _, _ = self._route(inputs, mask, training)
        return capsules, interest_mask

    def coupling(self, inputs, mask=None, training=False):
        """Coupling coefficients before and after routing (inference logits by default).

        Args:
          inputs, mask: as for `call`.
          training: bool. False: the fixed inference logits; True: a fresh random draw.

        Returns:
          `(initial [batch, length, K], final [batch, length, K], valid [batch, length] bool,
          interest_mask [batch, K] bool)`: `w_ij` of the first and of the last routing
          iteration (the last one weighs the output capsules), behaviours in compacted slot
          order (valid ones first), 0 on padding and on inactive interests.
        """
        _, interest_mask, initial, final, valid = self._route(inputs, mask, training)
        return initial, final, valid, interest_mask

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_interests": self.num_interests,
            "units": self.units,
            "iterations": self.iterations,
            "transform": self.transform,
            "initial_logits": self.initial_logits,
            "logit_stddev": self.logit_stddev,
            "max_length": self.max_length,
            "position_order": self.position_order,
            "dynamic_interests": self.dynamic_interests,
            "seed": self.seed,
            "kernel_initializer": tf.keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": tf.keras.regularizers.serialize(self.kernel_regularizer)
            if self.kernel_regularizer is not None else None,
        })
        return config
