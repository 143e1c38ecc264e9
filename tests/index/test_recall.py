"""recall_at_k and tune_for_recall against hand-derived values."""

import numpy as np
import pytest

from towerkit.index import Annoy, BruteForce, recall_at_k, tune_for_recall


def test_recall_hand_derived():
    # Candidates are 1-D: scores for the query [1] are the values themselves.
    # The index returns top-2 {3: 4.0, 2: 3.0}.
    index = BruteForce(k=2).index(np.array([[1.0], [2.0], [3.0], [4.0]], np.float32))
    queries = np.array([[1.0]], np.float32)
    assert recall_at_k(index, queries, k=2) == 1.0          # default exact reference
    # Reference with rows 0 and 3 swapped: its top-2 is {0, 2}; overlap {2} -> 1/2.
    swapped = BruteForce(k=2).index(np.array([[4.0], [2.0], [3.0], [1.0]], np.float32))
    assert recall_at_k(index, queries, reference=swapped, k=2) == 0.5
    # Reference with negated values: top-2 {0, 1}; no overlap -> 0.
    negated = BruteForce(k=2).index(-np.array([[1.0], [2.0], [3.0], [4.0]], np.float32))
    assert recall_at_k(index, queries, reference=negated, k=2) == 0.0
    with pytest.raises(ValueError, match="k <= max_k"):
        recall_at_k(index, queries, k=3)


def test_recall_of_annoy_matches_numpy(oracle):
    candidates, queries = oracle.make_clustered(600, 8, 10, 40, seed=3)
    index = Annoy(k=10, n_trees=3, search_k=30).index(candidates)
    _, truth = oracle.exact_top_k(queries, candidates, 10)
    _, found = index(queries)
    assert recall_at_k(index, queries, k=10) == pytest.approx(
        oracle.recall(found.numpy(), truth))


def test_tune_annoy_search_k(oracle):
    candidates, queries = oracle.make_clustered(600, 8, 10, 40, seed=3)
    index = Annoy(k=10, n_trees=3, search_k=10).index(candidates)
    report = tune_for_recall(index, queries, target_recall=0.95, k=10)
    assert report["reached"] and report["recall"] >= 0.95
    assert index.search_k == report["setting"]["search_k"]
    assert [t["setting"]["search_k"] for t in report["tried"]][:2] == [15, 30]  # 10*3/2, x2
    assert recall_at_k(index, queries, k=10) == pytest.approx(report["recall"])


def test_tune_rejects_exact_and_bad_target():
    index = BruteForce(k=2).index(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="no search parameters"):
        tune_for_recall(index, np.eye(4, dtype=np.float32), k=2)
    with pytest.raises(ValueError, match="target_recall"):
        tune_for_recall(index, np.eye(4, dtype=np.float32), target_recall=1.5)
