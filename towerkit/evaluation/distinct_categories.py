"""`distinct_categories`: how many different categories a top-N list covers (list diversity)."""

from __future__ import annotations

import numpy as np

__all__ = ["distinct_categories"]


def distinct_categories(topn: np.ndarray, item_categories: np.ndarray) -> float:
    """Mean over users of the number of distinct categories among their top-N items.

    Args:
      topn: int `[users, N]` item indices.
      item_categories: int `[num_items + 1]` (one category per item, e.g. its cluster) or
        `[num_items + 1, m]` (several per item, 0 = padding, e.g. MovieLens genre ids + 1).
        Negative single categories (the padding row's -1) are not counted.

    Returns:
      float: the mean count (1..min(N, categories)); with several categories per item, a
      category counts when any listed item has it.

    Raises:
      ValueError: `topn` is not 2-D, or indexes outside `item_categories`.

    Example:
      >>> distinct_categories(np.array([[1, 2, 3]]), np.array([-1, 0, 0, 5]))
      2.0
    """
    topn = np.asarray(topn)
    cats = np.asarray(item_categories)
    if topn.ndim != 2:
        raise ValueError(f"topn must be [users, N] item indices, got shape {topn.shape}.")
    if topn.size and (topn.min() < 0 or topn.max() >= len(cats)):
        raise ValueError(f"topn holds item indices outside [0, {len(cats)}): pass the category "
                         "table of the same catalogue.")
    if cats.ndim == 1:
        values = cats[topn]
        counts = [len(np.unique(row[row >= 0])) for row in values]
    elif cats.ndim == 2:
        values = cats[topn].reshape(len(topn), -1)
        counts = [len(np.unique(row[row > 0])) for row in values]
    else:
        raise ValueError(f"item_categories must be [num_items + 1] or [num_items + 1, m], got "
                         f"shape {cats.shape}.")
    return float(np.mean(counts)) if counts else float("nan")
