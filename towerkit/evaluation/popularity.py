"""Popularity baseline: every user gets the most frequent items."""

from __future__ import annotations

import numpy as np

__all__ = ["popularity_topn"]


def popularity_topn(item_counts: np.ndarray, num_users: int, n: int,
                    exclude: tuple[int, ...] = (0,)) -> np.ndarray:
    """The `n` most frequent items for each of `num_users` users.

    Args:
      item_counts: np.ndarray `[num_items + 1]`. Interaction count per item index (count the
        training data only).
      num_users: int. Rows of the result.
      n: int. Items per user.
      exclude: item indices never recommended (0: padding).

    Returns:
      `[num_users, n]` int64 item indices, most frequent first, ties by smaller index.

    Raises:
      ValueError: `n` exceeds the number of recommendable items.
    """
    counts = np.asarray(item_counts, dtype=np.float64).copy()
    if counts.ndim != 1:
        raise ValueError(f"item_counts must be 1-D, got shape {counts.shape}.")
    allowed = np.setdiff1d(np.arange(len(counts)), np.asarray(exclude, dtype=np.int64))
    if not 1 <= n <= len(allowed):
        raise ValueError(f"n={n} must be in [1, {len(allowed)}] (the recommendable items).")
    order = allowed[np.lexsort((allowed, -counts[allowed]))][:n]
    return np.tile(order.astype(np.int64), (num_users, 1))
