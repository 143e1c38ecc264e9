"""`PortableIndex`: a partitioned, quantized ANN index whose SavedModel uses only stock TF ops."""

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


def default_portable_settings(num_candidates: int, max_k: int) -> dict:
    """Settings derived from the catalogue size.

    About `sqrt(n)` leaves (ScaNN's guidance), 8% of them searched (exact IVF scoring reached
    recall@10 0.95 on the 1M clustered benchmark at about 8%; see `benchmarks/index/RESULTS.md`)
    and `reorder=0` (exact float32 scoring of the probed leaves on the one-query path).

    Args:
      num_candidates: int. Catalogue size.
      max_k: int. Largest k queried.

    Returns:
      dict with `num_leaves`, `leaves_to_search`, `reorder`.
    """
    num_leaves = int(min(max(round(math.sqrt(num_candidates)), 1), 8000))
    leaves_to_search = min(num_leaves, max(4, int(math.ceil(0.08 * num_leaves))))
    del max_k  # The settings do not depend on k: probed leaves are scored exactly.
    return {"num_leaves": num_leaves, "leaves_to_search": leaves_to_search, "reorder": 0}


@tf.keras.utils.register_keras_serializable(package="towerkit")
class PortableIndex(Index):
    """Partitioned ANN index (ScaNN's k-means tree + int8 residual codes), stock TF ops only.

    Built by ScaNN itself: the k-means tree is trained by the `scann` library and its leaf centres
    and datapoint -> leaf assignment are read back from the serialized searcher
    (`towerkit.index.portable_scann`). Search runs in plain TensorFlow (see
    `towerkit.index.portable_search`): centre scores pick `leaves_to_search` leaves; with one
    query (batch <= 8) the leaves' rows are gathered and scored (optionally through int8 residual
    codes, re-scoring the best `reorder` exactly in float32); with a batch, the queries are
    grouped by the leaf
    they probe and each touched leaf is scored exactly, once, in a single matmul. By default the
    one-query path scores the gathered rows exactly too (`reorder=0`, faster in TF than the int8
    pass, whose `Cast` dominates; see `benchmarks/index/RESULTS.md`). The SavedModel
    has no custom op, so the stock `tensorflow/serving` image serves it; `scann` is only needed to
    build.

    Example:

    ```python
    index = PortableIndex(k=10).index(candidate_embeddings, identifiers=movie_ids)
    report = index.tune(held_out_query_embeddings, target_recall=0.95)
    scores, ids = index(query_embeddings)
    towerkit.index.save_index(index, "/tmp/portable")  # servable by stock TF Serving
    ```

    References:
      Guo et al., "Accelerating Large-Scale Inference with Anisotropic Vector Quantization",
      ICML 2020. https://arxiv.org/abs/1908.10396
      Jegou et al., "Product Quantization for Nearest Neighbor Search", TPAMI 2011 (inverted
      file with residual codes). https://doi.org/10.1109/TPAMI.2010.57
    """

    def __init__(self, query_model: Optional[tf.keras.Model] = None, k: int = 10,
                 num_leaves: Optional[int] = None, leaves_to_search: Optional[int] = None,
                 reorder: Optional[int] = None, training_iterations: int = 12,
                 training_sample_size: Optional[int] = None, avq: Optional[float] = None,
                 scann_artifacts_dir: Optional[str] = None, name: Optional[str] = None,
                 **kwargs) -> None:
        """Initializes the layer. Knobs left as None are derived from the catalogue size.

        Args:
          query_model: Optional Keras model mapping raw query features to embeddings.
          k: int. Maximum (and default) number of results.
          num_leaves: int. k-means leaves (default about sqrt(n)).
          leaves_to_search: int. Leaves probed per query (default 8% of the leaves).
          reorder: int. One-query path: 0 (default) scores the probed leaves exactly in float32;
            > 0 scores their int8 residual codes and re-scores the best `reorder` exactly.
          training_iterations: int. ScaNN k-means iterations.
          training_sample_size: int. Points ScaNN trains the centres on (default min(n, 250k)).
          avq: float. ScaNN's anisotropic centre update (None: plain k-means).
          scann_artifacts_dir: Optional directory of a serialized ScaNN searcher (built with
            `.tree(...)` over the same candidates, in the same order) to take the partition
            from instead of training one.
          name: Optional layer name.
          **kwargs: Passed to `tf.keras.Model`.

        Raises:
          ValueError: if a knob is not a positive integer.
        """
        super().__init__(query_model=query_model, k=k, name=name, **kwargs)
        for knob, value in (("num_leaves", num_leaves), ("leaves_to_search", leaves_to_search),
                            ("reorder", reorder), ("training_iterations", training_iterations),
                            ("training_sample_size", training_sample_size)):
            low = 0 if knob == "reorder" else 1
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, np.integer)) or value < low):
                raise ValueError(f"{knob} must be an integer >= {low} or None (derived from the "
                                 f"catalogue size); got {value!r}.")
        self._requested = {"num_leaves": num_leaves, "leaves_to_search": leaves_to_search,
                           "reorder": reorder}
        self._training_iterations = int(training_iterations)
        self._training_sample_size = training_sample_size
        self._avq = avq
        self._scann_artifacts_dir = (None if scann_artifacts_dir is None
                                     else os.fspath(scann_artifacts_dir))
        self.settings = None
        self._layout = None
        self._leaves_to_search = None
        self._reorder = None
        self._search_fn = None

    def get_config(self) -> dict:
        config = {"k": self._k, **self._requested,
                  "training_iterations": self._training_iterations,
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
        settings = default_portable_settings(n, self._k)
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
            partition = portable_scann.scann_partition(
                candidates, settings["num_leaves"], training_sample_size=self._training_sample_size,
                training_iterations=self._training_iterations, avq=self._avq)
        settings["leaves_to_search"] = min(settings["leaves_to_search"], settings["num_leaves"])
        layout = portable_search.build_layout(candidates, partition.centroids,
                                              partition.assignment)
        sizes = np.diff(layout["offsets"])
        settings["leaf_size_min"], settings["leaf_size_max"] = int(sizes.min()), int(sizes.max())
        self._layout = {name: self._add_state(name, value) for name, value in layout.items()}
        self._leaves_to_search = self._add_state(
            "leaves_to_search", tf.constant(settings["leaves_to_search"], tf.int32))
        self._reorder = self._add_state("reorder", tf.constant(settings["reorder"], tf.int32))
        self.settings = settings
        self._search_fn = None
        _LOG.info("PortableIndex: %s", settings)

    def _search(self, queries: tf.Tensor, k):
        if self._search_fn is None:
            # One traced graph for eager calls and for every caller's graph (the grouped path's
            # leaf loop must run as a while loop, not as Python).
            @tf.function(input_signature=[tf.TensorSpec([None, self._dim], tf.float32),
                                          tf.TensorSpec([], tf.int32)])
            def search_fn(queries, k):
                return portable_search.search(self._layout, queries, k, self._leaves_to_search,
                                              self._reorder)
            self._search_fn = search_fn
        return self._search_fn(queries, tf.convert_to_tensor(k, tf.int32))

    def is_exact(self) -> bool:
        return False

    # ------------------------------------------------------------------ tuning
    def set_search_params(self, leaves_to_search: Optional[int] = None,
                          reorder: Optional[int] = None) -> "PortableIndex":
        """Changes the query-time knobs without rebuilding (used by `target_recall` tuning).

        Raises:
          ValueError: if the index is not built or a knob is not a positive integer.
        """
        self._check_built()
        for knob, value, low in (("leaves_to_search", leaves_to_search, 1),
                                 ("reorder", reorder, 0)):
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, np.integer)) or value < low):
                raise ValueError(f"{knob} must be an integer >= {low}; got {value!r}.")
        if leaves_to_search is not None:
            self.settings["leaves_to_search"] = int(min(leaves_to_search,
                                                        self.settings["num_leaves"]))
            self._leaves_to_search.assign(self.settings["leaves_to_search"])
        if reorder is not None:
            self.settings["reorder"] = int(min(reorder, self._num_candidates))
            self._reorder.assign(self.settings["reorder"])
        return self

    def tuning_grid(self, k: int) -> list:
        """`leaves_to_search` settings from 1 leaf doubling up to every leaf (cheapest first).

        Batched calls score probed leaves exactly, so only the leaves matter there; `tune` then
        picks the one-query path's `reorder` depth as well.
        """
        self._check_built()
        num_leaves = self.settings["num_leaves"]
        leaves = sorted({min(int(round(2 ** (i / 2))), num_leaves) for i in range(0, 40)})
        return [{"leaves_to_search": l} for l in leaves]

    def tune(self, queries, target_recall: float = 0.95, k: int = 10, reference=None) -> dict:
        """Sets `leaves_to_search`, then `reorder`, to the cheapest values reaching `target_recall`.

        Leaves: `towerkit.index.tune_for_recall` over `tuning_grid` (batches of 256 queries,
        exact scoring of the probed leaves). Reorder depth (int8 indexes, `reorder > 0`, only):
        the smallest of `k, 2k, 5k, 10k, 20k, 50k, 100k` whose one-query path (batches of
        `portable_search.GROUPED_MIN_BATCH`) reaches the target too (or loses at most 0.005
        recall against the batched path when the target was not reached). The one-query recall
        is measured and reported in both cases.

        Args:
          queries: held-out query features or embeddings (not the candidates).
          target_recall: float in (0, 1].
          k: int. The recall cutoff (`<= max_k`).
          reference: exact index; a `BruteForce` over the same candidates by default.

        Returns:
          dict with `setting` (`leaves_to_search`, `reorder`), `recall` (batched),
          `one_query_recall`, `target_recall`, `reached`, `k` and `tried`.
        """
        from towerkit.index import recall as recall_lib  # pylint: disable=g-import-not-at-top

        reference = reference or recall_lib.exact_reference(self, k)
        report = recall_lib.tune_for_recall(self, queries, target_recall, k, reference)
        goal = target_recall if report["reached"] else report["recall"] - 0.005
        small = portable_search.GROUPED_MIN_BATCH
        tried = []
        # reorder=0 (exact scoring of the probed leaves) stays 0: the one-query path then returns
        # what the batched path returns. Only an int8 index (reorder > 0) tunes its depth.
        depths = [0] if self.settings["reorder"] == 0 else sorted(
            {min(max(m * k, k), self._num_candidates) for m in (1, 2, 5, 10, 20, 50, 100)})
        for depth in depths:
            self.set_search_params(reorder=depth)
            one = recall_lib.recall_at_k(self, queries, reference, k=k, batch_size=small)
            tried.append({"setting": {"reorder": depth}, "recall": one})
            if one >= goal:
                break
        report["tried"] += tried
        report["setting"] = {"leaves_to_search": self.settings["leaves_to_search"],
                             "reorder": self.settings["reorder"]}
        report["one_query_recall"] = tried[-1]["recall"]
        report["reached"] = bool(report["reached"] and tried[-1]["recall"] >= target_recall)
        _LOG.info("PortableIndex tuned: %s", report["setting"])
        return report
