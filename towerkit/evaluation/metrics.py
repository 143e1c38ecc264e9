"""Top-N ranking metrics over NumPy arrays: Recall@N, HR@N and NDCG@N (binary gains).

For a user with ranked list `topN` (best first) and ground-truth set `gt`:

* Recall@N = |topN[:N] ∩ gt| / |gt|, averaged over users;
* HR@N = 1 if topN[:N] ∩ gt is non-empty else 0, averaged over users (share of users with a hit);
* NDCG@N = DCG / IDCG with DCG = sum over ranks r (1-based) of hits 1 / log2(r + 1), and IDCG the
  DCG of `min(N, |gt|)` hits at the top, averaged over users.

Example:
  >>> topn = np.array([[3, 1, 2]])
  >>> recall_at_n(topn, [np.array([1, 4])], n=2)
  0.5
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

__all__ = ["hits_matrix", "recall_at_n", "hit_rate_at_n", "ndcg_at_n", "evaluate_topn"]


def _check(topn: np.ndarray, ground_truth: Sequence, n: int) -> np.ndarray:
    topn = np.asarray(topn)
    if topn.ndim != 2:
        raise ValueError(f"topn must be [num_users, N], got shape {topn.shape}.")
    if len(ground_truth) != topn.shape[0]:
        raise ValueError(f"ground_truth has {len(ground_truth)} users but topn has "
                         f"{topn.shape[0]}: pass one ground-truth array per row of topn.")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}.")
    if n > topn.shape[1]:
        raise ValueError(f"n={n} exceeds the {topn.shape[1]} ranked items per user; retrieve "
                         "at least n items.")
    if any(len(np.atleast_1d(g)) == 0 for g in ground_truth):
        raise ValueError("a user has an empty ground truth; drop users with nothing to predict.")
    return topn[:, :n]


def hits_matrix(topn: np.ndarray, ground_truth: Sequence, n: int) -> np.ndarray:
    """`[num_users, n]` bool: whether the item ranked `r` is in the user's ground truth.

    Duplicates inside a ranked list count once (only their first occurrence is a hit).
    """
    top = _check(topn, ground_truth, n)
    hits = np.zeros(top.shape, dtype=bool)
    for u, (row, gt) in enumerate(zip(top, ground_truth)):
        _, first = np.unique(row, return_index=True)
        seen_first = np.zeros(len(row), dtype=bool)
        seen_first[first] = True
        hits[u] = np.isin(row, np.asarray(gt)) & seen_first
    return hits


def _gt_sizes(ground_truth: Sequence) -> np.ndarray:
    return np.array([len(np.unique(np.asarray(g))) for g in ground_truth], dtype=np.float64)


def recall_at_n(topn: np.ndarray, ground_truth: Sequence, n: int) -> float:
    """Mean over users of `|topN ∩ gt| / |gt|` (`gt` as a set)."""
    hits = hits_matrix(topn, ground_truth, n)
    return float(np.mean(hits.sum(axis=1) / _gt_sizes(ground_truth)))


def hit_rate_at_n(topn: np.ndarray, ground_truth: Sequence, n: int) -> float:
    """Share of users with at least one ground-truth item in their top `n`."""
    return float(np.mean(hits_matrix(topn, ground_truth, n).any(axis=1)))


def ndcg_at_n(topn: np.ndarray, ground_truth: Sequence, n: int) -> float:
    """Mean over users of `DCG(topN) / IDCG(min(N, |gt|))` with binary gains."""
    hits = hits_matrix(topn, ground_truth, n)
    discounts = 1.0 / np.log2(np.arange(2, n + 2))
    dcg = hits @ discounts
    ideal = np.minimum(_gt_sizes(ground_truth), n).astype(np.int64)
    idcg = np.cumsum(discounts)[ideal - 1]
    return float(np.mean(dcg / idcg))


def evaluate_topn(topn: np.ndarray, ground_truth: Sequence,
                  ns: Iterable[int] = (20, 50)) -> dict[str, float]:
    """All three metrics at every `n`: keys `recall@N`, `hr@N`, `ndcg@N`."""
    out = {}
    for n in ns:
        out[f"recall@{n}"] = recall_at_n(topn, ground_truth, n)
        out[f"hr@{n}"] = hit_rate_at_n(topn, ground_truth, n)
        out[f"ndcg@{n}"] = ndcg_at_n(topn, ground_truth, n)
    return out
