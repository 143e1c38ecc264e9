"""The divide step: genre and k-means clusters, each item in exactly one cluster."""

import numpy as np
import pytest

from towerkit.data.item_clusters import ItemClusters, cooccurrence_embeddings, kmeans


def test_first_genre_clusters():
    # genre id + 1, 0 padding; item 1: genres {2, 5} -> first 2; item 2: {5}; item 3: {2}.
    genres = np.array([[0, 0], [5, 2], [5, 0], [2, 0]])
    c = ItemClusters.from_genres(genres, genre_names=["a", "b", "c", "d", "e"])
    np.testing.assert_array_equal(c.assignments, [-1, 0, 1, 0])   # genres in use: 2, 5
    assert c.num_clusters == 2 and c.names == ["b", "e"]
    np.testing.assert_array_equal(c.sizes(), [2, 1])
    np.testing.assert_array_equal(c.members(0), [1, 3])


def test_bad_assignments_are_named():
    with pytest.raises(ValueError, match="padding"):
        ItemClusters(np.array([0, 0, 1]), 2)
    with pytest.raises(ValueError, match="no cluster"):
        ItemClusters(np.array([-1, 0, 2]), 2)
    with pytest.raises(ValueError, match="hold no item"):
        ItemClusters(np.array([-1, 0, 0]), 2)
    with pytest.raises(ValueError, match="no genre"):
        ItemClusters.from_genres(np.array([[0], [1], [0]]))


def test_kmeans_separates_blobs_deterministically():
    rng = np.random.RandomState(0)
    centers = np.array([[5.0, 0], [-5, 0], [0, 5]])
    x = np.concatenate([c + rng.randn(30, 2) * 0.3 for c in centers])
    labels = kmeans(x, 3, seed=0)
    np.testing.assert_array_equal(labels, kmeans(x, 3, seed=0))
    for block in range(3):  # each blob is one cluster, blobs in different clusters
        assert len(set(labels[block * 30:(block + 1) * 30])) == 1
    assert len(set(labels)) == 3
    # Every cluster non-empty even when k equals the number of points.
    assert sorted(kmeans(x[:5], 5)) == [0, 1, 2, 3, 4]


def test_kmeans_clusters_from_cooccurrence_and_cold_items():
    # Two groups of items that co-occur only within the group; item 9 never appears (cold).
    seqs = [np.array([1, 2, 3, 4, 1, 3])] * 5 + [np.array([5, 6, 7, 8, 6, 8])] * 5
    emb = cooccurrence_embeddings(seqs, num_items=9, dim=4, window=2)
    assert emb.shape == (10, 4)
    np.testing.assert_array_equal(emb[9], 0.0)
    np.testing.assert_array_equal(emb[0], 0.0)
    c = ItemClusters.from_kmeans(emb, 2, seed=0)
    a = c.assignments
    assert len(set(a[1:5])) == 1 and len(set(a[5:9])) == 1 and a[1] != a[5]
    assert a[9] == np.argmax(np.bincount(a[1:9]))    # cold item -> the largest cluster
    with pytest.raises(ValueError, match="fewer than num_clusters"):
        ItemClusters.from_kmeans(emb, 9)
