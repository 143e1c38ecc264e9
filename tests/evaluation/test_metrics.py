"""Golden values for Recall@N, HR@N and NDCG@N, derived by hand."""

import numpy as np
import pytest

from towerkit.evaluation import (evaluate_topn, hit_rate_at_n, ndcg_at_n, popularity_topn,
                                 recall_at_n, top_n_items)

# User A: ranked [5, 1, 7, 2], gt {1, 2, 9}.   User B: ranked [3, 4, 6, 8], gt {8}.
TOPN = np.array([[5, 1, 7, 2], [3, 4, 6, 8]])
GT = [np.array([1, 2, 9]), np.array([8])]


def test_recall_golden():
    # N=2: A hits {1} -> 1/3; B none -> 0. Mean 1/6.
    assert recall_at_n(TOPN, GT, 2) == pytest.approx(1 / 6)
    # N=4: A hits {1, 2} -> 2/3; B hits {8} -> 1. Mean 5/6.
    assert recall_at_n(TOPN, GT, 4) == pytest.approx(5 / 6)


def test_hit_rate_golden():
    assert hit_rate_at_n(TOPN, GT, 2) == pytest.approx(0.5)
    assert hit_rate_at_n(TOPN, GT, 4) == pytest.approx(1.0)


def test_ndcg_golden():
    # N=4, A: hits at ranks 2 and 4 -> DCG = 1/log2(3) + 1/log2(5) = 0.63093 + 0.43068 = 1.06161;
    #   IDCG over min(4, 3) = 3 hits = 1 + 1/log2(3) + 1/2 = 2.13093; ratio 0.49819.
    # N=4, B: hit at rank 4 -> DCG = 1/log2(5) = 0.43068; IDCG(min(4, 1)) = 1; ratio 0.43068.
    a = (1 / np.log2(3) + 1 / np.log2(5)) / (1 + 1 / np.log2(3) + 0.5)
    b = 1 / np.log2(5)
    assert a == pytest.approx(0.49819, abs=1e-5)
    assert ndcg_at_n(TOPN, GT, 4) == pytest.approx((a + b) / 2)
    # N=2, A: hit at rank 2 -> 0.63093 / IDCG(min(2, 3) = 2) = 0.63093 / 1.63093 = 0.38685.
    assert ndcg_at_n(TOPN, GT, 2) == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)) / 2)


def test_duplicates_in_ranking_count_once():
    # Ranked [1, 1]: one distinct hit out of gt {1, 2}.
    assert recall_at_n(np.array([[1, 1]]), [np.array([1, 2])], 2) == pytest.approx(0.5)


def test_evaluate_topn_keys():
    out = evaluate_topn(TOPN, GT, ns=(2, 4))
    assert set(out) == {"recall@2", "hr@2", "ndcg@2", "recall@4", "hr@4", "ndcg@4"}
    assert out["recall@4"] == pytest.approx(5 / 6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(topn=TOPN, ground_truth=GT[:1], n=2), "one ground-truth array"),
    (dict(topn=TOPN, ground_truth=GT, n=5), "exceeds"),
    (dict(topn=TOPN[0], ground_truth=GT, n=2), r"\[num_users, N\]"),
    (dict(topn=TOPN, ground_truth=[np.array([1]), np.array([], int)], n=2), "empty ground truth"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        recall_at_n(**kwargs)


def test_popularity_topn():
    counts = np.array([0, 5, 9, 5, 1])
    # Most frequent first, ties (items 1 and 3 with 5) by smaller index; padding 0 excluded.
    np.testing.assert_array_equal(popularity_topn(counts, 2, 3), [[2, 1, 3], [2, 1, 3]])
    with pytest.raises(ValueError, match="recommendable"):
        popularity_topn(counts, 1, 5)


def test_top_n_items_matches_numpy_oracle():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(30, 4)).astype(np.float32)
    q = rng.normal(size=(5, 4)).astype(np.float32)
    scores = q @ items.T
    scores[:, 0] = -np.inf
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(top_n_items(q, items, 7), expected)
    # Multi-interest: max over interests.
    q3 = rng.normal(size=(5, 3, 4)).astype(np.float32)
    s3 = (q3 @ items.T).max(axis=1)
    s3[:, 0] = -np.inf
    np.testing.assert_array_equal(top_n_items(q3, items, 7),
                                  np.argsort(-s3, axis=1, kind="stable")[:, :7])
    with pytest.raises(ValueError, match="catalogue size"):
        top_n_items(q, items, 30)


def test_top_n_items_breaks_ties_by_smaller_index():
    # Items 1..9 score 3, 2, 1 (one each) and items 10..1999 all score 0: the top 5 must be the
    # three positive items, then the two smallest indices among the 1,990 tied ones (10, 11).
    # A bare argpartition keeps an arbitrary subset of the tied items.
    items = np.zeros((2000, 2), np.float32)
    items[1:4, 0] = [3.0, 2.0, 1.0]
    items[4:10, 0] = -1.0
    q = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)   # row 1: every item ties at 0
    top = top_n_items(q, items, 5)
    np.testing.assert_array_equal(top[0], [1, 2, 3, 10, 11])
    np.testing.assert_array_equal(top[1], [1, 2, 3, 4, 5])   # item 0 excluded, ties by index
    # Against a stable full sort on random integer-valued (tie-heavy) scores.
    rng = np.random.default_rng(3)
    items = rng.integers(-2, 3, size=(500, 3)).astype(np.float32)
    q = rng.integers(-1, 2, size=(20, 3)).astype(np.float32)
    scores = q @ items.T
    scores[:, 0] = -np.inf
    np.testing.assert_array_equal(top_n_items(q, items, 40),
                                  np.argsort(-scores, axis=1, kind="stable")[:, :40])
