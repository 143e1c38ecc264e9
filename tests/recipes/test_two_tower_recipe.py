"""The two_tower recipe on real MovieLens 100K: beats popularity, reloads exactly, index inputs."""

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf

from towerkit import recipes
from towerkit.recipes import two_tower

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("two_tower") / "run"
    config = recipes.make_run_config(
        "two_tower", "movielens/100k-ratings", seed=42, epochs=2,
        params={"embedding_dim": 16, "batch_size": 4096})
    recipe = recipes.get_recipe("two_tower")()
    return recipe, run_dir, recipe.train(config, run_dir)


def test_beats_the_popularity_baseline(trained):
    _, _, metrics = trained
    # Popularity (most-rated training movies for everyone) is a strong top-100 baseline on this
    # random split (~0.30); the logQ-corrected two-tower model must beat it clearly.
    assert metrics["popularity_top_100_categorical_accuracy"] > 0.25
    assert metrics["top_100_categorical_accuracy"] > \
        metrics["popularity_top_100_categorical_accuracy"] + 0.03
    assert metrics["top_10_categorical_accuracy"] > metrics["popularity_top_10_categorical_accuracy"]


def test_evaluate_after_reload_gives_the_same_metrics(trained):
    recipe, run_dir, metrics = trained
    again = recipe.evaluate(run_dir)
    for key, value in again.items():
        assert value == pytest.approx(metrics[key], abs=1e-9), key


def test_index_inputs_are_consistent_with_the_towers(trained):
    recipe, run_dir, _ = trained
    inputs = recipe.index_inputs(run_dir)
    assert inputs.candidate_ids.shape == (1682,) and inputs.candidate_embeddings.shape == (1682, 16)
    assert inputs.candidate_titles[np.searchsorted(inputs.candidate_ids, b"1")] == b"Toy Story (1995)"
    assert set(inputs.query_signature) == {"user_id"}
    queries = inputs.query_model({k: tf.constant(v) for k, v in inputs.sample_queries.items()})
    assert queries.shape == (8, 16)
    # OOV user: served from the OOV row, not an exception.
    oov = inputs.query_model({"user_id": tf.constant([b"no-such-user"])}).numpy()
    assert np.all(np.isfinite(oov))


def test_hit_rates_and_top_k_against_a_hand_example():
    q = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    c = np.array([[0.9, 0.0], [0.1, 0.2], [0.0, 1.0]], np.float32)
    # Scores: row 0 [0.9, 0.1, 0.0] -> order [0, 1, 2]; row 1 [0.0, 0.2, 1.0] -> [2, 1, 0].
    idx, scores = two_tower.top_k_ids(q, c, k=2)
    np.testing.assert_array_equal(idx, [[0, 1], [2, 1]])
    np.testing.assert_allclose(scores, [[0.9, 0.1], [1.0, 0.2]])
    # True candidates 1 and 2: row 0 hits at rank 2, row 1 at rank 1.
    rates = two_tower.hit_rates(np.array([1, 2]), idx, ks=(1, 2))
    assert rates == {"top_1_categorical_accuracy": 0.5, "top_2_categorical_accuracy": 1.0}
    with pytest.raises(ValueError, match="exceeds the catalogue"):
        two_tower.top_k_ids(q, c, k=4)


def test_bad_params_and_splits_are_clear_errors(trained):
    recipe, run_dir, _ = trained
    with pytest.raises(ValueError, match="Unknown split"):
        recipe.evaluate(run_dir, split="validation")
    with pytest.raises(ValueError, match="Unknown two_tower params"):
        recipe._params({"params": {"embeding_dim": 3}})


def test_mixed_precision_training_saves_float32_towers_and_restores_the_policy(
        trained, tmp_path):
    # Same run as `trained` (seed, epochs, sizes) under mixed_float16: loss scaling in the
    # train step, float32 logits; the saved towers are float32 layers (float32 embeddings for
    # export), the global policy is float32 again afterwards, and accuracy stays within 0.01.
    recipe, _, full = trained
    config = recipes.make_run_config(
        "two_tower", "movielens/100k-ratings", seed=42, epochs=2,
        params={"embedding_dim": 16, "batch_size": 4096, "mixed_precision": True})
    mixed = recipe.train(config, tmp_path / "mixed")
    assert tf.keras.mixed_precision.global_policy().name == "float32"
    assert "mixed_float16" not in (tmp_path / "mixed" / "query_tower.json").read_text()
    assert recipe.index_inputs(tmp_path / "mixed").candidate_embeddings.dtype == np.float32
    assert abs(mixed["top_100_categorical_accuracy"]
               - full["top_100_categorical_accuracy"]) <= 0.01
    assert abs(mixed["top_10_categorical_accuracy"] - full["top_10_categorical_accuracy"]) <= 0.01
    with pytest.raises(TypeError, match="mixed_precision must be true or false"):
        recipe.validate_config(recipes.make_run_config(
            "two_tower", "movielens/100k-ratings", params={"mixed_precision": "bf16"}))
