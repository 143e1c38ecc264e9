"""Annoy: forest parser vs the annoy library, TF search identical to get_nns_by_vector, recall."""

import os

import numpy as np
import pytest
import tensorflow as tf

from towerkit.index import Annoy, read_annoy_forest


@pytest.fixture(scope="module")
def built(clustered):
    candidates, _ = clustered
    return Annoy(k=10, n_trees=8, search_k=400, seed=7).index(candidates)


def test_forest_parser_matches_library(built, clustered):
    candidates, _ = clustered
    forest, library = built.forest, built.library_index
    assert forest.items.shape == candidates.shape
    vectors = np.array([library.get_item_vector(i) for i in range(library.get_n_items())])
    np.testing.assert_array_equal(forest.items, vectors)
    np.testing.assert_array_equal(forest.items, candidates)
    assert len(forest.roots) == library.get_n_trees() == 8
    assert forest.max_leaf == candidates.shape[1] + 3           # K = (16 + 4f - 4) / 4
    # Every tree holds every item exactly once in its buckets.
    reached = _items_under(forest, int(forest.roots[0]))
    assert sorted(reached) == list(range(len(candidates)))


def _items_under(forest, node):
    if forest.kind[node] != 2:
        start = forest.leaf_offset[node]
        return list(forest.leaf_items[start:start + forest.leaf_count[node]])
    return sum((_items_under(forest, int(c)) for c in forest.children[node]), [])


@pytest.mark.parametrize("search_k", [50, 400])
def test_tf_search_is_identical_to_get_nns_by_vector(built, clustered, oracle, search_k):
    candidates, queries = clustered
    queries = queries[:60]
    built.set_search_params(search_k)
    scores, rows = built(queries)
    lib_scores, lib_rows = built.library_search(queries, 10, search_k=search_k)
    np.testing.assert_array_equal(rows.numpy(), lib_rows)
    np.testing.assert_allclose(scores.numpy(), lib_scores, rtol=1e-5, atol=1e-5)
    _, truth = oracle.exact_top_k(queries, candidates, 10)
    # The acceptance bound (identical results make it exact here).
    assert abs(oracle.recall(rows.numpy(), truth) - oracle.recall(lib_rows, truth)) <= 0.02


def test_recall_against_numpy_oracle(built, clustered, oracle):
    candidates, queries = clustered
    built.set_search_params(4000)
    _, rows = built(queries[:100])
    _, truth = oracle.exact_top_k(queries[:100], candidates, 10)
    assert oracle.recall(rows.numpy(), truth) >= 0.9
    built.set_search_params(400)


def test_multi_vector_and_exclusions(built, clustered):
    _, queries = clustered
    scores, rows = built(queries[:6].reshape(3, 2, -1), k=5)
    assert rows.shape == (3, 5) and all(len(set(r)) == 5 for r in rows.numpy())
    assert np.all(np.diff(scores.numpy(), axis=1) <= 0)
    _, top = built(queries[:3], k=2)
    _, found = built.query_with_exclusions(queries[:3], top, k=5)
    assert not any(set(a) & set(b) for a, b in zip(top.numpy(), found.numpy()))


def test_corrupt_missing_and_wrong_dim_files(tmp_path, built):
    good = tmp_path / "good.ann"
    built.library_index.save(str(good))
    data = good.read_bytes()
    with pytest.raises(ValueError, match="does not exist"):
        read_annoy_forest(str(tmp_path / "missing.ann"), 16)
    (tmp_path / "empty.ann").write_bytes(b"")
    with pytest.raises(ValueError, match="corrupt"):
        read_annoy_forest(str(tmp_path / "empty.ann"), 16)
    (tmp_path / "cut.ann").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="corrupt"):
        read_annoy_forest(str(tmp_path / "cut.ann"), 16)
    # Opening with another dimension: pick one whose record size does not divide the file.
    wrong = next(d for d in range(17, 40) if len(data) % (16 + 4 * d))
    with pytest.raises(ValueError, match=f"dim {wrong}"):
        read_annoy_forest(str(good), wrong)
    # Scrambled split children are caught.
    nodes = np.frombuffer(data, np.uint8).reshape(-1, 80).copy()
    roots = built.forest.roots
    nodes[roots[0], 4:8] = np.frombuffer(np.int32(10 ** 8).tobytes(), np.uint8)
    (tmp_path / "bad.ann").write_bytes(nodes.tobytes())
    with pytest.raises(ValueError, match="corrupt"):
        read_annoy_forest(str(tmp_path / "bad.ann"), 16)


def test_knob_validation():
    with pytest.raises(ValueError, match="n_trees"):
        Annoy(n_trees=0)
    with pytest.raises(ValueError, match="search_k"):
        Annoy(search_k=-1)
    assert Annoy(k=7, n_trees=3).search_k == 21


def test_keeps_the_annoy_file_at_index_path(tmp_path, clustered):
    candidates, _ = clustered
    path = tmp_path / "kept.ann"
    Annoy(k=5, n_trees=2, index_path=str(path)).index(candidates[:500])
    assert path.is_file() and os.path.getsize(path) % (16 + 4 * 16) == 0
