"""`Annoy`: Spotify's Annoy forest (dot metric), searched with stock TensorFlow ops."""

import os
import shutil
import tempfile
import weakref
from typing import Optional

import numpy as np
import tensorflow as tf

from towerkit.index.annoy_forest import KIND_SPLIT, read_annoy_forest
from towerkit.index.base import Index
from towerkit.index.unique_top_k import unique_top_k


class Annoy(Index):
    """Annoy random-projection forest for maximum inner product, servable by stock TF Serving.

    The forest is built by the real `annoy` library (`dot` metric, which reduces MIPS to angular
    search with the extra dimension of Bachrach et al.), saved, and read back from the Annoy
    file (`read_annoy_forest`). Queries then run annoy's best-first search in TensorFlow: a
    priority array per query (max priority popped with argmax, ties to the larger node id as in
    `std::priority_queue`), split nodes pushing both sides with priority `min(parent, +-margin)`
    (annoy 1.17's margin is `dot(normal, q) + dot_factor**2`), bucket items collected until
    `search_k` of them, then exact dot products, duplicates removed and top-k. Results are
    identical to `AnnoyIndex.get_nns_by_vector` with the same `search_k`. `search_k` is a variable
    of the SavedModel, so `set_search_params` needs no rebuild or retrace.

    Example:

    ```python
    index = Annoy(k=10, n_trees=20).index(candidate_embeddings, identifiers=item_ids)
    scores, ids = index(query_embeddings)
    towerkit.index.save_index(index, "/tmp/annoy_index")  # stock ops only
    ```

    References:
        Bernhardsson, Annoy. https://github.com/spotify/annoy
        Bachrach et al., "Speeding Up the Xbox Recommender System Using a Euclidean
        Transformation for Inner-Product Spaces", RecSys 2014.
    """

    def __init__(self, query_model: Optional[tf.keras.Model] = None, k: int = 10,
                 n_trees: int = 10, search_k: Optional[int] = None, seed: int = 42,
                 index_path: Optional[str] = None, name: Optional[str] = None, **kwargs) -> None:
        """Initializes the layer.

        Args:
            query_model: Optional Keras model mapping raw query features to embeddings.
            k: int. Maximum (and default) number of results.
            n_trees: int. Trees in the forest (more: better recall, bigger index).
            search_k: int. Items collected from the trees per query before exact scoring.
                Defaults to `max_k * n_trees` (annoy's default for `k = max_k`).
            seed: int. Annoy's random seed (builds are deterministic for a seed).
            index_path: Optional path to keep the Annoy file at; a temporary file otherwise.
            name: Optional layer name.
            **kwargs: Passed to `Index` (e.g. `verbose=True`) and `tf.keras.Model`.
        """
        super().__init__(query_model=query_model, k=k, name=name, **kwargs)
        if not isinstance(n_trees, (int, np.integer)) or n_trees < 1:
            raise ValueError(f"n_trees must be a positive integer; got {n_trees!r}.")
        if search_k is not None and (not isinstance(search_k, (int, np.integer)) or search_k < 1):
            raise ValueError(f"search_k must be a positive integer or None; got {search_k!r}.")
        self._n_trees = int(n_trees)
        self._search_k = None if search_k is None else int(search_k)
        self._seed = seed
        self._index_path = index_path
        self.library_index = None
        self.forest = None
        self._collect_fn = None

    @property
    def search_k(self) -> int:
        return self._search_k if self._search_k is not None else self._k * self._n_trees

    def set_search_params(self, search_k: int) -> "Annoy":
        """Changes `search_k` without rebuilding (used by `target_recall` tuning).

        On a small catalogue searched exactly by default (`Index.EXHAUSTIVE_MAX_FLOATS`), this
        switches to the tree search with that `search_k`.
        """
        if not isinstance(search_k, (int, np.integer)) or search_k < 1:
            raise ValueError(f"search_k must be a positive integer; got {search_k!r}.")
        if getattr(self, "exhaustive", False):
            self.set_exhaustive(False)
        self._search_k = int(search_k)
        if self.is_built:  # A variable read by the traced loop (and the SavedModel): no retrace.
            self._search_k_var.assign(self._search_k)
        return self

    def tuning_grid(self, k: int) -> list:
        """`search_k` settings from `k * n_trees` doubling up to every item of every tree."""
        self._check_built()
        grid, search_k = [], max(k, k * self._n_trees // 2)
        while True:
            grid.append({"search_k": int(search_k)})
            if search_k >= self._num_candidates * self._n_trees:
                return grid
            search_k *= 2

    def _build(self, candidates: np.ndarray) -> None:
        import annoy  # pylint: disable=g-import-not-at-top

        n, dim = candidates.shape
        library_index = annoy.AnnoyIndex(dim, "dot")
        library_index.set_seed(self._seed)
        step = max(1, n // 10)
        for i, vector in enumerate(candidates):
            library_index.add_item(i, vector)
            if (i + 1) % step == 0 and n >= 100_000:
                self._progress(f"added {i + 1}/{n} items ({100 * (i + 1) // n}%)")
        self._progress(f"building {self._n_trees} trees")
        library_index.build(self._n_trees)
        path = self._index_path
        if path is None:
            directory = tempfile.mkdtemp(prefix="towerkit-annoy-")
            weakref.finalize(self, shutil.rmtree, directory, True)
            path = os.path.join(directory, "index.ann")
        library_index.save(path)  # Reloads the file (mmap), so the library reads what we parse.
        self.library_index = library_index
        self._progress(f"reading the forest from {path}")
        self.forest = forest = read_annoy_forest(path, dim)
        self._collect_fn = None
        self._search_k_var = self._add_state("search_k", np.int32(self.search_k))
        self._items = self._add_state("items", forest.items)
        self._roots = self._add_state("roots", forest.roots)
        self._kind = self._add_state("kind", forest.kind.astype(np.int32))
        self._children = self._add_state("children", forest.children)
        self._hyperplane_row = self._add_state("hyperplane_row", forest.hyperplane_row)
        self._hyperplanes = self._add_state("hyperplanes", forest.hyperplanes)
        self._split_bias = self._add_state("split_bias", forest.split_bias)
        self._leaf_offset = self._add_state("leaf_offset", forest.leaf_offset)
        self._leaf_count = self._add_state("leaf_count", forest.leaf_count)
        self._leaf_items = self._add_state("leaf_items", forest.leaf_items)

    def library_search(self, queries: np.ndarray, k: int, search_k: Optional[int] = None):
        """Searches with the `annoy` library itself (`get_nns_by_vector`), for comparisons.

        Returns:
            `(scores [batch, k], rows [batch, k])` NumPy arrays (padded with -inf / -1).
        """
        self._check_built()
        search_k = self.search_k if search_k is None else search_k
        scores = np.full((len(queries), k), -np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        for i, q in enumerate(np.asarray(queries, np.float32)):
            found, dots = self.library_index.get_nns_by_vector(q, k, search_k=search_k,
                                                               include_distances=True)
            rows[i, :len(found)], scores[i, :len(found)] = found, dots
        return scores, rows

    def _search(self, queries: tf.Tensor, k):
        found, scores = self._collect(queries)
        pad = tf.maximum(k - tf.shape(found)[1], 0)   # tiny search_k: pad to k with "nothing"
        found = tf.pad(found, [[0, 0], [0, pad]], constant_values=-1)
        scores = tf.pad(scores, [[0, 0], [0, pad]], constant_values=float("-inf"))
        return unique_top_k(scores, found, k)

    def _collect(self, queries: tf.Tensor):
        """Annoy's best-first traversal: `(items [batch, search_k + K], their dot scores)`."""
        if self._collect_fn is None:
            # An explicit tf.while_loop: no autograph (slow to convert, nothing to convert).
            self._collect_fn = tf.function(
                self._collect_graph, autograph=False,
                input_signature=[tf.TensorSpec([None, self._dim], tf.float32)])
        return self._collect_fn(queries)

    def _collect_graph(self, queries: tf.Tensor):
        search_k = tf.identity(self._search_k_var)
        forest = self.forest
        num_roots = int(forest.roots.shape[0])
        leaf = forest.max_leaf
        # Safety bound on pops (never reached in practice: the loop ends when every query has
        # search_k items): leaf pops each add >= 1 item; splits are bounded by the tree depths.
        max_iter = 2 * search_k + num_roots * (forest.depth + 1)
        buffer = search_k + leaf + 1                      # last column: sink for masked writes
        batch = tf.shape(queries)[0]
        rows_b = tf.range(batch)
        neg_inf = float("-inf")
        # Priority arrays grow (doubling) when a query runs out of slots.
        initial = num_roots + 64
        priority = tf.concat([tf.fill([batch, num_roots], float("inf")),
                              tf.fill([batch, initial - num_roots], neg_inf)], axis=1)
        node = tf.concat([tf.tile(self._roots[None, :], [batch, 1]),
                          tf.zeros([batch, initial - num_roots], tf.int32)], axis=1)
        found = tf.fill([batch, buffer], -1)
        count = tf.zeros([batch], tf.int32)
        used = tf.fill([batch], num_roots)
        done = tf.zeros([batch], tf.bool)

        def cond(it, priority, node, found, count, used, done):
            return tf.logical_and(it < max_iter, tf.logical_not(tf.reduce_all(done)))

        def body(it, priority, node, found, count, used, done):
            capacity = tf.shape(priority)[1]
            priority, node = tf.cond(
                tf.reduce_max(used) >= capacity,
                lambda: (tf.concat([priority, tf.fill(tf.shape(priority), neg_inf)], axis=1),
                         tf.concat([node, tf.zeros_like(node)], axis=1)),
                lambda: (priority, node))
            top = tf.reduce_max(priority, axis=1)
            # std::priority_queue<pair<T, S>> pops the largest (priority, node id).
            tied = tf.equal(priority, top[:, None])
            slot = tf.argmax(tf.where(tied, node, -1), axis=1, output_type=tf.int32)
            nd = tf.gather(node, slot, batch_dims=1)
            empty = tf.math.is_inf(top) & (top < 0)
            done = done | empty
            active = tf.logical_not(done)
            kind = tf.gather(self._kind, nd)
            is_split = active & tf.equal(kind, KIND_SPLIT)
            is_leaf = active & tf.not_equal(kind, KIND_SPLIT)

            plane_row = tf.gather(self._hyperplane_row, nd)
            plane = tf.gather(self._hyperplanes, plane_row)
            margin = tf.reduce_sum(plane * queries, axis=1) + tf.gather(self._split_bias, plane_row)
            sides = tf.gather(self._children, nd)
            p0, p1 = tf.minimum(top, -margin), tf.minimum(top, margin)

            # Slot of the popped node: child 0 of a split, emptied for a leaf, untouched otherwise;
            # child 1 goes to the next free slot.
            old_p = tf.gather(priority, slot, batch_dims=1)
            old_n = tf.gather(node, slot, batch_dims=1)
            new_p = tf.where(is_split, p0, tf.where(is_leaf, neg_inf, old_p))
            new_n = tf.where(is_split, sides[:, 0], old_n)
            cur_p = tf.gather(priority, used, batch_dims=1)
            cur_n = tf.gather(node, used, batch_dims=1)
            at = tf.concat([tf.stack([rows_b, slot], axis=1), tf.stack([rows_b, used], axis=1)], 0)
            priority = tf.tensor_scatter_nd_update(
                priority, at, tf.concat([new_p, tf.where(is_split, p1, cur_p)], 0))
            node = tf.tensor_scatter_nd_update(
                node, at, tf.concat([new_n, tf.where(is_split, sides[:, 1], cur_n)], 0))
            used = used + tf.cast(is_split, tf.int32)

            # Items of a leaf (item node or bucket) appended to `found`.
            n_items = tf.where(is_leaf, tf.gather(self._leaf_count, nd), 0)
            offsets = tf.gather(self._leaf_offset, nd)[:, None] + tf.range(leaf)[None, :]
            items = tf.gather(self._leaf_items, offsets)
            valid = tf.range(leaf)[None, :] < n_items[:, None]
            columns = tf.where(valid, count[:, None] + tf.range(leaf)[None, :], buffer - 1)
            at_found = tf.stack([tf.broadcast_to(rows_b[:, None], tf.shape(columns)), columns], -1)
            found = tf.tensor_scatter_nd_update(found, at_found, tf.where(valid, items, -1))
            count = count + n_items
            done = done | (count >= search_k)
            return it + 1, priority, node, found, count, used, done

        _, _, _, found, _, _, _ = tf.while_loop(
            cond, body, (tf.constant(0), priority, node, found, count, used, done),
            shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, None]),
                              tf.TensorShape([None, None]), tf.TensorShape([None, None]),
                              tf.TensorShape([None]), tf.TensorShape([None]),
                              tf.TensorShape([None])))
        found = found[:, :buffer - 1]
        vectors = tf.gather(self._items, tf.maximum(found, 0))
        scores = tf.reduce_sum(vectors * queries[:, None, :], axis=-1)
        return found, scores

    def is_exact(self) -> bool:
        return False
