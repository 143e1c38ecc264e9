"""DualAugmentedTwoTowerModel and AugmentedTower: AMM gradients and pairing, negatives, the
total loss against a hand/NumPy derivation, OOV behaviour, config and SavedModel round trips."""

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf

from towerkit.features import FeatureSet, IdEmbedding
from towerkit.models import MLP, AugmentedTower, DualAugmentedTwoTowerModel
from towerkit.tasks import Retrieval

USERS = ["u1", "u2", "u3", "u4"]
ITEMS = ["m1", "m2", "m3", "m4", "m5"]


def _towers(dim=4, augment=True, seed=0):
    tf.keras.utils.set_random_seed(seed)
    init = tf.keras.initializers.RandomNormal(stddev=0.5, seed=seed)
    query = AugmentedTower(
        FeatureSet({"user_id": IdEmbedding(USERS, 3, embeddings_initializer=init)}),
        MLP([6, dim], name="query_mlp"),
        augment=IdEmbedding(USERS, dim, embeddings_initializer=init, name="user_aug")
        if augment else None, augment_key="user_id", name="query_tower")
    candidate = AugmentedTower(
        FeatureSet({"item_id": IdEmbedding(ITEMS, 3, embeddings_initializer=init)}),
        MLP([6, dim], name="candidate_mlp"),
        augment=IdEmbedding(ITEMS, dim, embeddings_initializer=init, name="item_aug")
        if augment else None, augment_key="item_id", name="candidate_tower")
    return query, candidate


BATCH = {"user_id": tf.constant(["u1", "u2", "u3", "u1"]),
         "item_id": tf.constant(["m2", "m1", "m5", "m3"]),
         "genre": tf.constant([0, 1, 0, 1], tf.int64)}


def _model(loss="softmax", **kwargs):
    query, candidate = _towers()
    model = DualAugmentedTwoTowerModel(query, candidate, Retrieval(), loss=loss, temperature=0.5,
                                       category_key="genre", num_categories=2, **kwargs)
    model(BATCH)  # build
    return model


def _tower_weights(model):
    """Every trainable weight of both towers except the augmented-vector tables."""
    out = []
    for tower in (model.query_tower, model.candidate_tower):
        augment = {id(w) for w in tower.augment.trainable_weights}
        out += [w for w in tower.trainable_weights if id(w) not in augment]
    return out


def test_mimic_losses_reach_only_the_augmented_vectors():
    model = _model()
    tower_weights = _tower_weights(model)
    assert len(tower_weights) == 2 * (1 + 4)  # id table + 2 dense (kernel, bias) per tower
    augment = [model.query_tower.augment.embedding.embeddings,
               model.candidate_tower.augment.embedding.embeddings]
    for term in ("amm_user", "amm_item"):
        with tf.GradientTape() as tape:
            value = model.loss_terms(BATCH, training=True)[term]
        grads = tape.gradient(value, tower_weights + augment, unconnected_gradients="zero")
        for weight, grad in zip(tower_weights, grads[:len(tower_weights)]):
            np.testing.assert_array_equal(tf.convert_to_tensor(grad).numpy(), 0.0,
                                          err_msg=f"{term} -> {weight.name}")
        own = grads[len(tower_weights) + (0 if term == "amm_user" else 1)]
        other = grads[len(tower_weights) + (1 if term == "amm_user" else 0)]
        assert np.abs(tf.convert_to_tensor(own).numpy()).sum() > 0, term
        # a_u's loss does not move a_v directly either (p_v is a constant there).
        np.testing.assert_array_equal(tf.convert_to_tensor(other).numpy(), 0.0)
    # The main loss, by contrast, trains the towers (and the augmented vectors through them).
    with tf.GradientTape() as tape:
        value = model.loss_terms(BATCH, training=True)["main"]
    grads = tape.gradient(value, tower_weights + augment, unconnected_gradients="zero")
    assert all(np.abs(tf.convert_to_tensor(g).numpy()).sum() > 0 for g in grads)


def test_each_augmented_vector_mimics_the_other_towers_output_for_the_same_pair():
    model = _model()
    p_u, a_u = model.query_tower.encode(BATCH)
    p_v, a_v = model.candidate_tower.encode(BATCH)
    terms = model.loss_terms(BATCH)
    p_u, a_u, p_v, a_v = (t.numpy().astype(np.float64) for t in (p_u, a_u, p_v, a_v))
    # Row i pairs user i with its positive item i: a_u[i] vs p_v[i], a_v[i] vs p_u[i].
    assert float(terms["amm_user"]) == pytest.approx(np.sum((a_u - p_v) ** 2), rel=1e-5)
    assert float(terms["amm_item"]) == pytest.approx(np.sum((a_v - p_u) ** 2), rel=1e-5)
    # Not the known wrong pairings: own tower, or another row's item.
    assert float(terms["amm_user"]) != pytest.approx(np.sum((a_u - p_u) ** 2), rel=1e-3)
    assert float(terms["amm_user"]) != pytest.approx(
        np.sum((a_u - np.roll(p_v, 1, axis=0)) ** 2), rel=1e-3)


def _softmax_reference(p_u, p_v, temperature, ids):
    """In-batch softmax with accidental hits off and no logQ: sum_i lse_j s_ij - s_ii."""
    s = p_u @ p_v.T / temperature
    lse = np.log(np.exp(s - s.max(1, keepdims=True)).sum(1)) + s.max(1)
    return float(np.sum(lse - np.diag(s)))


def test_total_loss_equals_the_weighted_sum_with_cal_scaled_by_the_pairs():
    model = _model(amm_user_weight=0.3, amm_item_weight=0.7, cal_weight=2.0)
    p_u, a_u = (t.numpy().astype(np.float64) for t in model.query_tower.encode(BATCH))
    p_v, a_v = (t.numpy().astype(np.float64) for t in model.candidate_tower.encode(BATCH))
    main = _softmax_reference(p_u, p_v, 0.5, None)
    # CAL: genre 0 = rows 0, 2; genre 1 = rows 1, 3 (tie -> 0 is major). Two-item covariance:
    # C = d d^T / 2 with d = x_a - x_b (the unbiased estimate of two points).
    d0, d1 = p_v[0] - p_v[2], p_v[1] - p_v[3]
    cal = np.sum((np.outer(d0, d0) / 2 - np.outer(d1, d1) / 2) ** 2)
    expected = (main + 0.3 * np.sum((a_u - p_v) ** 2) + 0.7 * np.sum((a_v - p_u) ** 2)
                + 2.0 * 4 * cal)  # T = 4 pairs
    assert float(model.compute_loss(BATCH)) == pytest.approx(expected, rel=1e-5)
    assert float(model.loss_terms(BATCH)["cal"]) == pytest.approx(cal, rel=1e-5)


def _bce_batch(negatives):
    return {**BATCH, "negatives": {"item_id": tf.constant(negatives)}}


def test_bce_main_loss_and_negatives_add_nothing_to_amm():
    model = _model(loss="bce", candidate_id_key="item_id")
    negatives = [["m1", "m4"], ["m3", "m1"], ["m2", "m4"], ["m5", "m3"]]
    terms = model.loss_terms(_bce_batch(negatives))
    p_u, a_u = (t.numpy().astype(np.float64) for t in model.query_tower.encode(BATCH))
    p_v, a_v = (t.numpy().astype(np.float64) for t in model.candidate_tower.encode(BATCH))
    # AMM only over the four labelled positives, exactly as in the softmax case.
    assert float(terms["amm_user"]) == pytest.approx(np.sum((a_u - p_v) ** 2), rel=1e-5)
    assert float(terms["amm_item"]) == pytest.approx(np.sum((a_v - p_u) ** 2), rel=1e-5)
    # Other negatives: AMM unchanged, the main loss changes.
    other = model.loss_terms(_bce_batch([["m5", "m5"], ["m4", "m2"], ["m1", "m3"],
                                         ["m4", "m1"]]))
    assert float(other["amm_user"]) == pytest.approx(float(terms["amm_user"]), rel=1e-6)
    assert float(other["amm_item"]) == pytest.approx(float(terms["amm_item"]), rel=1e-6)
    assert float(other["main"]) != pytest.approx(float(terms["main"]), rel=1e-4)
    # BCE by hand: softplus(-s) for positives, softplus(s) for negatives; row 1's second
    # negative (m1) and row 3's (m3) are their rows' own positives (accidental hits): masked.
    p_n = model.candidate_tower({"item_id": tf.constant(sum(negatives, []))}).numpy()
    p_n = p_n.reshape(4, 2, -1).astype(np.float64)
    pos = np.sum(p_u * p_v, 1) / 0.5
    negs = np.einsum("bd,bsd->bs", p_u, p_n) / 0.5
    mask = np.array([[1, 1], [1, 0], [1, 1], [1, 0]])
    softplus = lambda z: np.log1p(np.exp(z))  # noqa: E731
    expected = np.sum(softplus(-pos)) + np.sum(mask * softplus(negs))
    assert float(terms["main"]) == pytest.approx(expected, rel=1e-5)
    assert float(terms["pairs"]) == 12.0
    with pytest.raises(ValueError, match="sampled negatives"):
        model.loss_terms(BATCH)


def test_without_augmentation_the_model_has_no_mimic_terms():
    query, candidate = _towers(augment=False)
    model = DualAugmentedTwoTowerModel(query, candidate, temperature=0.5, cal_weight=0.0)
    terms = model.loss_terms(BATCH)
    assert float(terms["amm_user"]) == 0.0 and float(terms["amm_item"]) == 0.0
    assert float(terms["cal"]) == 0.0
    assert query.feature_names == ["user_id"]


def test_training_moves_augmented_vectors_towards_their_targets():
    model = _model(amm_user_weight=1.0, amm_item_weight=1.0)
    model.compile(tf.keras.optimizers.Adam(0.05))
    ds = tf.data.Dataset.from_tensors(BATCH).repeat(60)
    before = model.loss_terms(BATCH)
    model.fit(ds, epochs=1, verbose=0)
    after = model.loss_terms(BATCH)
    assert float(after["amm_user"]) < 0.5 * float(before["amm_user"])
    assert float(after["amm_item"]) < 0.5 * float(before["amm_item"])


def test_unknown_ids_use_the_oov_augmented_row():
    query, _ = _towers()
    query({"user_id": tf.constant(["u1"])})  # build
    oov_row = query.augment.embedding.embeddings[0].numpy()  # StringLookup OOV index 0
    np.testing.assert_allclose(
        query.augmented_vector({"user_id": tf.constant(["nobody"])}).numpy()[0], oov_row)
    p = query({"user_id": tf.constant(["nobody", "u1"])}).numpy()
    assert np.all(np.isfinite(p)) and np.allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-5)
    # A zero-initialised table (the recipe's choice) gives unknown ids a = 0.
    zero_tower = AugmentedTower(FeatureSet({"user_id": IdEmbedding(USERS, 3)}), MLP([4]),
                                augment=IdEmbedding(USERS, 4, embeddings_initializer="zeros"),
                                augment_key="user_id")
    np.testing.assert_array_equal(
        zero_tower.augmented_vector({"user_id": tf.constant(["nobody"])}).numpy(), 0.0)


def test_tower_output_is_the_mlp_of_features_then_augment_normalised():
    query, _ = _towers()
    inputs = {"user_id": tf.constant(["u2", "u4"])}
    output = query(inputs).numpy()
    z = np.concatenate([query.features(inputs).numpy(),
                        query.augment(inputs["user_id"]).numpy()], axis=1)
    h = z
    for dense in query.mlp.dense_layers:
        h = h @ dense.kernel.numpy() + dense.bias.numpy()
        if dense is not query.mlp.dense_layers[-1]:
            h = np.maximum(h, 0)
    expected = h / np.linalg.norm(h, axis=1, keepdims=True)
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_clear_errors():
    query, candidate = _towers()
    with pytest.raises(ValueError, match="loss must be one of"):
        DualAugmentedTwoTowerModel(query, candidate, loss="hinge", cal_weight=0)
    with pytest.raises(ValueError, match="temperature must be"):
        DualAugmentedTwoTowerModel(query, candidate, temperature=0.0, cal_weight=0)
    with pytest.raises(ValueError, match="amm_user_weight must be"):
        DualAugmentedTwoTowerModel(query, candidate, amm_user_weight=-1.0, cal_weight=0)
    with pytest.raises(ValueError, match="needs category_key"):
        DualAugmentedTwoTowerModel(query, candidate)
    with pytest.raises(ValueError, match="not on its Retrieval task"):
        DualAugmentedTwoTowerModel(query, candidate, Retrieval(temperature=0.1), cal_weight=0)
    with pytest.raises(TypeError, match="AugmentedTower"):
        DualAugmentedTwoTowerModel(query.features, candidate, cal_weight=0)
    with pytest.raises(ValueError, match="as wide as the tower output"):
        AugmentedTower(query.features, MLP([8]), augment=IdEmbedding(USERS, 4),
                       augment_key="user_id")
    with pytest.raises(ValueError, match="needs augment_key"):
        AugmentedTower(query.features, MLP([4]), augment=IdEmbedding(USERS, 4))


def test_config_round_trips():
    model = _model(amm_user_weight=0.2, cal_weight=3.0)
    again = DualAugmentedTwoTowerModel.from_config(model.get_config())
    assert (again.amm_user_weight, again.cal_weight, again.temperature) == (0.2, 3.0, 0.5)
    again(BATCH)
    again.set_weights(model.get_weights())
    assert float(again.compute_loss(BATCH)) == pytest.approx(float(model.compute_loss(BATCH)),
                                                             rel=1e-6)
    tower = tf.keras.layers.deserialize(tf.keras.layers.serialize(model.query_tower))
    assert isinstance(tower, AugmentedTower) and tower.augment_key == "user_id"
    tower(BATCH)
    tower.set_weights(model.query_tower.get_weights())
    np.testing.assert_allclose(tower(BATCH).numpy(), model.query_tower(BATCH).numpy(),
                               rtol=1e-6)


def test_saved_model_round_trip_of_the_tower(tmp_path):
    query, _ = _towers()
    inputs = {"user_id": tf.constant(["u1", "u3", "stranger"])}
    expected = query(inputs).numpy()
    module = tf.Module()
    module.tower = query
    module.serve = tf.function(lambda user_id: query({"user_id": user_id}),
                               input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(tmp_path / "tower"))
    loaded = tf.saved_model.load(str(tmp_path / "tower"))
    np.testing.assert_allclose(loaded.serve(inputs["user_id"]).numpy(), expected, rtol=1e-6)
