"""CapsuleRouting against a NumPy transcription of MIND's Algorithm 1 / ComiRec-DR's routing."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401  (legacy Keras switch)
from towerkit.layers import CapsuleRouting, interest_count, squash
from towerkit.layers.capsule_routing import coupling_statistics, l2_or_none


def _np_squash(z):
    # Paper: squash(z) = |z|^2 / (1 + |z|^2) * z / |z|.
    norm = np.linalg.norm(z, axis=-1, keepdims=True)
    return (norm ** 2 / (1 + norm ** 2)) * z / np.maximum(norm, 1e-12)


def _np_routing(e, mask, kernel, logits, iterations, transform, active,
                order="oldest_first"):
    """One user at a time, literally: loops over i (behaviour) and j (interest).

    e: [L, d]; mask: [L] bool; kernel: S [d, u] or W [P, K, d, u]; logits: b [L, K] indexed by
    slot; active: number of interests K'_u taking part; order: which valid behaviour is W's
    position 0 (the oldest or the most recent).
    """
    length, num_interests = logits.shape
    valid = [i for i in range(length) if mask[i]]
    rank = {i: r for r, i in enumerate(valid)}
    if order == "recent_first":
        rank = {i: len(valid) - 1 - r for i, r in rank.items()}

    def e_hat(i, j):
        if transform == "shared":
            return e[i] @ kernel            # S e_i
        return e[i] @ kernel[rank[i], j]    # W_ij e_i

    b = logits.astype(np.float64).copy()
    units = kernel.shape[-1]
    u = np.zeros((num_interests, units))
    for _ in range(iterations):
        w = np.zeros_like(b)
        for i in valid:  # w_ij = exp(b_ij) / sum_{k < K'_u} exp(b_ik)
            ex = np.exp(b[i, :active] - b[i, :active].max())
            w[i, :active] = ex / ex.sum()
        for j in range(active):
            z = sum(w[i, j] * e_hat(i, j) for i in valid)
            u[j] = _np_squash(z)
        for i in valid:
            for j in range(active):
                b[i, j] += u[j] @ e_hat(i, j)
    return u


def _inputs(batch=3, length=6, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(batch, length, dim)).astype(np.float32)
    lengths = np.array([length, 3, 1])[:batch]
    mask = np.arange(length)[None, :] < lengths[:, None]
    return e, mask


def _positions(mask, order="oldest_first"):
    """Position of each valid slot: its rank from the oldest (or from the most recent)."""
    rank = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    if order == "recent_first":
        rank = np.maximum(mask.sum(axis=1, keepdims=True) - 1 - rank, 0)
    return rank


@pytest.mark.parametrize("transform,initial,dynamic,order", [
    ("shared", "random_normal", True, "oldest_first"),       # MIND B2I
    ("shared", "random_normal", False, "oldest_first"),
    ("shared", "random_normal", False, "recent_first"),
    ("per_position", "zeros", False, "oldest_first"),        # ComiRec-DR
    ("per_position", "zeros", False, "recent_first"),
])
def test_routing_matches_numpy_reference_with_fixed_logits(transform, initial, dynamic, order):
    e, mask = _inputs()
    layer = CapsuleRouting(num_interests=4, units=7, iterations=3, transform=transform,
                           initial_logits=initial, max_length=6, dynamic_interests=dynamic,
                           position_order=order, seed=3)
    capsules, active = layer(e, mask=mask, training=False)
    # Logits indexed by slot: the fixed draw of each valid behaviour's position.
    logits = layer.inference_logits(tf.constant(_positions(mask, order))).numpy()
    if initial == "zeros":
        assert not logits.any()
    kernel = layer.kernel.numpy()
    for user in range(e.shape[0]):
        n_active = int(active[user].numpy().sum())
        expected_active = min(4, max(1, int(np.floor(np.log2(mask[user].sum()))))) if dynamic else 4
        assert n_active == expected_active
        expected = _np_routing(e[user], mask[user], kernel, logits[user], 3, transform, n_active,
                               order)
        np.testing.assert_allclose(capsules[user].numpy(), expected, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("order,picked", [("oldest_first", 0), ("recent_first", -1)])
def test_position_order_picks_which_behaviour_w0_transforms(order, picked):
    # K = 1: every valid behaviour has w_i1 = 1, so u = squash(sum_i W_{p(i)} e_i). With W_0 = I
    # and every other W_p = 0, u = squash(e_{p^-1(0)}): the oldest behaviour for "oldest_first",
    # the most recent one for "recent_first", whatever the history's length.
    e, mask = _inputs()
    layer = CapsuleRouting(1, transform="per_position", initial_logits="zeros", max_length=6,
                           position_order=order)
    layer(e, mask=mask, training=False)
    kernel = np.zeros(layer.kernel.shape, np.float32)
    kernel[0, 0] = np.eye(e.shape[2])
    layer.kernel.assign(kernel)
    capsules, _ = layer(e, mask=mask, training=False)
    for user in range(e.shape[0]):
        z = e[user][mask[user]][picked]
        np.testing.assert_allclose(capsules[user, 0].numpy(), _np_squash(z), rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("length,expected", [(1, 1), (3, 1), (8, 3), (16, 4), (2, 1), (7, 2),
                                             (1000, 4)])
def test_interest_count_rounds_log2_down(length, expected):
    # K'_u = max(1, min(K, floor(log2 |I_u|))) with K = 4: log2(3) = 1.58 -> 1, log2(8) = 3.
    assert int(interest_count(tf.constant([length]), 4)[0]) == expected


def test_squash_golden_value():
    # z = (3, 4): |z| = 5, |z|^2 = 25 -> 25/26 * (3, 4)/5 = (15/26, 20/26).
    np.testing.assert_allclose(squash(tf.constant([[3.0, 4.0]])).numpy(),
                               [[15 / 26, 20 / 26]], rtol=1e-6)
    np.testing.assert_array_equal(squash(tf.zeros([1, 3])).numpy(), np.zeros([1, 3]))


@pytest.mark.parametrize("transform,initial,order", [
    ("shared", "random_normal", "oldest_first"),
    ("per_position", "zeros", "oldest_first"),
    ("shared", "random_normal", "recent_first"),
    ("per_position", "zeros", "recent_first"),
])
def test_padded_positions_change_nothing(transform, initial, order):
    e, mask = _inputs()
    layer = CapsuleRouting(4, transform=transform, initial_logits=initial, max_length=9,
                           dynamic_interests=True, position_order=order)
    reference, _ = layer(e, mask=mask, training=False)
    # Garbage in padded slots, plus three extra padded slots at the end.
    noisy = np.where(mask[:, :, None], e, 100.0 * np.random.default_rng(1).normal(size=e.shape))
    padded = np.concatenate([noisy, np.full((3, 3, e.shape[2]), 7.0, np.float32)], axis=1)
    padded_mask = np.concatenate([mask, np.zeros((3, 3), bool)], axis=1)
    out, _ = layer(padded.astype(np.float32), mask=padded_mask, training=False)
    np.testing.assert_allclose(out.numpy(), reference.numpy(), rtol=1e-5, atol=1e-6)
    # Left padding (valid behaviours at the end) gives the same capsules too.
    left = np.zeros_like(padded)
    left_mask = np.zeros_like(padded_mask)
    for b in range(3):
        n = mask[b].sum()
        left[b, -n:] = e[b, :n]
        left_mask[b, -n:] = True
    out, _ = layer(left, mask=left_mask, training=False)
    np.testing.assert_allclose(out.numpy(), reference.numpy(), rtol=1e-5, atol=1e-6)


def test_inference_is_deterministic_and_batch_independent_training_is_fresh():
    e, mask = _inputs()
    layer = CapsuleRouting(4, transform="shared")
    a, _ = layer(e, mask=mask, training=False)
    b, _ = layer(e, mask=mask, training=False)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    alone, _ = layer(e[1:2], mask=mask[1:2], training=False)
    np.testing.assert_allclose(alone.numpy()[0], a.numpy()[1], rtol=1e-5, atol=1e-6)
    t1, _ = layer(e, mask=mask, training=True)
    t2, _ = layer(e, mask=mask, training=True)
    assert np.abs(t1.numpy() - t2.numpy()).max() > 1e-3  # fresh logits per training call
    # The only state besides S is the fixed inference table; training calls never change it.
    assert [w.name.split("/")[-1] for w in layer.weights] == ["kernel:0", "inference_logits:0"]
    assert [w.name.split("/")[-1] for w in layer.non_trainable_weights] == ["inference_logits:0"]
    np.testing.assert_array_equal(
        layer.inference_table.numpy(),
        tf.random.stateless_normal([6, 4], seed=[0, 7]).numpy())


def test_inference_logits_are_a_stored_weight_equal_to_the_former_in_graph_draw(tmp_path):
    # Earlier versions regenerated the table in the graph as
    # stateless_normal([max(position) + 1, K], seed=[seed, 7]); the stored weight starts from
    # that draw, so weights saved before it existed route as before (in this TF version).
    e, mask = _inputs()
    layer = CapsuleRouting(4, transform="shared", max_length=9, seed=3, logit_stddev=2.0)
    layer(e, mask=mask, training=False)
    former = tf.random.stateless_normal([6, 4], seed=[3, 7], stddev=2.0).numpy()
    np.testing.assert_array_equal(layer.inference_table.numpy()[:6], former)
    # It is a weight: assigning it changes the routing, and a SavedModel carries it (a reloaded
    # export routes with the stored values, not with a fresh draw).
    table = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
    layer.inference_table.assign(table)
    expected, _ = layer(e, mask=mask, training=False)
    behaviours = tf.keras.Input([6, 5])
    valid = tf.keras.Input([6], dtype=tf.bool)
    caps, _ = layer(behaviours, mask=valid)
    tf.keras.Model([behaviours, valid], caps).save(tmp_path / "m")
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    assert any(v.name.endswith("inference_logits:0") for v in loaded.variables)
    stored = [v for v in loaded.variables if v.name.endswith("inference_logits:0")][0]
    np.testing.assert_array_equal(stored.numpy(), table)
    out = loaded.signatures["serving_default"](
        **dict(zip(sorted(loaded.signatures["serving_default"].structured_input_signature[1]),
                   [tf.constant(e), tf.constant(mask)])))
    np.testing.assert_allclose(list(out.values())[0].numpy(), expected.numpy(), rtol=1e-5,
                               atol=1e-6)


def test_history_longer_than_max_length_raises_instead_of_clamping():
    e, mask = _inputs(length=6)
    layer = CapsuleRouting(2, transform="per_position", initial_logits="zeros", max_length=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_length=4"):
        layer(e, mask=mask, training=False)
    # Padding past max_length is fine: only valid behaviours need a position.
    short = mask & (np.arange(6)[None, :] < 4)
    layer(e, mask=short, training=False)
    with pytest.raises(ValueError, match="max_length"):
        CapsuleRouting(2)(tf.keras.Input([None, 5]))


def test_no_gradient_through_routing_coefficients():
    # With w held fixed, d capsule_j / d e_hat only passes through z_j = sum_i w_ij e_hat_ij.
    # Check: the gradient equals the one obtained by routing with stop_gradient on everything but
    # the final weighted sum, computed independently with the reference logits.
    e, mask = _inputs(batch=1)
    layer = CapsuleRouting(2, transform="shared", iterations=3, seed=5)
    x = tf.constant(e)
    with tf.GradientTape() as tape:
        tape.watch(x)
        caps, _ = layer(x, mask=mask, training=False)
        loss = tf.reduce_sum(caps * tf.constant([[[1.0] * caps.shape[-1], [-2.0] * caps.shape[-1]]]))
    grad = tape.gradient(loss, x).numpy()
    # Reference: routing weights from the NumPy loop (constants), then autodiff of squash(sum w S e).
    kernel = layer.kernel.numpy()
    logits = layer.inference_logits(tf.constant(_positions(mask))).numpy()[0]
    b = logits.astype(np.float64)
    valid = mask[0]
    for it in range(3):
        w = np.exp(b - b.max(1, keepdims=True))
        w = w / w.sum(1, keepdims=True) * valid[:, None]
        u = _np_squash(w.T @ (e[0] @ kernel))
        if it < 2:
            b = b + (e[0] @ kernel) @ u.T
    with tf.GradientTape() as tape:
        tape.watch(x)
        z = tf.einsum("lk,ld->kd", tf.constant(w, tf.float32), tf.matmul(x[0], layer.kernel))
        ref_loss = tf.reduce_sum(squash(z) * tf.constant([[1.0] * z.shape[-1], [-2.0] * z.shape[-1]]))
    ref_grad = tape.gradient(ref_loss, x).numpy()
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)


def test_bad_arguments_raise_actionable_errors():
    with pytest.raises(ValueError, match="max_length"):
        CapsuleRouting(4, transform="per_position")
    with pytest.raises(ValueError, match="identical"):
        CapsuleRouting(4, transform="shared", initial_logits="zeros")
    with pytest.raises(ValueError, match="transform"):
        CapsuleRouting(4, transform="bilinear")
    with pytest.raises(ValueError, match="position_order"):
        CapsuleRouting(4, position_order="newest")
    with pytest.raises(ValueError, match=r"\[batch, length, dim\]"):
        CapsuleRouting(4)(tf.zeros([3, 5]))
    with pytest.raises(TypeError, match="float"):
        CapsuleRouting(4)(tf.zeros([1, 3, 5], tf.int32))


def test_config_and_savedmodel_round_trip(tmp_path):
    layer = CapsuleRouting(3, units=4, transform="per_position", initial_logits="zeros",
                           max_length=6, position_order="recent_first", seed=2, name="routing")
    e, mask = _inputs()
    expected, expected_active = layer(e, mask=mask, training=False)
    clone = CapsuleRouting.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

    behaviours = tf.keras.Input([6, 5])
    valid = tf.keras.Input([6], dtype=tf.bool)
    caps, active = layer(behaviours, mask=valid)
    model = tf.keras.Model([behaviours, valid], [caps, tf.cast(active, tf.float32)])
    model.save(tmp_path / "m")
    loaded = tf.keras.models.load_model(tmp_path / "m")
    out, out_active = loaded([e, mask], training=False)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(out_active.numpy(), expected_active.numpy())


def test_kernel_regularizer_adds_weight_decay_to_losses_and_round_trips():
    layer = CapsuleRouting(2, transform="per_position", initial_logits="zeros", max_length=6,
                           kernel_regularizer=l2_or_none(0.01))
    e, mask = _inputs()
    layer(e, mask=mask, training=True)
    # Hand-derived: L2(0.01) adds 0.01 * sum(W^2) over all 6 x 2 x 5 x 5 entries of W.
    expected = 0.01 * np.sum(layer.kernel.numpy() ** 2)
    assert len(layer.losses) == 1
    np.testing.assert_allclose(layer.losses[0].numpy(), expected, rtol=1e-6)
    clone = CapsuleRouting.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.kernel_regularizer.l2 == pytest.approx(0.01)
    # No decay: no regularizer, no extra loss.
    assert l2_or_none(0.0) is None
    with pytest.raises(ValueError, match="weight_decay"):
        l2_or_none(-1e-3)


def test_coupling_returns_the_first_and_last_iteration_weights_numpy_oracle():
    # w_ij of iteration 1 = softmax_j(b0_ij); of iteration 3 after two agreement updates
    # b += u_j . e_hat_ij (NumPy loop below), for the valid behaviours in compacted order.
    e, mask = _inputs()
    layer = CapsuleRouting(4, units=7, iterations=3, transform="shared", max_length=6, seed=3,
                           dynamic_interests=True)
    initial, final, valid, active = (t.numpy() for t in layer.coupling(e, mask=mask))
    kernel = layer.kernel.numpy().astype(np.float64)
    logits = layer.inference_logits(tf.constant(_positions(mask))).numpy()
    for user in range(e.shape[0]):
        n, k = int(mask[user].sum()), int(active[user].sum())
        np.testing.assert_array_equal(valid[user], np.arange(6) < n)
        e_hat = e[user][mask[user]] @ kernel                 # [n, units]
        b = logits[user][:n, :k].astype(np.float64)
        weights = []
        for it in range(3):
            w = np.exp(b - b.max(1, keepdims=True))
            w /= w.sum(1, keepdims=True)
            weights.append(w)
            u = _np_squash(w.T @ e_hat)
            b = b + e_hat @ u.T
        np.testing.assert_allclose(initial[user][:n, :k], weights[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(final[user][:n, :k], weights[2], rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(final[user][n:], 0.0)
        np.testing.assert_array_equal(final[user][:, k:], 0.0)


def test_coupling_statistics_golden_value():
    # User 0 (2 active interests, 2 valid behaviours):
    #   behaviour 0: w0 = (0.5, 0.5), w = (0.9, 0.1): TV 0.4, max excess 0.9 - 0.5 = 0.4;
    #   behaviour 1: w0 = (0.2, 0.8), w = (0.2, 0.8): TV 0,   max excess 0.8 - 0.5 = 0.3;
    #   slot 2 is padding (ignored).
    # User 1 has one active interest: its coupling is 1 whatever routing does -> left out.
    initial = np.array([[[0.5, 0.5], [0.2, 0.8], [0.0, 0.0]],
                        [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    final = np.array([[[0.9, 0.1], [0.2, 0.8], [0.0, 0.0]],
                      [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    valid = np.array([[True, True, False], [True, True, True]])
    active = np.array([[True, True], [True, False]])
    stats = coupling_statistics(initial, final, valid, active)
    assert stats["count"] == 2
    assert stats["shift_sum"] == pytest.approx(0.4)
    assert stats["max_excess_sum"] == pytest.approx(0.7)
