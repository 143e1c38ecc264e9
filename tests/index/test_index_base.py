"""The `Index` base behaviour shared by every index: validation, exclusions, multi-vector merge."""

import numpy as np
import pytest
import tensorflow as tf

from towerkit.index import BruteForce, unique_top_k


def _numpy_multi_interest(queries, candidates, k):
    """Oracle: per-interest exact top-k, merged by max score per candidate, top k distinct."""
    out_scores, out_rows = [], []
    for q in queries:                                    # q: [interests, dim]
        scores = q @ candidates.T                        # [interests, n]
        best = {}
        for i in range(len(q)):
            for r in np.argsort(-scores[i], kind="stable")[:k]:
                best[r] = max(best.get(r, -np.inf), scores[i, r])
        rows = sorted(best, key=lambda r: -best[r])[:k]
        out_rows.append(rows)
        out_scores.append([best[r] for r in rows])
    return np.array(out_scores), np.array(out_rows)


def test_multi_vector_queries_merge_by_max_score(clustered):
    candidates, queries = clustered
    multi = queries[:30].reshape(10, 3, -1)
    index = BruteForce(k=10).index(candidates)
    scores, rows = index(multi)
    want_scores, want_rows = _numpy_multi_interest(multi, candidates, 10)
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-4)
    np.testing.assert_array_equal(rows.numpy(), want_rows)
    assert all(len(set(r)) == 10 for r in rows.numpy())


def test_unique_top_k_hand_example():
    # Query 0 holds row 4 twice (scores 0.9 and 0.5) and padding (-1): distinct best rows are
    # 4 (0.9, its max), 2 (0.8), 7 (0.1). Query 1 has only two distinct rows, so the third
    # result is the (-inf, -1) filler.
    scores = tf.constant([[0.5, 0.9, 0.8, 0.1, 3.0], [1.0, 1.0, 2.0, 0.0, 0.0]])
    rows = tf.constant([[4, 4, 2, 7, -1], [5, 5, 6, -1, -1]])
    top_scores, top_rows = unique_top_k(scores, rows, 3)
    np.testing.assert_allclose(top_scores.numpy()[0], [0.9, 0.8, 0.1])
    np.testing.assert_array_equal(top_rows.numpy(), [[4, 2, 7], [6, 5, -1]])
    assert top_scores.numpy()[1, 2] == -np.inf


def test_exclusions_match_numpy(clustered, oracle):
    candidates, queries = clustered
    ids = np.array([f"i{i}".encode() for i in range(len(candidates))])
    index = BruteForce(k=10).index(candidates, ids)
    _, rows = oracle.exact_top_k(queries[:5], candidates, 20)
    excluded = ids[rows[:, [0, 2, 4]]]                    # drop ranks 1, 3 and 5
    _, found = index.query_with_exclusions(queries[:5], tf.constant(excluded), k=6)
    keep = np.delete(rows, [0, 2, 4], axis=1)[:, :6]
    np.testing.assert_array_equal(found.numpy(), ids[keep])


def test_exclusions_with_integer_ids_and_wrong_kind(clustered):
    candidates, queries = clustered
    index = BruteForce(k=5).index(candidates, np.arange(len(candidates), dtype=np.int64))
    _, top = index(queries[:2], k=1)
    _, found = index.query_with_exclusions(queries[:2], tf.cast(top, tf.int32), k=5)
    assert not np.isin(top.numpy(), found.numpy()).any()
    with pytest.raises(TypeError, match="same kind as the identifiers"):
        index.query_with_exclusions(queries[:2], tf.constant([["a"], ["b"]]))


def test_index_from_dataset_of_features_with_candidate_model(clustered):
    candidates, queries = clustered
    ids = np.arange(len(candidates), dtype=np.int64)
    # Candidate "features" are the embeddings halved; the candidate model doubles them back.
    ds = tf.data.Dataset.from_tensor_slices((ids, {"x": candidates / 2})).batch(1000)
    index = BruteForce(k=5).index_from_dataset(ds, candidate_model=lambda f: f["x"] * 2)
    reference = BruteForce(k=5).index(candidates, ids)
    np.testing.assert_array_equal(index(queries)[1].numpy(), reference(queries)[1].numpy())
    plain = BruteForce(k=5).index_from_dataset(
        tf.data.Dataset.from_tensor_slices(candidates).batch(999))
    np.testing.assert_array_equal(plain(queries)[1].numpy(), reference(queries)[1].numpy())


def test_size_bytes_counts_candidates_and_ids():
    index = BruteForce(k=2).index(np.ones((100, 8), np.float32), np.arange(100, dtype=np.int64))
    # The ids are stored after the identifier of "nothing found" (-1): 101 int64.
    assert index.size_bytes() == 100 * 8 * 4 + 101 * 8
    np.testing.assert_array_equal(index.identifiers.numpy(), np.arange(100))
    assert index.max_k == 2 and index.num_candidates == 100 and index.dim == 8


@pytest.mark.parametrize("candidates, ids, error, match", [
    (np.zeros((0, 4), np.float32), None, ValueError, "empty"),
    (np.zeros((4,), np.float32), None, ValueError, r"\[num_candidates, dim\]"),
    (np.array([[1.0, np.nan]] * 12, np.float32), None, ValueError, "NaN"),
    (np.array([[1.0, np.inf]] * 12, np.float32), None, ValueError, "NaN or Inf"),
    (np.array([["a", "b"]] * 12), None, TypeError, "numeric"),
    (np.ones((12, 2), np.float32), ["a"] * 11 + [1], TypeError, "mix of integer, string"),
    (np.ones((12, 2), np.float32), np.arange(11), ValueError, "12 candidates"),
    (np.ones((12, 2), np.float32), np.linspace(0, 1, 12), TypeError, "integers"),
    (np.ones((5, 2), np.float32), None, ValueError, "larger than the catalogue"),
])
def test_build_errors(candidates, ids, error, match):
    with pytest.raises(error, match=match):
        BruteForce(k=10).index(candidates, ids)


def test_query_errors(clustered):
    candidates, queries = clustered
    index = BruteForce(k=10).index(candidates)
    with pytest.raises(ValueError, match="outside"):
        index(queries, k=11)
    with pytest.raises(ValueError, match="dimension 8 does not match"):
        index(queries[:, :8])
    with pytest.raises(TypeError, match="floating point"):
        index(tf.constant([[1] * 16]))
    with pytest.raises(TypeError, match="no query_model"):
        index({"user_id": tf.constant(["a"])})
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_k=10"):
        index(queries, k=tf.constant(11))
    with pytest.raises(ValueError, match="call index"):
        BruteForce(k=3)(queries)
    with pytest.raises(ValueError, match="positive integer"):
        BruteForce(k=0)


def test_build_progress_and_size_report(capsys):
    index = BruteForce(k=2, verbose=True).index(np.ones((10, 4), np.float32))
    err = capsys.readouterr().err
    assert "[towerkit.index] BruteForce" in err and "building over 10 candidates x 4 dims" in err
    assert "built: 0.0 MB" in err and index.build_seconds >= 0


@pytest.mark.parametrize("ids, missing", [([b"a", b"b", b"c", b"d"], b""),
                                          (np.array([10, 11, 12, 13], np.int64), -1)])
def test_exclusions_leaving_fewer_than_k_fill_the_tail_with_missing_ids(ids, missing):
    # 4 candidates, k = 3, two excluded: the third result is "nothing found".
    index = BruteForce(k=3).index(np.eye(4, dtype=np.float32), ids)
    query = np.array([[4.0, 3.0, 2.0, 1.0]], np.float32)
    scores, found = index.query_with_exclusions(query, tf.constant([[ids[0], ids[2]]]))
    np.testing.assert_array_equal(scores.numpy(), [[3.0, 1.0, -np.inf]])
    np.testing.assert_array_equal(found.numpy(), [[ids[1], ids[3], missing]])
