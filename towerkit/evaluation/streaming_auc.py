"""Exact ROC AUC over a whole split, accumulated batch by batch."""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["StreamingAUC", "roc_auc"]


def roc_auc(labels, scores, weights: Optional[np.ndarray] = None) -> float:
    """Exact ROC AUC (Mann-Whitney U with mid-ranks for ties).

    `AUC = P(score of a random positive > score of a random negative) + 0.5 P(tie)`.

    Args:
      labels: `[n]` 0/1 labels.
      scores: `[n]` scores (any monotone scale: probabilities or logits).
      weights: `[n]` or None. Rows with weight 0 are left out (e.g. non-clicks for `like`); other
        weights must be 1 (the estimate is over examples, not weighted).

    Returns:
      float; NaN when either class is empty.

    Raises:
      ValueError: shapes differ, labels are not 0/1, or weights are not 0/1.
    """
    labels, scores = _masked(labels, scores, weights)
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1.")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN.")
    num_pos = labels.sum()
    num_neg = len(labels) - num_pos
    if num_pos == 0 or num_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # Mid-ranks: every member of a tie group gets the mean of the ranks it spans (1-based).
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(sorted_scores)]
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    u = ranks[labels == 1].sum() - num_pos * (num_pos + 1) / 2.0
    return float(u / (num_pos * num_neg))


class StreamingAUC:
    """Accumulates labels and scores over batches; `result()` is the exact AUC of all of them.

    AUC averaged per batch is biased (and batches without a positive or a negative have none);
    this keeps every score (8 bytes per example plus the label) and ranks them once.

    Example:
    ```python
    auc = StreamingAUC()
    for batch in dataset:
        auc.update(batch["click"], model(batch)["click"])
    auc.result()
    ```
    """

    def __init__(self):
        self._labels, self._scores = [], []

    def update(self, labels, scores, weights=None) -> None:
        """Adds a batch; rows with weight 0 are skipped (see `roc_auc`).

        Raises:
          ValueError: shapes differ or the mask is not 0/1.
        """
        labels, scores = _masked(labels, scores, weights)
        self._labels.append(labels)
        self._scores.append(scores)

    @property
    def count(self) -> int:
        """Examples accumulated."""
        return int(sum(len(x) for x in self._labels))

    def result(self) -> float:
        """The exact AUC over everything added (NaN when a class is empty)."""
        if not self._labels:
            return float("nan")
        return roc_auc(np.concatenate(self._labels), np.concatenate(self._scores))

    def reset(self) -> None:
        """Forgets everything added."""
        self._labels, self._scores = [], []


def _masked(labels, scores, weights=None) -> tuple:
    """Flat float64 `(labels, scores)`, keeping the rows where the 0/1 `weights` mask is 1.

    Raises:
      ValueError: shapes differ or the mask is not 0/1.
    """
    labels = np.asarray(labels, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in length.")
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64).ravel()
        if weights.shape != labels.shape or not np.isin(weights, (0.0, 1.0)).all():
            raise ValueError("weights must be a 0/1 mask aligned with labels.")
        labels, scores = labels[weights == 1], scores[weights == 1]
    return labels, scores
