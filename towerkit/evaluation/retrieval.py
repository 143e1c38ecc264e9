"""Exact top-N retrieval over a whole catalogue, for offline evaluation."""

from __future__ import annotations

import numpy as np

__all__ = ["top_n_items"]


def top_n_items(query_embeddings: np.ndarray, item_embeddings: np.ndarray, n: int,
                exclude: tuple[int, ...] = (0,)) -> np.ndarray:
    """Brute-force dot-product top `n` items, best first.

    Multi-interest queries `[batch, num_interests, dim]` score each item by its best interest
    (max over interests), so an item appears at most once.

    Args:
      query_embeddings: np.ndarray `[batch, dim]` or `[batch, num_interests, dim]`.
      item_embeddings: np.ndarray `[num_items + 1, dim]`, row `i` = item index `i`.
      n: int. Items to return per query.
      exclude: item indices never returned (0: padding).

    Returns:
      `[batch, n]` int64 item indices, highest score first (ties by smaller index).

    Raises:
      ValueError: shapes do not match, or `n` exceeds the recommendable items.
    """
    q = np.asarray(query_embeddings, dtype=np.float32)
    items = np.asarray(item_embeddings, dtype=np.float32)
    if items.ndim != 2 or q.ndim not in (2, 3) or q.shape[-1] != items.shape[1]:
        raise ValueError(f"expected queries [batch, dim] or [batch, interests, dim] and items "
                         f"[num_items, dim] with the same dim; got {q.shape} and {items.shape}.")
    recommendable = items.shape[0] - len(set(exclude))
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= recommendable:
        raise ValueError(f"n={n!r} must be an int in [1, {recommendable}] (the catalogue size).")
    scores = q @ items.T
    if scores.ndim == 3:
        scores = scores.max(axis=1)
    scores[:, list(exclude)] = -np.inf
    top = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    rows = np.arange(len(scores))[:, None]
    # argpartition keeps an arbitrary subset of the items tied at the n-th score; where it left
    # some out, keep every item above that score and the smallest-index tied ones.
    kth = scores[rows, top].min(axis=1)
    tied_kept = (scores[rows, top] == kth[:, None]).sum(axis=1)
    tied_all = (scores == kth[:, None]).sum(axis=1)
    for r in np.flatnonzero(tied_all > tied_kept):
        above = np.flatnonzero(scores[r] > kth[r])
        tied = np.flatnonzero(scores[r] == kth[r])[:n - len(above)]
        top[r] = np.concatenate([above, tied])
    order = np.lexsort((top, -scores[rows, top]), axis=1)
    return top[rows, order].astype(np.int64)
