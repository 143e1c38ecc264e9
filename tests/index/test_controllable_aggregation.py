"""ControllableAggregation: lambda = 0 is sort-dedupe-topN; lambda > 0 follows ComiRec's greedy."""

import numpy as np
import pytest

import towerkit  # noqa: F401
from towerkit.index import BruteForce
from towerkit.index.controllable_aggregation import (ControllableAggregation,
                                                     per_interest_candidates)

IDS = np.array([b"A", b"B", b"C", b"D"])
CATS = np.array([1, 1, 2, 3])
# Two interests, top-3 each; C and A are retrieved twice (best scores 0.5 and 1.0).
SCORES = np.array([[[1.0, 0.9, 0.4], [0.5, 0.3, 0.2]]])
HITS = np.array([[[b"A", b"B", b"C"], [b"C", b"D", b"A"]]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lambda_zero_equals_sort_dedupe_top_n(seed):
    rng = np.random.default_rng(seed)
    ids = np.arange(100, 160)
    agg = ControllableAggregation(ids, rng.integers(0, 5, size=60), diversity=0.0)
    hits = rng.choice(ids, size=(8, 4, 10))
    scores = rng.normal(size=(8, 4, 10)).round(2)  # rounding makes ties happen
    got_scores, got_ids = agg(scores, hits, n=12)
    for b in range(8):
        best = {}
        for s, x in zip(scores[b].ravel(), hits[b].ravel()):
            best[x] = max(best.get(x, -np.inf), s)
        expected = sorted(best.items(), key=lambda kv: -kv[1])[:12]
        np.testing.assert_allclose(got_scores[b], [s for _, s in expected], rtol=1e-6)
        # Same scores; ids agree wherever the score is not tied.
        for j, (x, s) in enumerate(expected):
            if sum(1 for v in best.values() if v == s) == 1:
                assert got_ids[b, j] == x


def test_greedy_hand_example():
    # f: A 1.0, B 0.9, C 0.5, D 0.3; categories A 1, B 1, C 2, D 3; g = [cat differs].
    # lambda = 0.5: step 1 picks A (1.0). Step 2: B 0.9 + 0.5*0 = 0.9, C 0.5 + 0.5*1 = 1.0,
    #   D 0.3 + 0.5*1 = 0.8 -> C. Step 3: B 0.9 + 0.5*(0+1) = 1.4, D 0.3 + 0.5*(1+1) = 1.3 -> B.
    scores, ids = ControllableAggregation(IDS, CATS, diversity=0.5)(SCORES, HITS, n=3)
    assert ids.tolist() == [[b"A", b"C", b"B"]]
    np.testing.assert_allclose(scores, [[1.0, 0.5, 0.9]])
    # lambda = 1: step 2: B 0.9, C 1.5, D 1.3 -> C; step 3: B 0.9 + 1 = 1.9, D 0.3 + 2 = 2.3 -> D.
    _, ids = ControllableAggregation(IDS, CATS, diversity=1.0)(SCORES, HITS, n=3)
    assert ids.tolist() == [[b"A", b"C", b"D"]]
    # lambda = 0: plain max-merge A, B, C.
    _, ids = ControllableAggregation(IDS, CATS)(SCORES, HITS, n=3)
    assert ids.tolist() == [[b"A", b"B", b"C"]]


def test_multi_category_distance_is_jaccard():
    # Genres {1, 2} vs {2, 3}: |&| = 1, |U| = 3 -> g = 2/3; {1, 2} vs {1, 2} -> 0; {} vs {} -> 0.
    agg = ControllableAggregation([1, 2, 3, 4], [[1, 2], [2, 3], [2, 1], [0, 0]])
    g = agg.distance(np.array([0, 0, 3]), np.array([1, 2, 3]))
    np.testing.assert_allclose(g, [[2 / 3, 0.0, 1.0], [2 / 3, 0.0, 1.0], [1.0, 1.0, 0.0]])


def test_bad_input_raises():
    agg = ControllableAggregation(IDS, CATS, diversity=0.5)
    with pytest.raises(ValueError, match="retrieve more per interest"):
        agg(SCORES, HITS, n=5)
    with pytest.raises(ValueError, match="not among the candidate_ids"):
        agg(SCORES, np.array([[[b"A", b"B", b"Z"], [b"C", b"D", b"A"]]]), n=2)
    with pytest.raises(ValueError, match="same shape"):
        agg(SCORES[:, :1], HITS, n=2)
    with pytest.raises(ValueError, match="lambda"):
        ControllableAggregation(IDS, CATS, diversity=-1)
    with pytest.raises(ValueError, match="aligned"):
        ControllableAggregation(IDS, CATS[:3])
    with pytest.raises(TypeError, match="integer"):
        ControllableAggregation(IDS, CATS.astype(float))


def test_with_brute_force_index_lambda_zero_equals_the_index_merge():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(200, 8)).astype(np.float32)
    ids = np.arange(1000, 1200, dtype=np.int64)
    index = BruteForce(k=20).index(items, ids)
    queries = rng.normal(size=(5, 3, 8)).astype(np.float32)
    scores, hits = per_interest_candidates(index, queries, k=20)
    # Per interest: the exact top-20 of a NumPy oracle.
    oracle = np.einsum("bkd,nd->bkn", queries, items)
    np.testing.assert_allclose(scores, -np.sort(-oracle, axis=-1)[:, :, :20], rtol=1e-5)
    agg_scores, agg_ids = ControllableAggregation(ids, rng.integers(0, 4, 200))(scores, hits, n=20)
    merged_scores, merged_ids = index(queries, k=20)
    np.testing.assert_allclose(agg_scores, merged_scores.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(agg_ids, merged_ids.numpy())
    # lambda > 0 covers at least as many categories in the top 20.
    cats = rng.integers(0, 4, 200)
    plain = ControllableAggregation(ids, cats)(scores, hits, n=20)[1]
    diverse = ControllableAggregation(ids, cats, diversity=10.0)(scores, hits, n=20)[1]
    n_cats = lambda rows: len(set(cats[rows - 1000]))  # noqa: E731
    for b in range(5):
        assert n_cats(diverse[b]) >= n_cats(plain[b])
        assert n_cats(diverse[b]) == min(4, len(set(cats[np.unique(hits[b]) - 1000])))
