"""towerkit.models.Model: loss scaling under mixed_float16; the basic retrieval model trained
under mixed_float16 matches float32 accuracy on MovieLens."""

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf

from towerkit.data import take_rows, tfrs_tutorial_split
from towerkit.data.movielens import recipe_columns
from towerkit.features import FeatureSet, IdEmbedding
from towerkit.metrics import FactorizedTopK
from towerkit.models import MLP, RankingModel, Tower, TwoTowerModel
from towerkit.tasks import Ranking, Retrieval

USERS, MOVIES = ["u0", "u1", "u2", "u3"], ["m0", "m1", "m2", "m3", "m4"]


@pytest.fixture
def policy():
    """Sets a global policy for the test and restores float32 after it."""
    yield tf.keras.mixed_precision.set_global_policy
    tf.keras.mixed_precision.set_global_policy("float32")


def _one_step_delta(policy_name, set_policy):
    set_policy(policy_name)
    tf.keras.utils.set_random_seed(0)
    query = Tower(FeatureSet({"user_id": IdEmbedding(USERS, 4)}))
    candidate = Tower(FeatureSet({"item_id": IdEmbedding(MOVIES, 4)}))
    model = TwoTowerModel(query, candidate, Retrieval(), sample_weight_key="weight")
    model.compile(tf.keras.optimizers.SGD(learning_rate=1e4))
    batch = {"user_id": tf.constant(USERS), "item_id": tf.constant(MOVIES[:4]),
             "weight": tf.fill([4], 1e-6)}
    model(batch)
    before = query.features.features["user_id"].embedding.embeddings.numpy().copy()
    history = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
    after = query.features.features["user_id"].embedding.embeddings.numpy()
    return after - before, model, history.history


def test_loss_scaling_recovers_float16_gradients_that_underflow(policy):
    # Weights 1e-6 make the loss gradient w.r.t. the float16 tower outputs about
    # 1e-6 * (p - y) . c ~ 1e-6 * 0.5 * 0.05 = 2.5e-8, below float16's smallest subnormal
    # (6e-8): without loss scaling (TFRS's train step) these gradients flush to zero and the
    # query embeddings do not move. Scaled by 2^15 they survive, and after unscaling the
    # SGD step equals float32's up to float16 rounding.
    reference, _, _ = _one_step_delta("float32", policy)
    mixed, model, logs = _one_step_delta("mixed_float16", policy)
    assert isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    assert np.isfinite(logs["loss"][0])
    assert np.abs(reference).max() > 1e-5  # the step moved the query embeddings
    np.testing.assert_allclose(mixed, reference, rtol=0.05, atol=2e-3 * np.abs(reference).max())


def test_ranking_model_trains_under_mixed_float16(policy):
    policy("mixed_float16")
    tf.keras.utils.set_random_seed(0)
    model = RankingModel(Tower(FeatureSet({"user_id": IdEmbedding(USERS, 4)})),
                         Tower(FeatureSet({"item_id": IdEmbedding(MOVIES, 4)})),
                         MLP([8, 1]), Ranking("regression"), label_key="rating")
    model.compile(tf.keras.optimizers.Adagrad(0.5))
    rng = np.random.default_rng(0)
    data = {"user_id": rng.choice(USERS, 256), "item_id": rng.choice(MOVIES, 256),
            "rating": rng.integers(1, 6, 256).astype(np.float32)}
    history = model.fit(tf.data.Dataset.from_tensor_slices(data).batch(64), epochs=3, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert model.compute_dtype == "float16"  # really mixed: float16 compute, float32 loss


def _basic_retrieval_top_100(set_policy, policy_name, train, test, movies, users):
    """The TFRS basic retrieval model (user_id/item_id, dim 32, Adagrad 0.1), 1 epoch at batch
    2048 (smaller batches are cheaper: the in-batch softmax costs batch^2 per step)."""
    set_policy(policy_name)
    tf.keras.utils.set_random_seed(42)
    query = Tower(FeatureSet({"user_id": IdEmbedding(users, 32)}))
    candidate = Tower(FeatureSet({"item_id": IdEmbedding(movies, 32)}))
    model = TwoTowerModel(query, candidate, Retrieval())
    model.compile(tf.keras.optimizers.Adagrad(0.1))
    batches = tf.data.Dataset.from_tensor_slices(train).batch(2048)
    model.fit(batches.map(model.lookup_ids).cache(), epochs=1, verbose=0)
    set_policy("float32")
    metric = FactorizedTopK(candidates=tf.data.Dataset.from_tensor_slices(movies).batch(4096).map(
        lambda m: candidate({"item_id": m})), ks=(10, 100))
    metric.update_state(query({"user_id": test["user_id"]}), candidate({"item_id": test["item_id"]}))
    return [float(v) for v in metric.result()]


def test_basic_retrieval_model_mixed_float16_matches_float32_accuracy(policy):
    # MovieLens 100K, the TFRS tutorials' split (seed 42, 80k train / 20k test).
    columns = recipe_columns("100k-ratings")
    train_idx, test_idx = tfrs_tutorial_split(len(columns["user_id"]), 80_000, seed=42)
    keys = ("user_id", "item_id")
    as_bytes = {k: np.asarray(columns[k]).astype(bytes) for k in keys}
    train, test = take_rows(as_bytes, train_idx), take_rows(as_bytes, test_idx)
    movies, users = np.unique(as_bytes["item_id"]), np.unique(train["user_id"])
    full = _basic_retrieval_top_100(policy, "float32", train, test, movies, users)
    mixed = _basic_retrieval_top_100(policy, "mixed_float16", train, test, movies, users)
    assert full[1] > 0.2  # a trained model (popularity scores 0.297 at 100, random 0.06)
    assert abs(mixed[0] - full[0]) <= 0.01 and abs(mixed[1] - full[1]) <= 0.01, (mixed, full)
