"""MIND, ComiRec-DR and ComiRec-SA towers: masking, determinism, readout, round-trips."""

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.layers import LabelAwareAttention
from towerkit.towers.comirec_dr import ComiRecDR
from towerkit.towers.comirec_sa import ComiRecSA
from towerkit.towers.mind import MIND

NUM_ITEMS, DIM, LENGTH = 30, 8, 6
# Right-padded histories of lengths 6, 3, 1 (as towerkit.data.sequences builds them).
HISTORY = np.array([[3, 7, 1, 9, 12, 4],
                    [5, 2, 8, 0, 0, 0],
                    [11, 0, 0, 0, 0, 0]], np.int64)


def _make(kind, **kwargs):
    tf.keras.utils.set_random_seed(0)
    items = tf.keras.layers.Embedding(NUM_ITEMS, DIM, name="items")
    if kind == "mind":
        return MIND(items, num_interests=4, hidden_units=(16,), **kwargs)
    if kind == "comirec_dr":
        return ComiRecDR(items, num_interests=4, max_length=LENGTH + 3, **kwargs)
    return ComiRecSA(items, num_interests=4, max_length=LENGTH + 3, **kwargs)


KINDS = ["mind", "comirec_dr", "comirec_sa"]


@pytest.mark.parametrize("kind", KINDS)
def test_padding_changes_nothing_and_inference_is_repeatable(kind):
    tower = _make(kind)
    ref = tower({"history": HISTORY}, training=False).numpy()
    assert ref.shape == (3, 4, DIM)
    # Repeated calls, calls on other inputs in between, other batch compositions: same vectors.
    tower({"history": HISTORY[::-1].copy()}, training=False)
    tower({"history": HISTORY}, training=True)
    np.testing.assert_array_equal(tower({"history": HISTORY}, training=False).numpy(), ref)
    alone = tower({"history": HISTORY[1:2]}, training=False).numpy()
    np.testing.assert_allclose(alone[0], ref[1], rtol=1e-5, atol=1e-6)
    longer = np.concatenate([HISTORY, np.zeros((3, 3), np.int64)], axis=1)
    np.testing.assert_allclose(tower({"history": longer}, training=False).numpy(), ref,
                               rtol=1e-5, atol=1e-6)


def test_mind_dynamic_interest_count_fills_inactive_slots_with_interest_zero():
    tower = _make("mind")
    vectors = tower({"history": HISTORY}, training=False).numpy()
    _, active = tower.interests({"history": HISTORY}, training=False)
    # Lengths 6, 3, 1 -> floor(log2) = 2, 1, 0 -> K' = 2, 1, 1.
    np.testing.assert_array_equal(active.numpy().sum(1), [2, 1, 1])
    for b, k in enumerate([2, 1, 1]):
        for j in range(k, 4):
            np.testing.assert_array_equal(vectors[b, j], vectors[b, 0])
    assert np.abs(vectors[0, 1] - vectors[0, 0]).max() > 1e-4


def test_mind_training_calls_draw_fresh_logits():
    tower = _make("mind")
    a = tower({"history": HISTORY}, training=True).numpy()
    b = tower({"history": HISTORY}, training=True).numpy()
    assert np.abs(a[0, :2] - b[0, :2]).max() > 1e-5
    # The only non-trainable state is the fixed inference table, which training never touches.
    assert [w.name.split("/")[-1] for w in tower.non_trainable_weights] == ["inference_logits:0"]
    np.testing.assert_array_equal(tower.routing.inference_table.numpy(),
                                  tf.random.stateless_normal([LENGTH, 4], seed=[0, 7]).numpy())


@pytest.mark.parametrize("kind", ["comirec_dr", "comirec_sa"])
def test_comirec_training_vector_is_the_largest_signed_dot_interest(kind):
    tower = _make(kind)
    tower({"history": HISTORY})
    if kind == "comirec_sa":
        # At init SA's heads attend almost uniformly and, reading the items alone, give nearly
        # equal interests; sharpen the heads so that they differ.
        tower.attention.w2.assign(50.0 * tower.attention.w2)
    interests, _ = tower.interests({"history": HISTORY}, training=False)
    # Target = minus interest 0 plus a little of interest 1: a sign-dropping readout tends to
    # pick interest 0 (largest |dot|); the signed argmax must not.
    target = -interests[:, 0] * 3.0 + 0.1 * interests[:, 1]
    picked = tower.assignments({"history": HISTORY}, target).numpy()
    scores = np.einsum("bkd,bd->bk", interests.numpy(), target.numpy())
    np.testing.assert_array_equal(picked, scores.argmax(1))
    # (User 2 has one behaviour: SA's interests all equal that row, so its tie goes to 0.)
    assert (picked[:2] != 0).all()
    user = tower.training_vector({"history": HISTORY}, target, training=False).numpy()
    np.testing.assert_allclose(user, interests.numpy()[np.arange(3), picked], rtol=1e-6)


@pytest.mark.parametrize("kind", ["comirec_dr", "comirec_sa"])
def test_cosine_readout_trains_and_reports_the_largest_cosine_interest(kind):
    tower = _make(kind, readout=LabelAwareAttention(hard=True, cosine=True))
    interests, _ = tower.interests({"history": HISTORY}, training=False)
    v = interests.numpy()
    target = tf.constant(np.random.default_rng(4).normal(size=(3, DIM)).astype(np.float32))
    unit = v / np.linalg.norm(v, axis=-1, keepdims=True)
    expected = np.einsum("bkd,bd->bk", unit, target.numpy()).argmax(1)
    np.testing.assert_array_equal(tower.assignments({"history": HISTORY}, target).numpy(),
                                  expected)
    user = tower.training_vector({"history": HISTORY}, target, training=False).numpy()
    np.testing.assert_allclose(user, v[np.arange(3), expected], rtol=1e-6)


def _np_comirec_sa(tower, history):
    """NumPy transcription of ComiRec-SA for right-padded histories (one user at a time):
    H = E + P (positions = rank among the valid items), A = softmax over the valid positions of
    tanh(H W1) W2, interests = A^T E (readout_source "items") or A^T H."""
    table = tower.item_embedding.get_weights()[0].astype(np.float64)
    positions = tower.position_embedding.numpy().astype(np.float64)
    w1, w2 = (w.numpy().astype(np.float64) for w in (tower.attention.w1, tower.attention.w2))
    out = []
    for row in history:
        items = row[row != 0]
        e = table[items]
        h = e + positions[np.arange(len(items))]
        scores = np.tanh(h @ w1) @ w2                      # [n, K]
        a = np.exp(scores - scores.max(0))
        a /= a.sum(0)
        out.append(a.T @ (e if tower.readout_source == "items" else h))
    return np.stack(out)


@pytest.mark.parametrize("source", ["items", "items_and_positions"])
def test_comirec_sa_readout_matches_numpy_oracle_at_default_sizes(source):
    # Default sizes: 1,350 items, dim 64, K = 4, max_length 20, W1 width 4 * 64, default
    # initialisers; positions moved away from their small init so they visibly matter.
    tf.keras.utils.set_random_seed(1)
    tower = ComiRecSA(tf.keras.layers.Embedding(1350, 64), readout_source=source)
    assert tower.num_interests == 4 and tower.max_length == 20
    rng = np.random.default_rng(2)
    lengths = np.array([20, 13, 5, 1])
    history = np.where(np.arange(20)[None, :] < lengths[:, None],
                       rng.integers(1, 1350, size=(4, 20)), 0).astype(np.int64)
    tower({"history": history})
    tower.position_embedding.assign(rng.normal(scale=0.05, size=(20, 64)).astype(np.float32))
    got = tower({"history": history}, training=False).numpy()
    np.testing.assert_allclose(got, _np_comirec_sa(tower, history), rtol=1e-4, atol=1e-6)
    # The two sources differ exactly by A^T P: the default reads no position embedding.
    other = ComiRecSA.from_config({**tower.get_config(), "readout_source": (
        "items_and_positions" if source == "items" else "items")})
    other({"history": history})
    other.set_weights(tower.get_weights())
    assert np.abs(other({"history": history}).numpy() - got).max() > 1e-3
    assert ComiRecSA(tf.keras.layers.Embedding(5, 2)).readout_source == "items"
    with pytest.raises(ValueError, match="readout_source"):
        ComiRecSA(tf.keras.layers.Embedding(5, 2), readout_source="positions")


def test_comirec_sa_attention_masks_padding():
    tower = _make("comirec_sa")
    tower({"history": HISTORY})
    att = tower.attention_weights({"history": HISTORY}).numpy()
    mask = HISTORY != 0
    np.testing.assert_array_equal(att[~mask], 0.0)
    np.testing.assert_allclose(att.sum(1), np.ones((3, 4)), rtol=1e-6)


def test_bad_histories_raise():
    tower = _make("comirec_sa")
    with pytest.raises(TypeError, match="integer item indices"):
        tower({"history": HISTORY.astype(np.float32)})
    with pytest.raises(ValueError, match=r"\[batch, length\]"):
        tower({"history": HISTORY[0]})
    with pytest.raises(ValueError, match="'history' feature"):
        tower({"items": HISTORY})
    with pytest.raises(TypeError, match="Keras layer"):
        MIND(np.zeros((3, 3)))


@pytest.mark.parametrize("kind", KINDS)
def test_config_and_savedmodel_round_trip(kind, tmp_path):
    tower = _make(kind)
    config = tower.get_config()
    clone = type(tower).from_config(config)
    assert clone.get_config() == config
    expected = tower({"history": HISTORY}, training=False).numpy()
    clone({"history": HISTORY}, training=False)
    clone.set_weights(tower.get_weights())
    np.testing.assert_allclose(clone({"history": HISTORY}, training=False).numpy(), expected,
                               rtol=1e-6)

    history = tf.keras.Input([None], dtype=tf.int64, name="history")
    model = tf.keras.Model({"history": history}, tower({"history": history}))
    np.testing.assert_allclose(model({"history": HISTORY}).numpy(), expected, rtol=1e-6)
    model.save(tmp_path / "tower")
    loaded = tf.keras.models.load_model(tmp_path / "tower")
    np.testing.assert_allclose(loaded({"history": HISTORY}, training=False).numpy(), expected,
                               rtol=1e-5, atol=1e-6)
    # The raw TF SavedModel signature gives the same (as TF Serving would see it).
    raw = tf.saved_model.load(str(tmp_path / "tower"))
    out = raw.signatures["serving_default"](history=tf.constant(HISTORY))
    np.testing.assert_allclose(list(out.values())[0].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_mind_soft_readout_is_label_aware_attention():
    tower = _make("mind", p=2.0)
    assert isinstance(tower.readout, LabelAwareAttention) and tower.readout.p == 2.0
    interests, active = tower.interests({"history": HISTORY}, training=False)
    target = tf.random.stateless_normal([3, DIM], seed=[1, 2])
    user = tower.training_vector({"history": HISTORY}, target, training=False).numpy()
    # Reference: softmax(2 * s) over active interests only.
    s = np.einsum("bkd,bd->bk", interests.numpy(), target.numpy())
    for b in range(3):
        k = int(active[b].numpy().sum())
        a = np.exp(2 * s[b, :k] - (2 * s[b, :k]).max())
        a /= a.sum()
        np.testing.assert_allclose(user[b], a @ interests.numpy()[b, :k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["mind", "comirec_dr"])
def test_weight_decay_penalises_the_routing_transforms(kind):
    tower = _make(kind, weight_decay=1e-3)
    tower({"history": HISTORY}, training=True)
    # Hand-derived: 1e-3 * sum of the squared entries of S (MIND) or of every W_pj (ComiRec-DR);
    # nothing else is penalised.
    expected = 1e-3 * np.sum(tower.routing.kernel.numpy() ** 2)
    assert len(tower.losses) == 1
    np.testing.assert_allclose(tower.losses[0].numpy(), expected, rtol=1e-6)
    assert type(tower).from_config(tower.get_config()).weight_decay == 1e-3
    assert not _make(kind).losses


@pytest.mark.parametrize("kind", KINDS)
def test_history_dropout_acts_in_training_only(kind):
    plain, dropped = _make(kind), _make(kind, dropout=0.5)
    assert dropped.get_config()["dropout"] == 0.5
    expected = plain({"history": HISTORY}, training=False).numpy()
    dropped({"history": HISTORY}, training=False)
    dropped.set_weights(plain.get_weights())
    # Inference: dropout is the identity.
    np.testing.assert_array_equal(dropped({"history": HISTORY}, training=False).numpy(), expected)
    # Training: the embeddings that reach the extractor are masked and rescaled by 1 / (1 - 0.5).
    embeddings, mask = dropped.embed_history({"history": HISTORY}, training=True)
    reference, _ = plain.embed_history({"history": HISTORY})
    e, ref = embeddings.numpy(), reference.numpy()
    kept = e != 0
    np.testing.assert_allclose(e[kept], 2.0 * ref[kept], rtol=1e-6)
    assert 0 < kept[mask.numpy()].mean() < 1
    with pytest.raises(ValueError, match="dropout"):
        _make(kind, dropout=1.0)


@pytest.mark.parametrize("kind", ["mind", "comirec_dr"])
def test_routing_kernel_initializer_default_is_configurable_and_round_trips(kind):
    # Default: N(0, 0.3^2) (chosen on the valid users). The authors' code draws W (ComiRec) /
    # S (DeepMatch's MIND) from N(0, 1); Glorot normal, the former default, has stddev
    # sqrt(2 / (2 * 9 * 4 * 8)) = 0.059 for DR's [9, 4, 8, 8] W here, sqrt(2 / 16) for S.
    reference = _make(kind, kernel_initializer=tf.keras.initializers.RandomNormal(
        stddev=1.0, seed=3))
    config = reference.get_config()
    assert config["kernel_initializer"]["config"]["stddev"] == 1.0
    assert type(reference).from_config(config).get_config() == config
    default, glorot = _make(kind), _make(kind, kernel_initializer="glorot_normal")
    for tower in (reference, default, glorot):
        tower({"history": HISTORY}, training=False)
    assert default.get_config()["kernel_initializer"]["config"]["stddev"] == 0.3
    # Sample stddevs of 2,304 (DR) or 64 (MIND's 8 x 8 S) draws: ~1.5% / ~9% relative noise.
    rel = 0.05 if kind == "comirec_dr" else 0.3
    assert reference.routing.kernel.numpy().std() == pytest.approx(1.0, rel=rel)
    assert default.routing.kernel.numpy().std() == pytest.approx(0.3, rel=rel)
    fans = 576 if kind == "comirec_dr" else 16
    assert glorot.routing.kernel.numpy().std() == pytest.approx((2 / fans) ** 0.5,
                                                               rel=3 * rel)


def test_comirec_dr_position_order_round_trips_and_keeps_padding_inert():
    # "recent_first": W_0j transforms the latest behaviour. Right padding, extra padded slots
    # and another batch composition still change nothing; the order survives get_config.
    tower = _make("comirec_dr", position_order="recent_first")
    config = tower.get_config()
    assert config["position_order"] == "recent_first"
    assert ComiRecDR.from_config(config).get_config() == config
    ref = tower({"history": HISTORY}, training=False).numpy()
    longer = np.concatenate([HISTORY, np.zeros((3, 3), np.int64)], axis=1)
    np.testing.assert_allclose(tower({"history": longer}, training=False).numpy(), ref,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tower({"history": HISTORY[1:2]}, training=False).numpy()[0],
                               ref[1], rtol=1e-5, atol=1e-6)
    assert tower.routing.position_order == "recent_first"
    # Same weights, other order: other interests for histories longer than one item.
    oldest = _make("comirec_dr")
    oldest({"history": HISTORY}, training=False)
    oldest.set_weights(tower.get_weights())
    other = oldest({"history": HISTORY}, training=False).numpy()
    np.testing.assert_allclose(other[2], ref[2], rtol=1e-5, atol=1e-6)  # length 1: W_0 both ways
    assert np.abs(other[:2] - ref[:2]).max() > 1e-4


def test_mind_profile_is_concatenated_with_every_capsule_and_round_trips(tmp_path):
    from towerkit.layers import ProfileEmbedding

    tower = _make("mind", profile_embedding=ProfileEmbedding({"user_gender": 3}, dim=2))
    config = tower.get_config()
    inputs = {"history": HISTORY, "user_gender": np.array([1, 2, 0], np.int64)}
    out = tower(inputs, training=False).numpy()
    # Hand check of the layer stack: capsules ++ profile -> hidden ReLU -> projection.
    capsules, _ = tower.routing(tower.item_embedding(HISTORY), mask=HISTORY > 0, training=False)
    profile = tower.profile_embedding(inputs).numpy()
    x = np.concatenate([capsules.numpy(), np.repeat(profile[:, None], 4, axis=1)], -1)
    (w1, b1), (w2, b2) = tower.hidden[0].get_weights(), tower.projection.get_weights()
    want = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    active = tower.interests(inputs, training=False)[1].numpy()
    np.testing.assert_allclose(out[active], want[active], rtol=1e-4, atol=1e-5)
    # The profile matters: another gender, other vectors; an unknown one is the zero vector.
    other = tower({**inputs, "user_gender": np.array([2, 1, 0], np.int64)}, training=False)
    assert np.abs(other.numpy()[:2] - out[:2]).max() > 1e-4
    np.testing.assert_array_equal(other.numpy()[2], out[2])
    with pytest.raises(ValueError, match="'user_gender' is missing"):
        tower({"history": HISTORY}, training=False)

    clone = MIND.from_config(config)
    assert clone.get_config() == config
    clone(inputs, training=False)
    clone.set_weights(tower.get_weights())
    np.testing.assert_allclose(clone(inputs, training=False).numpy(), out, rtol=1e-6)
    keras_inputs = {"history": tf.keras.Input([None], dtype=tf.int64, name="history"),
                    "user_gender": tf.keras.Input([], dtype=tf.int64, name="user_gender")}
    model = tf.keras.Model(keras_inputs, tower(keras_inputs))
    model.save(tmp_path / "mind_profile")
    raw = tf.saved_model.load(str(tmp_path / "mind_profile")).signatures["serving_default"]
    served = raw(history=tf.constant(HISTORY), user_gender=tf.constant(inputs["user_gender"]))
    np.testing.assert_allclose(list(served.values())[0].numpy(), out, rtol=1e-5, atol=1e-6)


def test_mind_export_routes_with_its_stored_inference_logits(tmp_path):
    # The fixed inference logits are a weight saved with the model: set them to values no RNG
    # in the graph could regenerate, export, reload, and get the same interests.
    tower = _make("mind")
    tower({"history": HISTORY}, training=False)
    table = np.random.default_rng(7).normal(scale=3.0, size=(LENGTH, 4)).astype(np.float32)
    before = tower({"history": HISTORY}, training=False).numpy()
    tower.routing.inference_table.assign(table)
    expected = tower({"history": HISTORY}, training=False).numpy()
    assert np.abs(expected - before).max() > 1e-4        # the table drives inference routing
    history = tf.keras.Input([LENGTH], dtype=tf.int64, name="history")
    tf.keras.Model({"history": history}, tower({"history": history})).save(tmp_path / "mind")
    raw = tf.saved_model.load(str(tmp_path / "mind"))
    stored = [v for v in raw.variables if v.name.endswith("inference_logits:0")]
    assert len(stored) == 1
    np.testing.assert_array_equal(stored[0].numpy(), table)
    out = raw.signatures["serving_default"](history=tf.constant(HISTORY))
    np.testing.assert_allclose(list(out.values())[0].numpy(), expected, rtol=1e-5, atol=1e-6)


def _pairwise_cosine_oracle(v, mask, margin=0.0):
    """NumPy: mean over users with >= 2 active interests of their mean hinged pairwise cosine."""
    per_user = []
    for vectors, active in zip(np.asarray(v, np.float64), np.asarray(mask, bool)):
        unit = vectors[active] / np.linalg.norm(vectors[active], axis=1, keepdims=True)
        m = len(unit)
        if m < 2:
            continue
        c = unit @ unit.T
        per_user.append(sum(max(c[i, j] - margin, 0.0)
                            for i in range(m) for j in range(m) if i != j) / (m * (m - 1)))
    return float(np.mean(per_user)) if per_user else 0.0


@pytest.mark.parametrize("margin", [0.0, 0.3, -0.5])
def test_mean_pairwise_cosine_matches_numpy_oracle(margin):
    from towerkit.layers.multi_interest_tower import mean_pairwise_cosine

    rng = np.random.default_rng(3)
    v = rng.normal(size=(5, 4, 7)).astype(np.float32)
    v[1, 1] = -v[1, 0]                       # an opposed pair (cosine -1)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [0, 1, 0, 1]], bool)
    got = float(mean_pairwise_cosine(tf.constant(v), tf.constant(mask), margin))
    assert got == pytest.approx(_pairwise_cosine_oracle(v, mask, margin), abs=1e-6)
    # Hand-derived: two equal interests (cosine 1) and a user with one interest (left out).
    same = np.ones((2, 2, 3), np.float32)
    one = np.array([[True, True], [True, False]])
    assert float(mean_pairwise_cosine(tf.constant(same), tf.constant(one))) == pytest.approx(1.0)
    assert float(mean_pairwise_cosine(tf.constant(same), tf.constant(one), 0.5)) == \
        pytest.approx(0.5)
    assert float(mean_pairwise_cosine(tf.constant(same), tf.constant([[True, False]] * 2))) == 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_diversity_penalty_is_the_weighted_pairwise_cosine_and_round_trips(kind, tmp_path):
    tower = _make(kind, diversity_weight=0.7, diversity_margin=0.1)
    config = tower.get_config()
    assert config["diversity_weight"] == 0.7 and config["diversity_margin"] == 0.1
    clone = type(tower).from_config(config)
    assert clone.diversity_weight == 0.7 and clone.diversity_margin == 0.1
    targets = tower.item_embedding(tf.constant([4, 8, 11]))
    vector, penalty = tower.training_outputs({"history": HISTORY}, targets, training=False)
    interests, mask = tower.interests({"history": HISTORY}, training=False)
    assert float(penalty) == pytest.approx(
        0.7 * _pairwise_cosine_oracle(interests.numpy(), mask.numpy(), 0.1), abs=1e-6)
    np.testing.assert_allclose(vector.numpy(), tower.training_vector(
        {"history": HISTORY}, targets, training=False).numpy(), rtol=1e-6)
    # Without a weight there is no penalty (the papers' models).
    _, none = _make(kind).training_outputs({"history": HISTORY}, targets, training=False)
    assert float(none) == 0.0


@pytest.mark.parametrize("bad", [{"diversity_weight": -0.1}, {"diversity_margin": 1.0},
                                 {"diversity_margin": -1.5}])
def test_bad_diversity_settings_raise(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        _make("mind", **bad)
