"""SASRecTower: NumPy oracle, causality, padding invariance, token_scale, empty history,
round-trips and behaviour at the default size."""

import towerkit  # noqa: F401  (first: legacy Keras)
import numpy as np
import pytest
import tensorflow as tf

from towerkit.towers.sasrec import SASRecTower

HISTORY = np.array([[3, 1, 4, 0, 0], [2, 0, 0, 0, 0], [0, 0, 0, 0, 0], [5, 6, 2, 1, 3]],
                   dtype=np.int64)


def _tower(dim=4, max_length=5, num_blocks=1, num_heads=2, dropout_rate=0.0, items=7):
    tf.keras.utils.set_random_seed(1)
    table = tf.keras.layers.Embedding(items, dim, embeddings_initializer="random_normal")
    tower = SASRecTower(table, max_length=max_length, num_blocks=num_blocks,
                        num_heads=num_heads, dropout_rate=dropout_rate)
    tower({"history": tf.constant(HISTORY[:, :max_length])})
    # Non-trivial layer norms and biases, so the oracle checks them too.
    rng = np.random.default_rng(0)
    tower.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in tower.get_weights()])
    return tower


def _ln(x, gamma, beta, eps=1e-8):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * gamma + beta


def _numpy_tower(items, tower):
    """The paper's model on the unpadded items, which sit at the LAST positions of the
    paper's left-padded sequence: E_t = sqrt(d) M[i_t] + P[n - h + t]; each block
    S = X + SA(LN(X)) (causal), F = S + FFN(LN(S)); the output is LN(F) at the last item."""
    table = tower.item_embedding.get_weights()[0]
    positions = tower.position_embedding.get_weights()[0]
    n, d, h = tower.max_length, tower.dim, len(items)
    x = np.sqrt(d) * table[items] + positions[n - h:]
    for block in tower.blocks:
        g1, b1 = block.attention_norm.get_weights()
        (wq, bq), (wk, bk), (wv, bv) = (layer.get_weights() for layer in
                                        (block.query_dense, block.key_dense, block.value_dense))
        z = _ln(x, g1, b1)
        q, k, v = z @ wq + bq, z @ wk + bk, z @ wv + bv
        hd = d // block.num_heads
        s = np.zeros_like(x)
        for j in range(block.num_heads):
            c = slice(j * hd, (j + 1) * hd)
            logits = q[:, c] @ k[:, c].T / np.sqrt(hd)
            logits[np.triu_indices(h, 1)] = -np.inf  # causality
            a = np.exp(logits - logits.max(1, keepdims=True))
            s[:, c] = (a / a.sum(1, keepdims=True)) @ v[:, c]
        s = x + s
        g2, b2 = block.feed_forward_norm.get_weights()
        (w1, c1), (w2, c2) = block.feed_forward_1.get_weights(), block.feed_forward_2.get_weights()
        x = s + np.maximum(_ln(s, g2, b2) @ w1 + c1, 0) @ w2 + c2
    return _ln(x, *tower.final_norm.get_weights())[-1]


@pytest.mark.parametrize("num_blocks", [1, 2])
def test_matches_numpy_oracle(num_blocks):
    tower = _tower(num_blocks=num_blocks)
    out = tower({"history": tf.constant(HISTORY)}).numpy()
    for row, history in zip(out, HISTORY):
        items = history[history != 0]
        if len(items):
            np.testing.assert_allclose(row, _numpy_tower(items, tower), rtol=1e-4, atol=1e-4)
    # The empty history is the zero vector, not NaN.
    np.testing.assert_array_equal(out[2], np.zeros(4))


def test_no_position_sees_a_later_one():
    tower = _tower(num_blocks=2)
    history = HISTORY[3:4].copy()
    base, _ = tower.sequence({"history": tf.constant(history)})
    # Perturb the item at position j, keeping the length (so every position keeps its
    # position embedding): positions < j are unchanged, positions >= j change.
    for j in range(5):
        changed = history.copy()
        changed[0, j] = 6 if history[0, j] != 6 else 4
        out, _ = tower.sequence({"history": tf.constant(changed)})
        np.testing.assert_array_equal(out.numpy()[0, :j], base.numpy()[0, :j])
        assert np.all(np.abs(out.numpy()[0, j:] - base.numpy()[0, j:]).max(-1) > 1e-4)


def test_attention_pattern_in_the_tower():
    tower = _tower(num_blocks=2)
    _, _, scores = tower.sequence({"history": tf.constant(HISTORY)},
                                  return_attention_scores=True)
    upper = np.triu(np.ones((5, 5), bool), k=1)
    for weights in scores:
        weights = weights.numpy()
        assert np.all(weights[..., upper] == 0.0)
        for user, history in enumerate(HISTORY):
            assert np.all(weights[user, :, :, history == 0] == 0.0)  # padded keys: weight 0


def test_padding_changes_nothing():
    tower = _tower(max_length=8)
    before = tower({"history": tf.constant(HISTORY)}).numpy()
    # Whatever the padding row of the table holds.
    table = tower.item_embedding.embeddings.numpy()
    table[0] = -50.0
    tower.item_embedding.embeddings.assign(table)
    np.testing.assert_allclose(tower({"history": tf.constant(HISTORY)}).numpy(), before,
                               rtol=1e-5, atol=1e-6)
    # More padding columns (up to max_length) change nothing.
    longer = np.pad(HISTORY, [(0, 0), (0, 3)])
    np.testing.assert_allclose(tower({"history": tf.constant(longer)}).numpy(), before,
                               rtol=1e-5, atol=1e-6)
    # A zero inside a history (an unknown movie) is skipped: [3, 0, 1, 4] == [3, 1, 4].
    holed = np.array([[3, 0, 1, 4, 0]])
    np.testing.assert_allclose(tower({"history": tf.constant(holed)}).numpy()[0], before[0],
                               rtol=1e-5, atol=1e-6)


def test_token_scale():
    tower = _tower(num_blocks=2)
    inputs = {"history": tf.constant(HISTORY)}
    plain = tower(inputs).numpy()
    np.testing.assert_allclose(tower(inputs, token_scale=tf.ones([4, 4])).numpy(), plain,
                               rtol=1e-6)
    # A scale multiplies every item token: the same as scaling the item table's columns.
    scale = np.array([0.5, 2.0, -1.0, 1.5], np.float32)
    scaled = tower(inputs, token_scale=tf.constant(np.tile(scale, (4, 1)))).numpy()
    table = tower.item_embedding.embeddings.numpy()
    tower.item_embedding.embeddings.assign(table * scale)
    np.testing.assert_allclose(scaled, tower(inputs).numpy(), rtol=1e-5, atol=1e-5)
    tower.item_embedding.embeddings.assign(table)
    assert np.abs(scaled - plain)[[0, 1, 3]].min(axis=-1).max() > 1e-3
    # Per-user scales: each row uses its own; the gradient reaches the scale.
    per_user = tf.Variable(np.tile(scale, (4, 1)))
    per_user[0].assign(np.ones(4, np.float32))
    with tf.GradientTape() as tape:
        out = tower(inputs, token_scale=per_user)
        loss = tf.reduce_sum(out ** 2)
    np.testing.assert_allclose(out.numpy()[0], plain[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.numpy()[3], scaled[3], rtol=1e-5, atol=1e-6)
    grad = tape.gradient(loss, per_user).numpy()
    assert np.all(np.abs(grad[[0, 1, 3]]).sum(-1) > 0) and np.all(grad[2] == 0)
    with pytest.raises(ValueError, match=r"token_scale must be \[batch, 4\]"):
        tower(inputs, token_scale=tf.ones([4, 3]))


def test_round_trips(tmp_path):
    tower = _tower(num_blocks=2, dropout_rate=0.2)
    inputs = {"history": tf.constant(HISTORY)}
    expected = tower(inputs).numpy()
    clone = SASRecTower.from_config(tower.get_config())
    config, cloned = tower.get_config(), clone.get_config()
    assert cloned.pop("item_embedding")["config"] == config.pop("item_embedding")["config"]
    assert cloned == config
    clone(inputs)
    clone.set_weights(tower.get_weights())
    np.testing.assert_allclose(clone(inputs).numpy(), expected, rtol=1e-6)
    revived = tf.keras.layers.deserialize(tf.keras.layers.serialize(tower))
    assert isinstance(revived, SASRecTower) and revived.num_blocks == 2

    module = tf.Module()
    module.tower = tower
    module.serve = tf.function(lambda h, s: tower({"history": h}, token_scale=s),
                               input_signature=[tf.TensorSpec([None, 5], tf.int64),
                                                tf.TensorSpec([None, 4], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "sasrec"))
    loaded = tf.saved_model.load(str(tmp_path / "sasrec"))
    np.testing.assert_allclose(loaded.serve(inputs["history"], tf.ones([4, 4])).numpy(),
                               expected, rtol=1e-5, atol=1e-6)


def test_default_size_trains_every_weight():
    """At the recipe's size (d = 64, n = 20, 2 blocks, 1 head, dropout): finite outputs and a
    full-softmax loss whose gradient reaches every weight, dropout only in training."""
    tf.keras.utils.set_random_seed(0)
    num_items = 500
    table = tf.keras.layers.Embedding(num_items + 1, 64)
    tower = SASRecTower(table)  # defaults: max_length 20, 2 blocks, 1 head
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 21, size=64)
    history = np.where(np.arange(20)[None] < lengths[:, None],
                       rng.integers(1, num_items + 1, size=(64, 20)), 0)
    inputs = {"history": tf.constant(history)}
    targets = tf.constant(rng.integers(1, num_items + 1, size=64))
    with tf.GradientTape() as tape:
        q = tower(inputs, training=True)
        logits = tf.matmul(q, table.embeddings, transpose_b=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
    assert q.shape == (64, 64) and np.isfinite(q.numpy()).all()
    assert len(tower.trainable_weights) == 2 + 2 * 14 + 2  # tables, 2 blocks, final norm
    for weight, grad in zip(tower.trainable_weights,
                            tape.gradient(loss, tower.trainable_weights)):
        grad = tf.convert_to_tensor(grad).numpy()
        assert np.isfinite(grad).all() and np.abs(grad).max() > 0, weight.name
    evaluated = tower(inputs).numpy()
    np.testing.assert_array_equal(evaluated, tower(inputs).numpy())
    assert not np.allclose(tower(inputs, training=True).numpy(), evaluated)
    np.testing.assert_array_equal(evaluated[lengths == 0], 0.0)
    assert np.all(np.abs(evaluated[lengths > 0]).sum(-1) > 0)


def test_bad_inputs():
    tower = _tower()
    with pytest.raises(ValueError, match="'history'"):
        tower(tf.constant(HISTORY))
    with pytest.raises(TypeError, match="integer"):
        tower({"history": tf.constant(HISTORY, tf.float32)})
    with pytest.raises(ValueError, match="max_length=5"):
        tower({"history": tf.zeros([2, 6], tf.int64)})
    items = tf.keras.layers.Embedding(7, 6)
    with pytest.raises(ValueError, match="num_heads=4 must divide the embedding width 6"):
        SASRecTower(items, num_heads=4)
    with pytest.raises(ValueError, match="num_blocks"):
        SASRecTower(items, num_blocks=0)
    with pytest.raises(ValueError, match="dropout_rate"):
        SASRecTower(items, dropout_rate=-0.1)
    with pytest.raises(TypeError, match="Embedding"):
        SASRecTower(tf.keras.layers.Dense(3))
