"""BruteForce against a NumPy exact top-k oracle, and TFRS `TopK` drop-in compatibility."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from towerkit.index import BruteForce


@pytest.mark.parametrize("ids_kind", ["rows", "int", "str"])
def test_matches_numpy_oracle(clustered, oracle, ids_kind):
    candidates, queries = clustered
    n = len(candidates)
    ids = {"rows": None, "int": np.arange(n, dtype=np.int64) * 7 + 3,
           "str": np.array([f"item-{i}" for i in range(n)])}[ids_kind]
    index = BruteForce(k=20).index(candidates, ids)
    true_scores, true_rows = oracle.exact_top_k(queries, candidates, 20)
    scores, found = index(queries)
    expected_ids = true_rows if ids is None else ids[true_rows]
    if ids_kind == "str":
        expected_ids = np.char.encode(expected_ids.astype(str), "utf-8")
    np.testing.assert_allclose(scores.numpy(), true_scores, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(found.numpy(), expected_ids)
    assert index.is_exact()


def test_k_at_call_time_python_and_tensor(clustered, oracle):
    candidates, queries = clustered
    index = BruteForce(k=50).index(candidates)
    _, true_rows = oracle.exact_top_k(queries[:10], candidates, 50)
    for k in (1, 7, 50, tf.constant(7)):
        _, rows = index(queries[:10], k=k)
        kk = int(k)
        np.testing.assert_array_equal(rows.numpy(), true_rows[:, :kk])


def test_matches_tfrs_brute_force_in_tfrs_tutorial_code(clustered, tmp_path):
    """Code written against tfrs BruteForce (basic_retrieval tutorial) runs unchanged, including
    the tutorial's call-then-`tf.saved_model.save(index)` export."""
    candidates, _ = clustered
    titles = np.array([f"movie {i}".encode() for i in range(len(candidates))])
    users = ["u0", "u1", "u2"]
    user_model = tf.keras.Sequential([
        tf.keras.layers.StringLookup(vocabulary=users, mask_token=None),
        tf.keras.layers.Embedding(len(users) + 1, candidates.shape[1])])
    ds = tf.data.Dataset.from_tensor_slices((titles, candidates)).batch(333)
    results = []
    for layer_class in (tfrs.layers.factorized_top_k.BruteForce, BruteForce):
        # --- the tutorial's code, verbatim apart from the class ---
        index = layer_class(user_model)
        index.index_from_dataset(ds)
        _, found = index(tf.constant(["u1", "u2"]))
        _, excl = index.query_with_exclusions(tf.constant(["u1", "u2"]),
                                              exclusions=found[:, :2], k=3)
        path = str(tmp_path / layer_class.__module__)
        tf.saved_model.save(index, path)
        _, reloaded = tf.saved_model.load(path)(tf.constant(["u1", "u2"]))
        # --- end of the tutorial's code ---
        np.testing.assert_array_equal(reloaded.numpy(), found.numpy())
        results.append((found.numpy(), excl.numpy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert not set(results[1][1][0]) & set(results[1][0][0, :2])


def test_inside_tf_function_and_keras_call(clustered, oracle):
    candidates, queries = clustered
    index = BruteForce(k=5).index(tf.constant(candidates))
    _, true_rows = oracle.exact_top_k(queries[:4], candidates, 3)

    @tf.function
    def search(q):
        return index(q, k=3)

    np.testing.assert_array_equal(search(tf.constant(queries[:4]))[1].numpy(), true_rows)
