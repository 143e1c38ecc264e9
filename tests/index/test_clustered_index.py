"""ClusteredIndex: each cluster answers with its own items under quotas; export == in-process."""

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf
from towerkit import serving
from towerkit.index import Annoy, BruteForce, PortableIndex
from towerkit.index.cluster_quotas import cluster_quotas
from towerkit.index.clustered_index import ClusteredIndex

N, DIM, K, M = 60, 8, 4, 10
SIGNATURE = {"queries": tf.TensorSpec([None, K, DIM], tf.float32),
             "intent": tf.TensorSpec([None, K], tf.float32)}


def catalogue():
    rng = np.random.default_rng(0)
    clusters = np.r_[np.zeros(30), np.ones(15), np.full(12, 2), np.full(3, 3)].astype(np.int64)
    rng.shuffle(clusters)
    ids = np.array([f"item{i}".encode() for i in range(N)], dtype=object)
    return ids, rng.normal(size=(N, DIM)).astype(np.float32), clusters


def queries(batch=6, seed=1):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(K), size=batch).astype(np.float32)
    p[0] = [0.97, 0.01, 0.01, 0.01]      # wants 10 of cluster 0
    p[1] = [0.01, 0.01, 0.01, 0.97]      # wants 10 of cluster 3, which holds 3
    return {"queries": rng.normal(size=(batch, K, DIM)).astype(np.float32), "intent": p}


def oracle(q, emb, clusters, ids, alpha, m=M):
    """NumPy: per cluster, the top-M_k of its own items by that cluster's query; union by score."""
    quotas = cluster_quotas(q["intent"], m, alpha, np.bincount(clusters, minlength=K))
    out_ids, out_scores = [], []
    for b in range(len(quotas)):
        picked = []
        for c in range(K):
            members = np.flatnonzero(clusters == c)
            s = emb[members] @ q["queries"][b, c]
            order = np.argsort(-s, kind="stable")[:quotas[b, c]]
            picked += [(s[o], members[o]) for o in order]
        picked.sort(key=lambda t: -t[0])
        out_scores.append([s for s, _ in picked])
        out_ids.append([ids[r] for _, r in picked])
    return np.array(out_ids), np.array(out_scores), quotas


@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0])
def test_matches_the_numpy_oracle_and_each_cluster_answers_with_its_own_items(alpha):
    ids, emb, clusters = catalogue()
    index = ClusteredIndex(lambda k: BruteForce(k=k), clusters, K, k=M, alpha=alpha)
    index.index(emb, ids)
    q = queries()
    scores, found = index(q)
    want_ids, want_scores, quotas = oracle(q, emb, clusters, ids, alpha)
    np.testing.assert_array_equal(found.numpy(), want_ids)
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-5)
    # Counting per cluster gives the quotas back: no cluster answered with another's items.
    row_of = {x: r for r, x in enumerate(ids)}
    for b in range(len(found)):
        got = np.bincount([clusters[row_of[x]] for x in found.numpy()[b]], minlength=K)
        np.testing.assert_array_equal(got, quotas[b])
    np.testing.assert_array_equal(index.quotas(q).numpy(), quotas)
    if alpha == 3.0:   # cluster 3 holds 3 items: capped, the rest refilled elsewhere
        assert quotas[1, 3] == 3 and quotas[0, 0] == M


def test_sub_indexes_hold_only_their_cluster_and_k_is_the_list_length():
    ids, emb, clusters = catalogue()
    index = ClusteredIndex(lambda k: BruteForce(k=k), clusters, K, k=M).index(emb, ids)
    for c, sub in enumerate(index.cluster_indexes):
        np.testing.assert_array_equal(np.sort(sub.identifiers.numpy()),
                                      np.flatnonzero(clusters == c))
        assert sub.max_k == min(M, (clusters == c).sum())
    scores, found = index(queries(), k=4)
    assert found.shape == (6, 4)
    want_ids, _, _ = oracle(queries(), emb, clusters, ids, 1.0, m=4)
    np.testing.assert_array_equal(found.numpy(), want_ids)


def test_bad_inputs_are_named():
    ids, emb, clusters = catalogue()
    with pytest.raises(ValueError, match="hold no"):
        ClusteredIndex(lambda k: BruteForce(k=k), clusters, K + 1)
    with pytest.raises(ValueError, match="alpha"):
        ClusteredIndex(lambda k: BruteForce(k=k), clusters, K, alpha=-1.0)
    index = ClusteredIndex(lambda k: BruteForce(k=k), clusters, K, k=M)
    with pytest.raises(ValueError, match="cluster assignments"):
        index.index(emb[:10], ids[:10])
    index.index(emb, ids)
    with pytest.raises(TypeError, match="dict"):
        index(np.zeros((2, K, DIM), np.float32))
    with pytest.raises(ValueError, match="queries must be"):
        index({"queries": np.zeros((2, K + 1, DIM), np.float32),
               "intent": np.ones((2, K), np.float32)})


def _brute(k):
    return BruteForce(k=k)


def _annoy(k):
    return Annoy(k=k, n_trees=4, search_k=50)


def _portable(k):
    return PortableIndex(k=k, num_leaves=2, leaves_to_search=2, blocks_to_search=10)


@pytest.mark.parametrize("make", [_brute, _annoy, _portable], ids=["brute", "annoy", "portable"])
def test_one_saved_model_equals_in_process(make, tmp_path):
    # All K sub-indexes and the quota merge in ONE SavedModel, for each stock-TF index kind.
    ids, emb, clusters = catalogue()
    index = ClusteredIndex(make, clusters, K, k=M, alpha=1.0).index(emb, ids)
    assert index.custom_ops == ()
    q = queries()
    path = serving.export(index, tmp_path / "mt", query_signature=SIGNATURE,
                          warmup_queries={k: v[:2] for k, v in q.items()})
    scores, found = index(q)
    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in q.items()})
    np.testing.assert_array_equal(out["ids"].numpy(), found.numpy())
    np.testing.assert_allclose(out["scores"].numpy(), scores.numpy(), rtol=1e-6)
    top = loaded.signatures["top_k"](k=tf.constant(4), **{k: tf.constant(v) for k, v in q.items()})
    np.testing.assert_array_equal(top["ids"].numpy(), index(q, k=4)[1].numpy())
    # A process with TensorFlow alone loads the mt_ebr recipe's export in
    # tests/recipes/test_mt_ebr_recipe.py.
