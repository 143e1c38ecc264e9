"""Towers, MLP and the tfrs.Model subclasses: golden values, training signal, round-trips."""

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf

from towerkit.features import INDEX_SUFFIX, FeatureSet, IdEmbedding, NormalizedNumeric
from towerkit.models import MLP, MultiTaskModel, RankingModel, Tower, TwoTowerModel
from towerkit.tasks import Ranking, Retrieval

USERS = ["u0", "u1", "u2", "u3"]
ITEMS = ["i0", "i1", "i2", "i3"]


def _towers(dim=4, layers=None):
    tf.keras.utils.set_random_seed(0)
    query = Tower(FeatureSet({"user_id": IdEmbedding(USERS, dim)}),
                  MLP(layers) if layers else None, name="query")
    candidate = Tower(FeatureSet({"item_id": IdEmbedding(ITEMS, dim)}),
                      MLP(layers) if layers else None, name="candidate")
    return query, candidate


def _batch():
    # User ui likes item ii; ratings 5 on the diagonal.
    return {"user_id": tf.constant(USERS), "item_id": tf.constant(ITEMS),
            "rating": tf.constant([5.0, 5.0, 5.0, 5.0]), "weight": tf.constant([1.0, 1, 1, 1])}


def test_mlp_golden_value():
    mlp = MLP([2, 1], activation="relu")
    mlp(tf.zeros([1, 2]))
    mlp.dense_layers[0].set_weights([np.array([[1.0, -1.0], [2.0, 1.0]]), np.array([0.0, 0.5])])
    mlp.dense_layers[1].set_weights([np.array([[1.0], [3.0]]), np.array([0.25])])
    # x = [1, 1]: hidden = relu([1 + 2, -1 + 1 + 0.5]) = [3, 0.5]; out = 3 + 1.5 + 0.25 = 4.75.
    assert float(mlp(tf.constant([[1.0, 1.0]]))[0, 0]) == pytest.approx(4.75)


def test_tower_l2_normalize_and_feature_names():
    query, _ = _towers()
    tower = Tower(query.features, l2_normalize=True)
    out = tower({"user_id": tf.constant(["u1", "new user"])}).numpy()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), [1.0, 1.0], rtol=1e-5)
    assert tower.feature_names == ["user_id"]
    with pytest.raises(TypeError, match="FeatureSet"):
        Tower(IdEmbedding(USERS, 2))


def test_two_tower_loss_equals_task_on_tower_outputs():
    query, candidate = _towers()
    task = Retrieval(temperature=0.5)
    model = TwoTowerModel(query, candidate, task)
    batch = _batch()
    q, c = query(batch).numpy(), candidate(batch).numpy()
    logits = q @ c.T / 0.5
    m = logits.max(axis=1, keepdims=True)
    expected = np.sum(np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0] - np.diag(logits))
    assert float(model.compute_loss(batch, training=True)) == pytest.approx(expected, rel=1e-5)


def test_two_tower_learns_the_diagonal():
    query, candidate = _towers(dim=8)
    model = TwoTowerModel(query, candidate, Retrieval(), candidate_id_key="item_id",
                          sample_weight_key="weight")
    model.compile(tf.keras.optimizers.Adam(0.05))
    ds = tf.data.Dataset.from_tensors(_batch()).repeat(60)
    before = float(model.compute_loss(_batch()))
    model.fit(ds, epochs=1, verbose=0)
    assert float(model.compute_loss(_batch())) < 0.1 * before
    out = model(_batch())
    scores = out["query_embedding"].numpy() @ out["candidate_embedding"].numpy().T
    np.testing.assert_array_equal(scores.argmax(axis=1), [0, 1, 2, 3])


def test_two_tower_missing_key_is_a_clear_error():
    query, candidate = _towers()
    model = TwoTowerModel(query, candidate, Retrieval(), candidate_id_key="sku")
    with pytest.raises(ValueError, match="lacks feature 'sku'"):
        model.compute_loss(_batch())


def _all_pairs():
    # Every (user, item) pair, rated 5 on the diagonal and 1 + (i + 2j) % 3 elsewhere: the
    # label depends on both ids, so no function of the user alone, the item alone or neither
    # (the best constant, 2.5, is off by up to 2.5) fits it.
    users, items = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    users, items = users.ravel(), items.ravel()
    rating = np.where(users == items, 5.0, 1.0 + (users + 2 * items) % 3).astype(np.float32)
    return {"user_id": tf.constant(np.array(USERS)[users]),
            "item_id": tf.constant(np.array(ITEMS)[items]), "rating": tf.constant(rating)}


def test_ranking_model_fits_ratings():
    batch = _all_pairs()
    labels = batch["rating"].numpy()
    # Labels vary, and neither a constant nor the user's (or item's) mean rating fits them:
    assert labels.std() > 1.0
    for key in ("user_id", "item_id"):
        ids = batch[key].numpy()
        means = {i: labels[ids == i].mean() for i in set(ids)}
        assert np.abs(labels - np.array([means[i] for i in ids])).max() > 1.0
    query, candidate = _towers(dim=4)
    model = RankingModel(query, candidate, MLP([32, 1]), Ranking("regression"),
                         label_key="rating")
    model.compile(tf.keras.optimizers.Adam(0.01))
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(500), epochs=1, verbose=0)
    np.testing.assert_allclose(model(batch).numpy()[:, 0], labels, atol=0.3)


def test_multitask_loss_is_weighted_sum():
    query, candidate = _towers()
    score = MLP([4, 1])
    retrieval, ranking = Retrieval(), Ranking("regression")
    model = MultiTaskModel(query, candidate, score, retrieval, ranking, retrieval_weight=0.3,
                           ranking_weight=2.0, label_key="rating")
    batch = _batch()
    out = model(batch)
    expected = 0.3 * float(retrieval(out["query_embedding"], out["candidate_embedding"],
                                     compute_metrics=False)) + \
        2.0 * float(ranking(labels=batch["rating"], predictions=out["score"],
                            compute_metrics=False))
    assert float(model.compute_loss(batch, training=True)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="weights"):
        MultiTaskModel(query, candidate, retrieval_weight=0.0, ranking_weight=0.0)


def _models():
    query, candidate = _towers(layers=[6, 3])
    return [
        TwoTowerModel(query, candidate, Retrieval(temperature=0.2), candidate_id_key="item_id"),
        RankingModel(*_towers(), MLP([4, 1]), Ranking("binary"), label_key="rating"),
        MultiTaskModel(*_towers(), MLP([4, 1]), Retrieval(), Ranking(), ranking_weight=0.5,
                       label_key="rating"),
    ]


@pytest.mark.parametrize("index", range(3))
def test_model_config_round_trip(index):
    model = _models()[index]
    expected = model(_batch())
    clone = type(model).from_config(model.get_config())
    clone(_batch())
    clone.set_weights(model.get_weights())
    assert clone.get_config() == model.get_config()
    tf.nest.map_structure(lambda a, b: np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6),
                          clone(_batch()), expected)


@pytest.mark.parametrize("index", range(3))
def test_model_saved_model_round_trip(index, tmp_path):
    model = _models()[index]
    batch = {k: _batch()[k] for k in ("user_id", "item_id")}
    expected = model(batch)
    model.save(str(tmp_path / "model"), save_format="tf")
    loaded = tf.keras.models.load_model(str(tmp_path / "model"))
    tf.nest.map_structure(lambda a, b: np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6),
                          loaded(batch), expected)


def test_ids_looked_up_in_the_pipeline_train_to_the_same_weights():
    # model.lookup_ids replaces each id by its row index (":index" keys) once, in the input
    # pipeline; the towers then only gather rows. Same seed, same batches -> same loss and the
    # same weights as training on raw ids; the raw ids the task reads (candidate_id_key) stay.
    users, movies = ["a", "b", "c"], ["x", "y", "z", "w"]
    batch = {"user_id": tf.constant(["a", "b", "c", "zz"]),
             "item_id": tf.constant(["x", "y", "w", "x"])}
    weights = []
    for pipeline in (False, True):
        tf.keras.utils.set_random_seed(0)
        model = TwoTowerModel(Tower(FeatureSet({"user_id": IdEmbedding(users, 4)})),
                              Tower(FeatureSet({"item_id": IdEmbedding(movies, 4)})),
                              Retrieval(remove_accidental_hits=True), candidate_id_key="item_id")
        model.compile(tf.keras.optimizers.Adagrad(0.5))
        data = tf.data.Dataset.from_tensors(batch)
        if pipeline:
            looked_up = model.lookup_ids(batch)
            assert sorted(looked_up) == ["item_id", "item_id" + INDEX_SUFFIX,
                                         "user_id" + INDEX_SUFFIX]
            # "zz" is not a known user -> the OOV row 0; known ids start after it.
            assert looked_up["user_id" + INDEX_SUFFIX].numpy().tolist() == [1, 2, 3, 0]
            data = data.map(model.lookup_ids)
        model.fit(data.repeat(3), verbose=0)
        weights.append([w.numpy() for w in model.weights])
    for raw, indexed in zip(*weights):
        np.testing.assert_array_equal(raw, indexed)
