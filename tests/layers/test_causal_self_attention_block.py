"""CausalSelfAttentionBlock: NumPy oracle, golden attention pattern, causality, padding,
dropout, config and SavedModel round-trips."""

import towerkit  # noqa: F401  (first: legacy Keras)
import numpy as np
import pytest
import tensorflow as tf

from towerkit.layers.causal_self_attention_block import CausalSelfAttentionBlock

# Two users, length 4: the second has 2 valid items then padding.
MASK = np.array([[True, True, True, True], [True, True, False, False]])


def _block(num_heads=2, dim=4, dropout_rate=0.0):
    tf.keras.utils.set_random_seed(3)
    block = CausalSelfAttentionBlock(num_heads=num_heads, dropout_rate=dropout_rate)
    block.build([None, None, dim])
    # Non-trivial layer-norm scales/offsets and biases, so the oracle checks them too.
    rng = np.random.default_rng(0)
    block.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in block.get_weights()])
    return block


def _layer_norm(x, gamma, beta, eps=1e-8):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _numpy_block(x, mask, block):
    """The paper's block (Eq. 2-4 with g(x) = x + g(LayerNorm(x)), no dropout), one user at a
    time, heads written out as loops."""
    w = {}
    for name in ("attention_norm", "feed_forward_norm"):
        w[f"{name}/gamma"], w[f"{name}/beta"] = getattr(block, name).get_weights()
    for name in ("query", "key", "value", "feed_forward_1", "feed_forward_2"):
        layer = getattr(block, "query_dense" if name == "query" else
                        "key_dense" if name == "key" else
                        "value_dense" if name == "value" else name)
        w[f"{name}/kernel"], w[f"{name}/bias"] = layer.get_weights()
    heads, (length, dim) = block.num_heads, x.shape
    hd = dim // heads
    z = _layer_norm(x, w["attention_norm/gamma"], w["attention_norm/beta"])
    q = z @ w["query/kernel"] + w["query/bias"]
    k = z @ w["key/kernel"] + w["key/bias"]
    v = z @ w["value/kernel"] + w["value/bias"]
    s = np.zeros_like(x)
    for j in range(heads):
        cols = slice(j * hd, (j + 1) * hd)
        for t in range(length):
            keys = [u for u in range(t + 1) if mask[u]]
            if not keys:
                continue
            logits = np.array([q[t, cols] @ k[u, cols] / np.sqrt(hd) for u in keys])
            a = np.exp(logits - logits.max())
            a /= a.sum()
            s[t, cols] = sum(a_u * v[u, cols] for a_u, u in zip(a, keys))
    s = x + s
    hidden = np.maximum(_layer_norm(s, w["feed_forward_norm/gamma"], w["feed_forward_norm/beta"])
                        @ w["feed_forward_1/kernel"] + w["feed_forward_1/bias"], 0)
    f = s + hidden @ w["feed_forward_2/kernel"] + w["feed_forward_2/bias"]
    return f * mask[:, None]


@pytest.mark.parametrize("num_heads", [1, 2])
def test_matches_numpy_oracle(num_heads):
    block = _block(num_heads=num_heads)
    x = np.random.default_rng(1).normal(size=(2, 4, 4)).astype(np.float32)
    out = block(x, mask=MASK).numpy()
    for user in range(2):
        np.testing.assert_allclose(out[user], _numpy_block(x[user], MASK[user], block),
                                   rtol=1e-4, atol=1e-5)
    # Padded positions are zeros.
    np.testing.assert_array_equal(out[1, 2:], 0.0)


def test_golden_attention_pattern():
    block = _block(num_heads=2, dim=4)
    x = np.random.default_rng(2).normal(size=(2, 4, 4)).astype(np.float32)
    _, weights = block(x, mask=MASK, return_attention_scores=True)
    weights = weights.numpy()  # [batch, heads, query t, key s]
    assert weights.shape == (2, 2, 4, 4)
    # Strictly lower-triangular including the diagonal: no query sees a later key.
    upper = np.triu(np.ones((4, 4), bool), k=1)
    assert np.all(weights[..., upper] == 0.0)
    # Padded keys (user 1, positions 2, 3) get weight exactly 0 from every query.
    assert np.all(weights[1, :, :, 2:] == 0.0)
    # Every query with a valid key spreads weight 1 over its allowed keys; the first position
    # sees only itself.
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(weights[:, :, 0, 0], 1.0)
    assert np.all(weights[0][..., ~upper] > 0)

    # Hand-derived values: with W_Q = 0 and b_Q = 0 every logit is 0, so query t spreads its
    # weight evenly over its t + 1 allowed keys: row t = [1/(t+1)] * (t+1) + [0] * (3-t).
    block.query_dense.kernel.assign(tf.zeros_like(block.query_dense.kernel))
    block.query_dense.bias.assign(tf.zeros_like(block.query_dense.bias))
    _, weights = block(x, mask=np.ones((2, 4), bool), return_attention_scores=True)
    expected = np.array([[1, 0, 0, 0], [1 / 2, 1 / 2, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0],
                         [1 / 4, 1 / 4, 1 / 4, 1 / 4]])
    np.testing.assert_allclose(weights.numpy(), np.broadcast_to(expected, (2, 2, 4, 4)),
                               rtol=1e-6)


def test_no_position_sees_a_later_one():
    block = _block(num_heads=2, dim=8)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 6, 8)).astype(np.float32)
    mask = np.ones((1, 6), bool)
    base = block(x, mask=mask).numpy()
    for j in range(6):
        y = x.copy()
        y[0, j] += rng.normal(size=8).astype(np.float32) * 3
        out = block(y, mask=mask).numpy()
        np.testing.assert_array_equal(out[0, :j], base[0, :j])  # earlier positions: unchanged
        assert np.all(np.abs(out[0, j:] - base[0, j:]).max(axis=-1) > 1e-4)  # later: changed


def test_padded_inputs_change_nothing():
    block = _block()
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 4, 4)).astype(np.float32)
    y = x.copy()
    y[1, 2:] = rng.normal(size=(2, 4)) * 100  # whatever sits at the padded positions
    np.testing.assert_allclose(block(y, mask=MASK).numpy(), block(x, mask=MASK).numpy(),
                               rtol=1e-6, atol=1e-6)


def test_all_padded_row_is_defined_zeros():
    block = _block()
    x = np.random.default_rng(6).normal(size=(1, 4, 4)).astype(np.float32)
    out, weights = block(x, mask=np.zeros((1, 4), bool), return_attention_scores=True)
    np.testing.assert_array_equal(out.numpy(), 0.0)
    np.testing.assert_array_equal(weights.numpy(), 0.0)


def test_dropout_only_in_training():
    block = _block(dropout_rate=0.5)
    x = np.random.default_rng(7).normal(size=(2, 4, 4)).astype(np.float32)
    eval_a = block(x, mask=MASK, training=False).numpy()
    np.testing.assert_array_equal(eval_a, block(x, mask=MASK, training=False).numpy())
    assert not np.allclose(block(x, mask=MASK, training=True).numpy(), eval_a)


def test_round_trips(check_layer_roundtrips):
    block = _block(num_heads=2, dim=4, dropout_rate=0.1)
    x = tf.constant(np.random.default_rng(8).normal(size=(2, 4, 4)), tf.float32)
    check_layer_roundtrips(block, (x, tf.constant(MASK)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_heads"):
        CausalSelfAttentionBlock(num_heads=0)
    with pytest.raises(ValueError, match="dropout_rate"):
        CausalSelfAttentionBlock(dropout_rate=1.0)
    with pytest.raises(ValueError, match="divide the input width 5"):
        CausalSelfAttentionBlock(num_heads=2)(tf.zeros([1, 3, 5]))
    with pytest.raises(ValueError, match=r"\[batch, length, d\]"):
        CausalSelfAttentionBlock()(tf.zeros([3, 4]))
