"""Servable rankers: a ranker alone, and retrieve-then-rank (index + ranker) as one SavedModel.

Both are `tf.Module`s that `towerkit.serving.export` saves like an index (versioned, atomic, with
warmup records); their graphs use stock TensorFlow ops whenever the index does (BruteForce,
Annoy, the portable index), so stock TF Serving runs them.

Fusion (`RetrieveThenRank`): the ranker's task probabilities are combined into one score

    score = prod_t p_t ** fusion[t]      (computed as exp(sum_t fusion[t] * log p_t))

`fusion={"click": 1, "like": 1}` (the default) ranks by p(click) * p(like | click), the
expected probability that the user clicks *and* likes the movie (pCTCVR); `{"click": 1}` ranks
by clicks alone; fractional weights such as `{"click": 0.5, "like": 1}` trade the two.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Optional

import numpy as np
import tensorflow as tf

from towerkit.index import Index
from towerkit.index.saving import _state_of, checked_k  # pylint: disable=protected-access

__all__ = ["RankerServable", "RetrieveThenRank", "score_candidates", "fuse", "DEFAULT_FUSION",
           "METADATA_FILE"]

#: JSON asset describing a saved ranker (kind, tasks, fusion, sizes, custom ops).
METADATA_FILE = "towerkit_ranker.json"
DEFAULT_FUSION = {"click": 1.0, "like": 1.0}
_PROBABILITY_TASKS = ("click", "like", "ctcvr")


def score_candidates(model, requests: Mapping[str, tf.Tensor], candidates: tf.Tensor,
                     candidate_feature: str = "item_id") -> dict:
    """Scores `[batch, n]` candidates per request with a ranker that scores flat exposures.

    Args:
      model: A `towerkit.models.MultiTaskRanker` (or any layer mapping a flat feature dict to
        `{task: [rows]}`).
      requests: dict of `[batch]` per-request features.
      candidates: `[batch, n]` candidate ids.
      candidate_feature: str. The feature name the model reads the candidate id from.

    Returns:
      `{task: [batch, n]}`.
    """
    candidates = tf.convert_to_tensor(candidates)
    shape = tf.shape(candidates)
    flat = {name: tf.reshape(tf.repeat(value, shape[1], axis=0), [-1])
            for name, value in requests.items()}
    flat[candidate_feature] = tf.reshape(candidates, [-1])
    outputs = model(flat)
    return {task: tf.reshape(value, shape) for task, value in outputs.items()}


def fuse(probabilities: Mapping[str, tf.Tensor], fusion: Mapping[str, float]) -> tf.Tensor:
    """`prod_t p_t ** fusion[t]`, computed in log space (probabilities floored at 1e-12)."""
    total = 0.0
    for task, weight in sorted(fusion.items()):
        total += float(weight) * tf.math.log(tf.maximum(probabilities[task], 1e-12))
    return tf.exp(total)


def _check_fusion(fusion: Optional[Mapping[str, float]], tasks) -> dict:
    fusion = dict(DEFAULT_FUSION if fusion is None else fusion)
    bad = sorted(t for t in fusion if t not in _PROBABILITY_TASKS or t not in tasks)
    if not fusion or bad:
        raise ValueError(f"fusion weights must name probability tasks of the ranker "
                         f"({[t for t in tasks if t in _PROBABILITY_TASKS]}), got {fusion}.")
    if any(not np.isfinite(float(w)) or float(w) < 0 for w in fusion.values()):
        raise ValueError(f"fusion weights must be finite and >= 0, got {fusion}.")
    return {t: float(w) for t, w in fusion.items()}


def _specs(signature: Mapping[str, tf.TensorSpec]) -> dict:
    for name, spec in signature.items():
        if not isinstance(spec, tf.TensorSpec):
            raise TypeError(f"signature[{name!r}] must be a tf.TensorSpec, got {spec!r}.")
    return {name: tf.TensorSpec(s.shape, s.dtype, name=name) for name, s in signature.items()}


class RankerServable(tf.Module):
    """A trained ranker behind a signature that scores candidate lists.

    Signature `serving_default(**request_features, <candidate_feature>: string [batch, n])
    -> {task: float32 [batch, n]}` (per-task probabilities; `rating` when trained).

    Example:
    ```python
    servable = RankerServable(model, {"user_id": tf.TensorSpec([None], tf.string),
                                      "timestamp": tf.TensorSpec([None], tf.int64)})
    towerkit.serving.export(servable, "models/ranker", warmup_queries=requests)
    ```

    Args:
      model: The ranker (see `score_candidates`).
      request_signature: dict[str, tf.TensorSpec]. Per-request inputs, `[None]` each.
      candidate_feature: str. Name of the `[batch, n]` candidate id input.
    """

    kind = "ranker"

    def __init__(self, model, request_signature: Mapping[str, tf.TensorSpec],
                 candidate_feature: str = "item_id"):
        super().__init__(name="towerkit_ranker")
        specs = _specs(request_signature)
        if candidate_feature in specs:
            raise ValueError(f"{candidate_feature!r} is the candidate input; drop it from "
                             "request_signature.")
        specs[candidate_feature] = tf.TensorSpec([None, None], tf.string, name=candidate_feature)
        self._model, self.candidate_feature = model, candidate_feature

        @tf.function(input_signature=[specs], autograph=False)
        def serving_default(features):
            requests = {k: v for k, v in features.items() if k != candidate_feature}
            return score_candidates(model, requests, features[candidate_feature],
                                    candidate_feature)

        self.serving_default = serving_default

    def save(self, path) -> str:
        """Writes the SavedModel (and `assets/towerkit_ranker.json`) to `path`."""
        concrete = self.serving_default.get_concrete_function()
        self.state = _state_of(self._model)
        tf.saved_model.save(self, os.fspath(path), signatures={"serving_default": concrete})
        tasks = sorted(concrete.structured_outputs)
        _write_metadata(path, {"kind": self.kind, "tasks": tasks,
                               "candidate_feature": self.candidate_feature, "custom_ops": []})
        return os.fspath(path)


class RetrieveThenRank(tf.Module):
    """Retrieves `retrieve` candidates with an index, re-ranks them with a ranker, returns top k.

    Signatures:
      - `serving_default(**features) -> {"ids": [batch, k], "scores": [batch, k],
        "retrieval_scores": [batch, k], <task>: [batch, k] ...}`: `scores` is the fused ranker
        score (see the module docstring), best first; the per-task probabilities and the
        index's scores of the same candidates come along.
      - `top_k(**features, k: int32 []) -> same, [batch, k]` for `1 <= k <= max_k`.

    `features` is the union of the index's query inputs and the ranker's request inputs (a name
    in both must have the same spec and feeds both).

    Example:
    ```python
    servable = RetrieveThenRank(index, query_signature, ranker, request_signature,
                                retrieve=100, k=10, fusion={"click": 1, "like": 1})
    towerkit.serving.export(servable, "models/movielens", warmup_queries=queries)
    ```

    Args:
      index: A built `towerkit.index.Index` with a query model (its `max_k` must be >=
        `retrieve`).
      query_signature: dict[str, tf.TensorSpec]. The index's raw query inputs.
      ranker: The ranker (see `score_candidates`).
      request_signature: dict[str, tf.TensorSpec]. The ranker's per-request inputs.
      retrieve: int. Candidates retrieved per query (N).
      k: int. Results returned (K <= N).
      fusion: dict task -> exponent, or None for `DEFAULT_FUSION`.
      tasks: Sequence[str]. The ranker's output tasks (to validate `fusion`).
      candidate_feature: str. The ranker's candidate id feature.

    Raises:
      ValueError: `k` > `retrieve`, `retrieve` > the index's `max_k`, conflicting input specs,
        or fusion weights naming tasks the ranker does not predict.
    """

    kind = "retrieve_then_rank"

    def __init__(self, index: Index, query_signature: Mapping[str, tf.TensorSpec], ranker,
                 request_signature: Mapping[str, tf.TensorSpec], retrieve: int, k: int,
                 fusion: Optional[Mapping[str, float]] = None, tasks=("click", "like", "ctcvr"),
                 candidate_feature: str = "item_id"):
        super().__init__(name="towerkit_retrieve_then_rank")
        if not isinstance(index, Index):
            raise TypeError(f"index must be a built towerkit.index.Index, got "
                            f"{type(index).__name__}.")
        index._check_built()  # pylint: disable=protected-access
        for name, value in (("retrieve", retrieve), ("k", k)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        retrieve, k = int(retrieve), int(k)
        if k > retrieve:
            raise ValueError(f"k={k} exceeds retrieve={retrieve}: the ranker can only return "
                             "retrieved candidates; raise --retrieve or lower --k.")
        if retrieve > index.max_k:
            raise ValueError(f"retrieve={retrieve} exceeds the index's max_k={index.max_k}; "
                             f"build the index with k >= {retrieve}.")
        query_specs, request_specs = _specs(query_signature), _specs(request_signature)
        for name in set(query_specs) & set(request_specs):
            a, b = query_specs[name], request_specs[name]
            if a.dtype != b.dtype or a.shape.as_list() != b.shape.as_list():
                raise ValueError(f"input {name!r} is {a} for the index but {b} for the ranker; "
                                 "one input cannot feed both.")
        specs = {**request_specs, **query_specs}
        self.fusion = _check_fusion(fusion, tasks)
        self.retrieve, self.max_k, self.tasks = retrieve, k, tuple(tasks)
        self.candidate_feature = candidate_feature
        self._index, self._ranker = index, ranker
        fusion_weights, max_k = self.fusion, k

        def rank(features, top):
            retrieval_scores, ids = index.call({n: features[n] for n in query_specs}, k=retrieve)
            if ids.dtype != tf.string:
                ids = tf.strings.as_string(ids)
            probabilities = score_candidates(ranker, {n: features[n] for n in request_specs},
                                             ids, candidate_feature)
            fused = fuse(probabilities, fusion_weights)
            scores, order = tf.math.top_k(fused, k=top)
            outputs = {"ids": tf.gather(ids, order, batch_dims=1), "scores": scores,
                       "retrieval_scores": tf.gather(retrieval_scores, order, batch_dims=1)}
            for task, value in probabilities.items():
                outputs[task] = tf.gather(value, order, batch_dims=1)
            return outputs

        @tf.function(input_signature=[specs], autograph=False)
        def serving_default(features):
            return rank(features, max_k)

        @tf.function(input_signature=[specs, tf.TensorSpec([], tf.int32, name="k")],
                     autograph=False)
        def top_k(features, k):
            return rank(features, checked_k(k, max_k))

        self.serving_default, self.top_k = serving_default, top_k

    def save(self, path) -> str:
        """Writes the SavedModel (and `assets/towerkit_ranker.json`) to `path`."""
        signatures = {"serving_default": self.serving_default.get_concrete_function(),
                      "top_k": self.top_k.get_concrete_function()}
        self.state = _state_of(self._index) + _state_of(self._ranker)
        tf.saved_model.save(self, os.fspath(path), signatures=signatures)
        _write_metadata(path, {
            "kind": self.kind, "index": type(self._index).__name__, "retrieve": self.retrieve,
            "max_k": self.max_k, "fusion": self.fusion, "tasks": list(self.tasks),
            "num_candidates": self._index.num_candidates,
            "custom_ops": list(self._index.custom_ops)})
        return os.fspath(path)


def _write_metadata(path, metadata: dict) -> None:
    os.makedirs(os.path.join(os.fspath(path), "assets"), exist_ok=True)
    with open(os.path.join(os.fspath(path), "assets", METADATA_FILE), "w") as f:
        json.dump(metadata, f, indent=2)
