"""ScaNN: real scann library, recall against the NumPy oracle, corpus-derived defaults, tuning."""

import numpy as np
import pytest
import tensorflow as tf

from towerkit.index import ScaNN, default_scann_settings, tune_for_recall


@pytest.fixture(scope="module")
def built(clustered):
    candidates, _ = clustered
    return ScaNN(k=10).index(candidates)


def test_default_settings_hand_derived():
    # n = 10,000: sqrt(n) = 100 leaves; 5% of 100 = 5 < 8, so 8 searched; reorder
    # max(10 * 10, 250) = 250.
    assert default_scann_settings(10_000, 10) == {
        "num_leaves": 100, "num_leaves_to_search": 8, "num_reordering_candidates": 250}
    # n = 1,000,000 with k = 100: 1000 leaves, 50 searched, reorder 1000.
    assert default_scann_settings(1_000_000, 100) == {
        "num_leaves": 1000, "num_leaves_to_search": 50, "num_reordering_candidates": 1000}


def test_recall_against_numpy_oracle(built, clustered, oracle):
    candidates, queries = clustered
    assert built.settings["num_leaves"] == 63                   # round(sqrt(4000))
    _, rows = built(queries)
    _, truth = oracle.exact_top_k(queries, candidates, 10)
    assert oracle.recall(rows.numpy(), truth) >= 0.9
    assert not built.is_exact()


def test_searching_everything_is_exact(built, clustered, oracle):
    candidates, queries = clustered
    built.set_search_params(num_leaves_to_search=63, num_reordering_candidates=4000)
    scores, rows = built(queries[:50])
    want_scores, truth = oracle.exact_top_k(queries[:50], candidates, 10)
    assert oracle.recall(rows.numpy(), truth) == 1.0
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-4)
    built.set_search_params(num_leaves_to_search=8, num_reordering_candidates=250)


def test_graph_mode_matches_eager_and_k_at_call(built, clustered):
    _, queries = clustered
    eager = built(queries[:20], k=5)[1].numpy()
    graph = tf.function(lambda q: built(q, k=5))(tf.constant(queries[:20]))[1].numpy()
    np.testing.assert_array_equal(eager, graph)
    assert built(queries[:20], k=tf.constant(3))[1].shape == (20, 3)


def test_small_catalogue_scores_exactly(clustered, oracle):
    candidates, queries = clustered
    index = ScaNN(k=5).index(candidates[:100], np.array([f"m{i}" for i in range(100)]))
    assert index.is_exact() and index.settings == {"exact": True}
    _, rows = oracle.exact_top_k(queries[:10], candidates[:100], 5)
    want = np.array([[f"m{r}".encode() for r in row] for row in rows])
    np.testing.assert_array_equal(index(queries[:10])[1].numpy(), want)


def test_tune_for_recall_reaches_target(clustered):
    candidates, queries = clustered
    index = ScaNN(k=10, num_leaves_to_search=1, num_reordering_candidates=10).index(candidates)
    report = tune_for_recall(index, queries[:100], target_recall=0.97, k=10)
    assert report["reached"] and report["recall"] >= 0.97
    assert index.settings["num_leaves_to_search"] == report["setting"]["num_leaves_to_search"]
    # The cheapest settings tried first, so everything tried before the winner missed.
    assert all(t["recall"] < 0.97 for t in report["tried"][:-1])


def test_knob_validation():
    with pytest.raises(ValueError, match="num_leaves"):
        ScaNN(num_leaves=0)
    with pytest.raises(ValueError, match="num_reordering_candidates"):
        ScaNN(num_reordering_candidates=-5)


def test_exclusions_beyond_max_k_and_multi_vector(built, clustered, oracle):
    candidates, queries = clustered
    _, top = built(queries[:5], k=10)
    # Excluding the 10 best asks ScaNN for k + 10 = 15 > max_k neighbours.
    _, rest = built.query_with_exclusions(queries[:5], top, k=5)
    _, truth = oracle.exact_top_k(queries[:5], candidates, 15)
    assert not any(set(a) & set(b) for a, b in zip(top.numpy(), rest.numpy()))
    assert oracle.recall(rest.numpy(), truth[:, 10:]) >= 0.8
    scores, rows = built(queries[:6].reshape(3, 2, -1), k=10)
    assert all(len(set(r)) == 10 for r in rows.numpy())
    assert np.all(np.diff(scores.numpy(), axis=1) <= 1e-6)
