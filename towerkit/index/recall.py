"""Recall of an index against exact search, and search-parameter tuning to a recall target."""

import logging
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from towerkit.index.base import Index
from towerkit.index.brute_force import BruteForce

_LOG = logging.getLogger("towerkit.index")


def exact_reference(index: Index, k: Optional[int] = None) -> BruteForce:
    """A `BruteForce` over the same candidates, identifiers and query model as `index`."""
    index._check_built()  # pylint: disable=protected-access
    reference = BruteForce(query_model=index.query_model, k=k or index.max_k)
    return reference.index(index.candidate_embeddings, index.identifiers)


def recall_at_k(index: Index, queries, reference: Optional[Index] = None, k: int = 10,
                batch_size: int = 256) -> float:
    """Mean fraction of the exact top-k identifiers that `index` returns in its top k.

    Args:
        index: a built index.
        queries: query features or embeddings (whatever `index` takes), `[num_queries, ...]`.
            Held-out queries, not the candidates.
        reference: index giving the true neighbours; an exact `BruteForce` over the same
            candidates by default.
        k: int. Cutoff (`<= index.max_k`).
        batch_size: int. Queries per call.

    Returns:
        recall@k in [0, 1].

    Raises:
        ValueError: if `k` exceeds `max_k` of either index or there are no queries.
    """
    if reference is None:
        reference = exact_reference(index, k)
    if k > index.max_k or k > reference.max_k:
        raise ValueError(f"recall@{k} needs k <= max_k of both indexes ({index.max_k}, "
                         f"{reference.max_k}).")
    batches = _batches(queries, batch_size)
    hits, total = 0, 0
    for batch in batches:
        _, found = index(batch, k=k)
        _, truth = reference(batch, k=k)
        for f, t in zip(found.numpy(), truth.numpy()):
            hits += len(set(f.tolist()) & set(t.tolist()))
            total += k
    if total == 0:
        raise ValueError("recall_at_k needs at least one query.")
    return hits / total


def tune_for_recall(index: Index, queries, target_recall: float = 0.95, k: int = 10,
                    reference: Optional[Index] = None) -> dict:
    """Chooses the cheapest search setting of `index` reaching `target_recall` on `queries`.

    Works for any index that implements `tuning_grid(k) -> list[dict]` (settings ordered from
    cheapest to most expensive) and `set_search_params(**setting)`: ScaNN (leaves searched,
    reorder depth), Annoy (`search_k`) and the portable index. The index is left set to the
    chosen setting (the most expensive one tried if none reaches the target, with a warning).
    An index searching a small catalogue exhaustively (`Index.EXHAUSTIVE_MAX_FLOATS`) is switched
    to its ANN structures first.

    Args:
        index: a built index with `tuning_grid` and `set_search_params`.
        queries: held-out queries (not the candidates), as `index` takes them.
        target_recall: float in (0, 1].
        k: int. The recall cutoff.
        reference: exact index; a `BruteForce` over the same candidates by default.

    Returns:
        dict with `setting`, `recall`, `target_recall`, `reached`, `k` and `tried`
        (`[{"setting", "recall", "seconds"}]`).

    Raises:
        ValueError: bad target or an index without a tuning grid.
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1]; got {target_recall}.")
    if not hasattr(index, "tuning_grid") or not hasattr(index, "set_search_params"):
        raise ValueError(f"{type(index).__name__} has no search parameters to tune "
                         "(exact indexes always have recall 1).")
    if getattr(index, "exhaustive", False):
        index.set_exhaustive(False)  # tune the ANN structures, not the small-catalogue exact path
    reference = reference or exact_reference(index, k)
    queries = list(_batches(queries, 256))
    truth = [reference(b, k=k)[1].numpy() for b in queries]
    tried = []
    for setting in index.tuning_grid(k):
        index.set_search_params(**setting)
        start = time.perf_counter()
        found = [index(b, k=k)[1].numpy() for b in queries]
        seconds = time.perf_counter() - start
        recall = float(np.mean([len(set(f) & set(t)) / k for fb, tb in zip(found, truth)
                                for f, t in zip(fb.tolist(), tb.tolist())]))
        tried.append({"setting": dict(setting), "recall": recall, "seconds": seconds})
        _LOG.info("%s: %s -> recall@%d %.4f", type(index).__name__, setting, k, recall)
        if recall >= target_recall:
            break
    reached_any = tried[-1]["recall"] >= target_recall
    best = tried[-1] if reached_any else max(tried, key=lambda t: t["recall"])
    index.set_search_params(**best["setting"])
    reached = best["recall"] >= target_recall
    if not reached:
        _LOG.warning("%s: no setting reached recall@%d >= %.3f (best %.4f with %s): rebuild with "
                     "more leaves/trees.", type(index).__name__, k, target_recall, best["recall"],
                     best["setting"])
    return {"setting": best["setting"], "recall": best["recall"], "target_recall": target_recall,
            "reached": reached, "k": k, "tried": tried}


def _batches(queries, batch_size):
    if isinstance(queries, dict):
        n = int(next(iter(queries.values())).shape[0])
        return [{key: v[i:i + batch_size] for key, v in queries.items()}
                for i in range(0, n, batch_size)]
    queries = queries if isinstance(queries, tf.Tensor) else np.asarray(queries)
    n = int(queries.shape[0])
    return [queries[i:i + batch_size] for i in range(0, n, batch_size)]
