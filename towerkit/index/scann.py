"""`ScaNN`: approximate MIPS with Google's ScaNN library (tree + asymmetric hashing + reorder)."""

import math
import uuid
from typing import Optional

import numpy as np
import tensorflow as tf

from towerkit.index.base import Index

#: Below this many candidates ScaNN scores every candidate exactly (no tree, no hashing).
SMALL_CATALOGUE = 256


def default_scann_settings(num_candidates: int, max_k: int) -> dict:
    """ScaNN settings derived from the corpus size.

    About `sqrt(n)` leaves (ScaNN's guidance), 5% of them searched (at least 8 when there are that
    many, and at least the share `10 * k / n` of them, so that a large k on a small catalogue
    still sees enough of it: on a 1,682 x 32 catalogue, k=100 reached recall 0.937 with 8 of 41
    leaves) and `max(10 * k, 250)` candidates exactly re-scored: a middle ground that the
    `target_recall=` tuning (see `towerkit.index.tune_for_recall`) then moves up or down.

    Args:
        num_candidates: int. Catalogue size.
        max_k: int. Largest k queried.

    Returns:
        dict with `num_leaves`, `num_leaves_to_search`, `num_reordering_candidates`.
    """
    num_leaves = int(min(max(round(math.sqrt(num_candidates)), 2), 4000))
    share = max(0.05, 10 * max_k / num_candidates)
    leaves_to_search = min(num_leaves, max(8, int(math.ceil(share * num_leaves))))
    reorder = int(min(num_candidates, max(10 * max_k, 250)))
    return {"num_leaves": num_leaves, "num_leaves_to_search": leaves_to_search,
            "num_reordering_candidates": reorder}


class ScaNN(Index):
    """ScaNN index (anisotropic vector quantization) built with the real `scann` library.

    Searchable from Python (eager or `tf.function`). Its SavedModel needs the ScaNN custom ops
    (`Scann>ScannSearchBatched`, `Scann>TensorsToScann`), which stock TensorFlow Serving does not
    have: `save_index` warns and records them; export the `Portable` index for stock serving.

    Example:

    ```python
    index = ScaNN(k=10).index(candidate_embeddings, identifiers=item_ids)
    scores, ids = index(query_embeddings)
    ```

    References:
        Guo et al., "Accelerating Large-Scale Inference with Anisotropic Vector Quantization",
        ICML 2020. https://arxiv.org/abs/1908.10396
    """

    custom_ops = ("Scann>ScannSearchBatched", "Scann>TensorsToScann")
    # ScaNN keeps its own exact mode (`SMALL_CATALOGUE`) and its defaults reach recall@k >= 0.95
    # on small catalogues (tests/index/test_index_input_checks.py): no separate exact path, so
    # its SavedModel always holds the ScaNN ops its `custom_ops` declare.
    EXHAUSTIVE_MAX_FLOATS = 0

    def __init__(self, query_model: Optional[tf.keras.Model] = None, k: int = 10,
                 num_leaves: Optional[int] = None, num_leaves_to_search: Optional[int] = None,
                 num_reordering_candidates: Optional[int] = None, dimensions_per_block: int = 2,
                 anisotropic_quantization_threshold: float = 0.2, training_iterations: int = 12,
                 parallelize_batch_searches: bool = False, name: Optional[str] = None,
                 **kwargs) -> None:
        """Initializes the layer. Knobs left as None are derived from the catalogue size.

        Args:
            query_model: Optional Keras model mapping raw query features to embeddings.
            k: int. Maximum (and default) number of results.
            num_leaves: int. Partitions of the tree (default about sqrt(n)).
            num_leaves_to_search: int. Partitions searched per query (default 5% of the leaves).
            num_reordering_candidates: int. Candidates re-scored exactly (default max(10k, 250)).
            dimensions_per_block: int. Dimensions per asymmetric-hashing block.
            anisotropic_quantization_threshold: float. AVQ threshold (ScaNN's recommended 0.2).
            training_iterations: int. k-means iterations for the tree.
            parallelize_batch_searches: bool. Use several threads for batched queries.
            name: Optional layer name.
            **kwargs: Passed to `Index` (e.g. `verbose=True`) and `tf.keras.Model`.
        """
        super().__init__(query_model=query_model, k=k, name=name, **kwargs)
        knobs = (("num_leaves", num_leaves), ("num_leaves_to_search", num_leaves_to_search),
                 ("num_reordering_candidates", num_reordering_candidates))
        for knob, value in knobs:
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(
                    f"{knob} must be a positive integer or None (derived); got {value!r}.")
        self._requested = {"num_leaves": num_leaves, "num_leaves_to_search": num_leaves_to_search,
                           "num_reordering_candidates": num_reordering_candidates}
        self._dimensions_per_block = dimensions_per_block
        self._aq_threshold = anisotropic_quantization_threshold
        self._training_iterations = training_iterations
        self._parallel = parallelize_batch_searches
        self.settings = None
        self._searcher = None
        self._scann_state = None

    def _build(self, candidates: np.ndarray) -> None:
        from scann.scann_ops.py import scann_ops  # pylint: disable=g-import-not-at-top

        n, dim = candidates.shape
        settings = default_scann_settings(n, self._k)
        settings.update({key: int(v) for key, v in self._requested.items() if v is not None})
        settings["num_leaves"] = min(settings["num_leaves"], n)
        settings["num_leaves_to_search"] = min(settings["num_leaves_to_search"],
                                               settings["num_leaves"])
        settings["num_reordering_candidates"] = min(settings["num_reordering_candidates"], n)
        builder = scann_ops.builder(candidates, self._k, "dot_product")
        if n < SMALL_CATALOGUE:
            settings = {"exact": True}
            builder = builder.score_brute_force()
        else:
            builder = builder.tree(num_leaves=settings["num_leaves"],
                                   num_leaves_to_search=settings["num_leaves_to_search"],
                                   training_sample_size=min(n, 250_000),
                                   min_partition_size=1,
                                   training_iterations=self._training_iterations)
            builder = builder.score_ah(min(self._dimensions_per_block, dim),
                                       anisotropic_quantization_threshold=self._aq_threshold)
            builder = builder.reorder(settings["num_reordering_candidates"])
        self.settings = settings
        self._progress(f"training ScaNN {settings}")
        self._searcher = builder.build(shared_name=f"towerkit-scann-{uuid.uuid4()}")
        self._progress("serializing the searcher state")
        self._scann_state = self._searcher.serialize_to_module()
        self._state.extend(self._scann_state.variables)

    def set_search_params(self, num_leaves_to_search: Optional[int] = None,
                          num_reordering_candidates: Optional[int] = None) -> "ScaNN":
        """Changes the query-time knobs without rebuilding (used by `target_recall` tuning)."""
        if self.settings is None or self.settings.get("exact"):
            raise ValueError("set_search_params needs a built tree index (n >= "
                             f"{SMALL_CATALOGUE}); call index() first.")
        if num_leaves_to_search is not None:
            self.settings["num_leaves_to_search"] = int(min(num_leaves_to_search,
                                                            self.settings["num_leaves"]))
        if num_reordering_candidates is not None:
            self.settings["num_reordering_candidates"] = int(min(num_reordering_candidates,
                                                                 self._num_candidates))
        return self

    def tuning_grid(self, k: int) -> list:
        """(leaves searched, reorder depth) settings from cheapest to most expensive.

        Cost model: a leaf costs its share of AH-scored points (about 1/8 of an exact dot product
        each, LUT16 scoring), a reordered candidate one exact dot product.
        """
        if self.settings is None or self.settings.get("exact"):
            raise ValueError("This ScaNN index scores exactly (small catalogue): nothing to tune.")
        n, num_leaves = self._num_candidates, self.settings["num_leaves"]
        leaves = sorted({min(2 ** i, num_leaves) for i in range(0, 16)})
        reorders = sorted({min(max(r, k), n) for r in (50, 100, 200, 500, 1000, 2000, 5000)})
        grid = [{"num_leaves_to_search": l, "num_reordering_candidates": r}
                for l in leaves for r in reorders]
        return sorted(grid, key=lambda g: g["num_leaves_to_search"] * n / num_leaves / 8
                      + g["num_reordering_candidates"])

    def _search(self, queries: tf.Tensor, k):
        # ScaNN's kernels fail a RET_CHECK on an empty batch: answer it without them.
        if tf.executing_eagerly():
            if queries.shape[0] == 0:
                return _empty_result(k)
            return self._scann_search(queries, k)
        return tf.cond(tf.shape(queries)[0] > 0, lambda: self._scann_search(queries, k),
                       lambda: _empty_result(k))

    def _scann_search(self, queries: tf.Tensor, k):
        from scann.scann_ops.py import scann_ops  # pylint: disable=g-import-not-at-top

        if tf.executing_eagerly():
            searcher = self._searcher
        else:  # Inside a tf.function (and the SavedModel): rebuild the searcher from its state.
            searcher = scann_ops.searcher_from_module(self._scann_state)
        exact = self.settings.get("exact", False)
        leaves = None if exact else self.settings["num_leaves_to_search"]
        reorder = None if exact else tf.maximum(self.settings["num_reordering_candidates"], k)
        search = searcher.search_batched_parallel if self._parallel else searcher.search_batched
        result = search(queries, final_num_neighbors=k, pre_reorder_num_neighbors=reorder,
                        leaves_to_search=leaves)
        return result.distances, result.indices

    def is_exact(self) -> bool:
        return bool(self.settings and self.settings.get("exact"))


def _empty_result(k):
    return tf.zeros([0, k], tf.float32), tf.zeros([0, k], tf.int32)
