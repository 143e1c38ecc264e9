"""The sequential protocol on any interaction log.

`build_sequences` is `towerkit.data.sequences.build_user_sequences` for a generic
`Interactions` (any source, any column names): the same filters, re-indexing and ordering,
with the ids' own order wherever the MovieLens path uses the numeric MovieLens id:

* items with >= `min_item_interactions` interactions are kept, then users with
  >= `min_user_interactions` remaining ones;
* items are re-indexed `1..n` by descending frequency, ties by ascending id;
* each user's interactions are ordered by `(timestamp, item id)`; users by ascending id;
* every column of the user feature table becomes a categorical profile feature, coded
  `1..vocab` in ascending value order (0 = unknown).

Ids order as integers when they are integers and bytewise when they are strings, so a log
whose ids are renamed in an order-preserving way (e.g. `"u000042"` for user 42) gives the
identical protocol.

Example:
  >>> log = towerkit.data.sources.read("events.csv", Columns(user="uid", item="sku", time="ts"))
  >>> protocol = sequential_protocol(log)
  >>> protocol.train_dataset(batch_size=256, seed=0)
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from towerkit.data.interactions import Interactions
from towerkit.data.sequences import UserSequences
from towerkit.data.sequential_protocol import SequentialProtocol

__all__ = ["build_sequences", "sequential_protocol"]


def _ranks(ids: np.ndarray):
    """`(unique ids, rank of each row)`, ranks in the ids' ascending order."""
    keyed = ids.astype(bytes) if ids.dtype == object else ids
    unique, inverse = np.unique(keyed, return_inverse=True)
    return unique, inverse.astype(np.int64)


def _as_bytes(ids: np.ndarray) -> np.ndarray:
    out = np.empty(len(ids), dtype=object)
    out[:] = [v if isinstance(v, bytes) else str(int(v)).encode() for v in ids.tolist()]
    return out


def build_sequences(interactions: Interactions, min_item_interactions: int = 5,
                    min_user_interactions: int = 5,
                    user_features: Optional[Sequence[str]] = None) -> UserSequences:
    """Per-user, time-ordered item sequences of a log (see the module docstring).

    Args:
      interactions: Interactions. Must have a `timestamp` field.
      min_item_interactions: int. Minimum interactions an item needs to be kept.
      min_user_interactions: int. Minimum remaining interactions a user needs to be kept.
      user_features: names of user feature table columns to use as profile features
        (default: every column of the table; none without a table).

    Returns:
      `UserSequences` whose `user_ids` and `item_ids` are `bytes` (integers as their decimal
      form, as in the MovieLens path).

    Raises:
      ValueError: no timestamp field, a bad minimum, an unknown feature name, or nothing
        survives the filters.
    """
    if not isinstance(interactions, Interactions):
        raise TypeError(f"interactions must be towerkit.data.Interactions, got "
                        f"{type(interactions).__name__}; read the log with towerkit.data.sources.")
    if "timestamp" not in interactions:
        raise ValueError("The sequential protocol orders events by time, but this log has no "
                         "timestamp; map one with Columns(time=...).")
    for name, value in (("min_item_interactions", min_item_interactions),
                        ("min_user_interactions", min_user_interactions)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    table = interactions.user_features
    names = list(table.columns) if (table is not None and user_features is None) else \
        list(user_features or [])
    if names and table is None:
        raise ValueError(f"user_features={names} but the log has no user feature table.")
    unknown = [n for n in names if n not in table.columns] if names else []
    if unknown:
        raise ValueError(f"Unknown user feature(s) {unknown}; the table has {list(table.columns)}.")

    user_uniq, users = _ranks(interactions["user"])
    item_uniq, items = _ranks(interactions["item"])
    times = interactions["timestamp"]
    item_counts = np.bincount(items, minlength=len(item_uniq))
    keep = item_counts[items] >= min_item_interactions
    user_counts = np.bincount(users[keep], minlength=len(user_uniq))
    keep &= user_counts[users] >= min_user_interactions
    if not keep.any():
        raise ValueError("No interaction survives the minimum-interaction filters; lower them.")
    users, items, times = users[keep], items[keep], times[keep]

    # Items 1..n by descending frequency, ties by ascending id (= ascending rank).
    kept_items, kept_counts = np.unique(items, return_counts=True)
    by_freq = np.lexsort((kept_items, -kept_counts))
    index_of_rank = np.zeros(len(item_uniq), dtype=np.int64)
    index_of_rank[kept_items[by_freq]] = np.arange(1, len(kept_items) + 1)

    order = np.lexsort((items, times, users))  # by user, then time, then item id
    users, times = users[order], times[order]
    items = index_of_rank[items[order]]
    kept_users, user_lengths = np.unique(users, return_counts=True)
    offsets = np.concatenate([[0], np.cumsum(user_lengths)]).astype(np.int64)

    raw_users = interactions["user"]
    user_ids = _as_bytes(np.unique(raw_users if raw_users.dtype != object
                                   else raw_users.astype(bytes))[kept_users])
    item_ids = np.empty(len(kept_items) + 1, dtype=object)
    item_ids[0] = b""
    raw_items = interactions["item"]
    item_ids[1:] = _as_bytes(np.unique(raw_items if raw_items.dtype != object
                                       else raw_items.astype(bytes))[kept_items[by_freq]])

    profile, vocabularies = {}, {}
    if names:
        ids = np.unique(raw_users if raw_users.dtype != object else raw_users.astype(bytes))
        ids = ids[kept_users]
        rows = table.lookup(ids.astype(object) if ids.dtype.kind == "S" else ids)
        for name in names:
            vocab, codes = np.unique(rows[name], return_inverse=True)
            profile[name] = codes.astype(np.int64) + 1
            vocabularies[name] = vocab

    return UserSequences(
        user_ids=user_ids, item_ids=item_ids, items=items, timestamps=times.astype(np.int64),
        offsets=offsets, item_counts=np.concatenate([[0], kept_counts[by_freq]]).astype(np.int64),
        user_features=profile, user_feature_vocabularies=vocabularies)


def sequential_protocol(interactions: Interactions, min_item_interactions: int = 5,
                        min_user_interactions: int = 5,
                        user_features: Optional[Sequence[str]] = None,
                        **kwargs) -> SequentialProtocol:
    """The sequential benchmark protocol (`SequentialProtocol`) on any log.

    Args:
      interactions: Interactions with a timestamp.
      min_item_interactions, min_user_interactions, user_features: as `build_sequences`.
      **kwargs: `SequentialProtocol` arguments (`max_history`, `split_seed`,
        `train_fraction`, `valid_fraction`, `history_fraction`).

    Returns:
      The protocol: user split, training examples and evaluation splits.
    """
    return SequentialProtocol(build_sequences(interactions, min_item_interactions,
                                              min_user_interactions, user_features), **kwargs)
