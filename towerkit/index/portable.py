"""`PortableIndex`: a two-level partitioned ANN index whose SavedModel uses only stock TF ops."""

from __future__ import annotations

import logging
import math
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from towerkit.index import portable_scann, portable_search
from towerkit.index.base import Index

_LOG = logging.getLogger("towerkit.index")

_INT_KNOBS = ("num_leaves", "leaves_to_search", "blocks_to_search", "block_size", "leaf_width",
              "training_iterations", "training_sample_size")


def default_portable_settings(num_candidates: int, max_k: int, block_size: int = 32) -> dict:
    """Search settings derived from the catalogue size.

    About `sqrt(n)` leaves (ScaNN's guidance), 10% of them kept per query, and enough blocks for
    `4 * max_k` candidates but at least 64 blocks: on the 1M clustered benchmark, 200 of 2,000
    leaves and 32 blocks of 32 reached recall@10 0.954 (`benchmarks/index/RESULTS.md`); 64
    leave a margin for other data. Use `tune(...)` / `target_recall=` to fit a recall target
    on held-out queries (it finds the cheaper setting where the data allows).

    Args:
      num_candidates: int. Catalogue size.
      max_k: int. Largest k queried.
      block_size: int. Candidates per block.

    Returns:
      dict with `num_leaves`, `leaves_to_search`, `blocks_to_search`.
    """
    num_leaves = int(min(max(round(math.sqrt(num_candidates)), 1), 8000))
    leaves_to_search = min(num_leaves, max(4, int(math.ceil(0.1 * num_leaves))))
    blocks_to_search = max(64, int(math.ceil(4 * max_k / block_size)))
    return {"num_leaves": num_leaves, "leaves_to_search": leaves_to_search,
            "blocks_to_search": blocks_to_search}


@tf.keras.utils.register_keras_serializable(package="towerkit")
class PortableIndex(Index):
    """Two-level partitioned ANN index (ScaNN's k-means leaves, then blocks), stock TF ops only.

    Built with ScaNN: the k-means tree is trained by the `scann` library and its leaf centres
    and datapoint -> leaf assignment are read back from the serialized searcher
    (`towerkit.index.portable_scann`). Every leaf is then split into blocks of `block_size`
    candidates (k-means inside the leaf). A query scores the leaf centres, keeps
    `leaves_to_search` leaves, scores the centres of their blocks, keeps `blocks_to_search`
    blocks and scores their candidates exactly in float32 (`towerkit.index.portable_search`).
    Leaves are ranked by `q . centre + weight * |q| * spread` and blocks by
    `q . centre + weight * |q| * radius`, which favour the wide, large-norm regions where
    inner-product winners live. The search is one vectorized
    graph without per-leaf loops, and the SavedModel has no custom op, so the stock
    `tensorflow/serving` image serves it; `scann` is only needed to build.

    Example:

    ```python
    index = PortableIndex(k=10).index(candidate_embeddings, identifiers=item_ids)
    report = index.tune(held_out_query_embeddings, target_recall=0.95)
    scores, ids = index(query_embeddings)
    towerkit.index.save_index(index, "/tmp/portable")  # servable by stock TF Serving
    ```

    References:
      Guo et al., "Accelerating Large-Scale Inference with Anisotropic Vector Quantization",
      ICML 2020. https://arxiv.org/abs/1908.10396
      Jegou et al., "Product Quantization for Nearest Neighbor Search", TPAMI 2011 (inverted
      file, residual vector quantization). https://doi.org/10.1109/TPAMI.2010.57
      Babenko and Lempitsky, "The Inverted Multi-Index", CVPR 2012 (finer second-level cells).
    """

    def __init__(self, query_model: Optional[tf.keras.Model] = None, k: int = 10,
                 num_leaves: Optional[int] = None, leaves_to_search: Optional[int] = None,
                 blocks_to_search: Optional[int] = None, block_size: int = 32,
                 leaf_width: Optional[int] = None, leaf_spread_weight: float = 1.0,
                 block_spread_weight: float = 0.2,
                 training_iterations: int = 12, training_sample_size: Optional[int] = None,
                 avq: Optional[float] = None, scann_artifacts_dir: Optional[str] = None,
                 name: Optional[str] = None, **kwargs) -> None:
        """Initializes the layer. Knobs left as None are derived from the catalogue size.

        Args:
          query_model: Optional Keras model mapping raw query features to embeddings.
          k: int. Maximum (and default) number of results.
          num_leaves: int. k-means leaves (default about sqrt(n)).
          leaves_to_search: int. Leaves kept per query (default 10% of the leaves).
          blocks_to_search: int. Blocks of those leaves scored exactly per query (default
            `max(64, 4 * k / block_size)`).
          block_size: int. Candidates per block (default 32).
          leaf_width: int. The most blocks of one leaf: larger k-means leaves are cut into
            several (default: the power of two >= the mean blocks of a leaf).
          leaf_spread_weight: float >= 0. Weight of `|q| * spread` in the leaf ranking.
          block_spread_weight: float >= 0. Weight of `|q| * radius` in the block ranking (the
            radius is the largest distance of a block's candidate from its centre; weight 1
            makes the block score an upper bound of its candidates' scores).
          training_iterations: int. ScaNN k-means iterations.
          training_sample_size: int. Points ScaNN trains the centres on (default min(n, 250k)).
          avq: float. ScaNN's anisotropic centre update (None: plain k-means).
          scann_artifacts_dir: Optional directory of a serialized ScaNN searcher (built with
            `.tree(...)` over the same candidates, in the same order) to take the partition
            from instead of training one.
          name: Optional layer name.
          **kwargs: Passed to `tf.keras.Model`.

        Raises:
          ValueError: if a knob is not a positive integer or a weight is negative.
        """
        super().__init__(query_model=query_model, k=k, name=name, **kwargs)
        given = {"num_leaves": num_leaves, "leaves_to_search": leaves_to_search,
                 "blocks_to_search": blocks_to_search, "block_size": block_size,
                 "leaf_width": leaf_width, "training_iterations": training_iterations,
                 "training_sample_size": training_sample_size}
        for knob in _INT_KNOBS:
            _check_int(knob, given[knob], "or None (derived from the catalogue size)")
        for knob, value in (("leaf_spread_weight", leaf_spread_weight),
                            ("block_spread_weight", block_spread_weight)):
            _check_weight(knob, value)
        self._requested = {"num_leaves": num_leaves, "leaves_to_search": leaves_to_search,
                           "blocks_to_search": blocks_to_search}
        self._block_size = int(block_size)
        self._leaf_width = None if leaf_width is None else int(leaf_width)
        self._weights = {"leaf_spread_weight": float(leaf_spread_weight),
                         "block_spread_weight": float(block_spread_weight)}
        self._training_iterations = int(training_iterations)
        self._training_sample_size = training_sample_size
        self._avq = avq
        self._scann_artifacts_dir = (None if scann_artifacts_dir is None
                                     else os.fspath(scann_artifacts_dir))
        self.settings = None
        self._layout = None
        self._search_fn = None

    def get_config(self) -> dict:
        config = {"k": self._k, **self._requested, "block_size": self._block_size,
                  "leaf_width": self._leaf_width,
                  **self._weights, "training_iterations": self._training_iterations,
                  "training_sample_size": self._training_sample_size, "avq": self._avq,
                  "scann_artifacts_dir": self._scann_artifacts_dir, "name": self.name}
        if self.query_model is not None:
            config["query_model"] = tf.keras.utils.serialize_keras_object(self.query_model)
        return config

    @classmethod
    def from_config(cls, config: dict) -> "PortableIndex":
        config = dict(config)
        if config.get("query_model") is not None:
            config["query_model"] = tf.keras.utils.deserialize_keras_object(config["query_model"])
        return cls(**config)

    def _build(self, candidates: np.ndarray) -> None:
        n = candidates.shape[0]
        settings = default_portable_settings(n, self._k, self._block_size)
        settings.update({key: int(v) for key, v in self._requested.items() if v is not None})
        if self._scann_artifacts_dir is not None:
            partition = portable_scann.read_scann_partition(self._scann_artifacts_dir,
                                                            expected_size=n)
            settings["num_leaves"] = int(partition.centroids.shape[0])
            if partition.centroids.shape[1] != candidates.shape[1]:
                raise ValueError(
                    f"The ScaNN partition in {self._scann_artifacts_dir} has "
                    f"{partition.centroids.shape[1]}-dim centres but the candidates have "
                    f"{candidates.shape[1]} dims: serialize a searcher built on these candidates.")
        else:
            if settings["num_leaves"] > n:
                raise ValueError(f"num_leaves={settings['num_leaves']} is larger than the "
                                 f"catalogue ({n} candidates): use num_leaves <= {n}.")
            self._progress(f"training {settings['num_leaves']} k-means leaves with ScaNN")
            partition = portable_scann.scann_partition(
                candidates, settings["num_leaves"], training_sample_size=self._training_sample_size,
                training_iterations=self._training_iterations, avq=self._avq)
        layout = portable_search.build_layout(candidates, partition.centroids,
                                              partition.assignment, block_size=self._block_size,
                                              leaf_width=self._leaf_width,
                                              progress=self._progress)
        sizes = np.bincount(partition.assignment, minlength=settings["num_leaves"])
        # Leaves searched are the k-means leaves after cutting the large ones (`leaf_width`).
        settings.update(kmeans_leaves=settings["num_leaves"],
                        num_leaves=int(np.isfinite(layout["leaf_keys"][-1]).sum()),
                        leaf_width=int(layout["leaf_table"].shape[-1]),
                        block_size=self._block_size, num_blocks=int(layout["blocks"].shape[0]) - 1,
                        leaf_size_min=int(sizes.min()), leaf_size_max=int(sizes.max()),
                        **self._weights)
        settings["leaves_to_search"] = min(settings["leaves_to_search"], settings["num_leaves"])
        settings["blocks_to_search"] = min(settings["blocks_to_search"], settings["num_blocks"])
        self._layout = {name: self._add_state(name, value) for name, value in layout.items()}
        self.settings = settings
        self._search_fn = None
        _LOG.info("PortableIndex: %s", settings)

    def _knobs(self) -> dict:
        return {name: self.settings[name] for name in
                ("leaves_to_search", "blocks_to_search", "leaf_spread_weight",
                 "block_spread_weight")}

    def _search(self, queries: tf.Tensor, k):
        # The knobs are constants of the graph (a SavedModel holds the setting it was saved
        # with): a small search then compiles to one fixed-shape graph without branches.
        if not tf.executing_eagerly():
            # Inside a caller's graph (a SavedModel signature): the search ops go straight into
            # it. A nested tf.function would add an identity op per input when it is inlined,
            # and on small searches the executed op count sets the speed.
            return portable_search.search(self._layout, queries, k, **self._knobs(),
                                          max_k=self._k)
        if self._search_fn is None:
            # One traced graph for eager calls per setting (`set_search_params` drops it; the
            # chunk loop of a large batch must run as a while loop, not as Python). Traced
            # once as a concrete function: tuning traces one per setting, which a plain
            # tf.function called in a loop reports as excessive retracing.
            knobs = self._knobs()

            @tf.function(input_signature=[tf.TensorSpec([None, self._dim], tf.float32),
                                          tf.TensorSpec([], tf.int32)], autograph=False)
            def search_fn(queries, k):
                return portable_search.search(self._layout, queries, k, **knobs,
                                              max_k=self._k)
            self._search_fn = search_fn.get_concrete_function()
        return self._search_fn(queries, tf.convert_to_tensor(k, tf.int32))

    def is_exact(self) -> bool:
        return False

    # ------------------------------------------------------------------ tuning
    def set_search_params(self, leaves_to_search: Optional[int] = None,
                          blocks_to_search: Optional[int] = None,
                          leaf_spread_weight: Optional[float] = None,
                          block_spread_weight: Optional[float] = None) -> "PortableIndex":
        """Changes the query-time knobs without rebuilding (used by `target_recall` tuning).

        The knobs are constants of the search graph: the next call traces it again, and a
        SavedModel (`save_index`) holds the setting it was saved with.

        On a small catalogue searched exactly by default (`Index.EXHAUSTIVE_MAX_FLOATS`), this
        switches to the partitioned search.

        Raises:
          ValueError: if the index is not built, a count is not a positive integer or a weight
            is negative.
        """
        self._check_built()
        if self.exhaustive:  # explicit knobs: use the partitioned search, not the exact one
            self.set_exhaustive(False)
        for knob, value, limit in (("leaves_to_search", leaves_to_search, "num_leaves"),
                                   ("blocks_to_search", blocks_to_search, "num_blocks")):
            if value is not None:
                _check_int(knob, value)
                self.settings[knob] = int(min(value, self.settings[limit]))
                self._search_fn = None
        for knob, value in (("leaf_spread_weight", leaf_spread_weight),
                            ("block_spread_weight", block_spread_weight)):
            if value is not None:
                _check_weight(knob, value)
                self.settings[knob] = float(value)
                self._search_fn = None
        return self

    def tuning_grid(self, k: int) -> list:
        """(leaves, blocks) settings in steps of sqrt(2), cheapest estimated cost first.

        Cost estimate: bytes read per query, `leaves * mean blocks per leaf * 4 * dim` for the
        block centres plus `blocks * block_size * 4 * dim` for the exactly scored candidates.
        Block counts below `k / block_size` are skipped (they cannot return k results).
        """
        self._check_built()
        num_leaves, num_blocks = self.settings["num_leaves"], self.settings["num_blocks"]
        size = self.settings["block_size"]
        steps = lambda top: sorted({min(int(round(2 ** (i / 2))), top) for i in range(60)})
        blocks_per_leaf = num_blocks / num_leaves
        grid = [(leaves * blocks_per_leaf + blocks * size, leaves, blocks)
                for leaves in steps(num_leaves) for blocks in steps(num_blocks)
                if blocks * size >= k and blocks <= max(leaves * blocks_per_leaf * 4, 1)]
        return [{"leaves_to_search": leaves, "blocks_to_search": blocks}
                for _, leaves, blocks in sorted(grid)]

    def tune(self, queries, target_recall: float = 0.95, k: int = 10, reference=None) -> dict:
        """Sets `leaves_to_search` and `blocks_to_search` to the cheapest pair reaching the target.

        `towerkit.index.tune_for_recall` over `tuning_grid` (cheapest estimated cost first,
        batches of 256 queries), then the recall of the chosen setting one query at a time,
        which must agree (the search graph is the same for every batch size).

        Args:
          queries: held-out query features or embeddings (not the candidates).
          target_recall: float in (0, 1].
          k: int. The recall cutoff (`<= max_k`).
          reference: exact index; a `BruteForce` over the same candidates by default.

        Returns:
          dict with `setting` (`leaves_to_search`, `blocks_to_search`), `recall` (batched),
          `one_query_recall` (on up to 100 of the queries), `target_recall`, `reached`, `k` and
          `tried`.
        """
        from towerkit.index import recall as recall_lib  # pylint: disable=g-import-not-at-top

        reference = reference or recall_lib.exact_reference(self, k)
        report = recall_lib.tune_for_recall(self, queries, target_recall, k, reference)
        few = (queries[:100] if not isinstance(queries, dict)
               else {key: value[:100] for key, value in queries.items()})
        report["one_query_recall"] = recall_lib.recall_at_k(self, few, reference, k=k,
                                                            batch_size=1)
        _LOG.info("PortableIndex tuned: %s", report["setting"])
        return report


def _check_int(knob: str, value, extra: str = "") -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                              or value < 1):
        raise ValueError(f"{knob} must be an integer >= 1{' ' + extra if extra else ''}; "
                         f"got {value!r}.")


def _check_weight(knob: str, value) -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer))
            or not np.isfinite(value) or value < 0):
        raise ValueError(f"{knob} must be a finite number >= 0; got {value!r}.")
