"""Train/test splits of an interaction log: random, by time, or by held-out users.

Each split returns `(train, test)` `Interactions` (rows in source order for `split_random`
and `split_users`, in time order for `split_by_time`); the same arguments always give the
same split. The index-level helpers are in `towerkit.data.splits`.

Example:
  >>> train, test = split_by_time(log, test_fraction=0.1)     # the latest 10% of events
  >>> train, test = split_users(log, test_fraction=0.1, seed=0)  # 10% of users held out
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from towerkit.data import splits
from towerkit.data.interactions import Interactions

__all__ = ["split_random", "split_by_time", "split_users"]


def _check_fraction(test_fraction: float) -> None:
    if not isinstance(test_fraction, (float, int)) or not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")


def split_random(log: Interactions, test_fraction: float = 0.2,
                 seed: int = 42) -> Tuple[Interactions, Interactions]:
    """A uniformly random split of the rows (NumPy PCG64 seeded with `seed`).

    Raises:
      ValueError: `test_fraction` outside `(0, 1)` or a side that would be empty.
    """
    _check_fraction(test_fraction)
    train, test = splits.random_split(len(log), test_fraction, seed)
    return log.take(train), log.take(test)


def split_by_time(log: Interactions, cutoff: Optional[int] = None,
                  test_fraction: Optional[float] = None) -> Tuple[Interactions, Interactions]:
    """A global time split: events at or after `cutoff`, or the latest `test_fraction`, test.

    Args:
      log: Interactions with a timestamp.
      cutoff: int or None. First timestamp of the test period (same unit as the log).
      test_fraction: float or None. Share of the latest events for testing (ties broken by
        row order). Pass exactly one of `cutoff` and `test_fraction`.

    Raises:
      ValueError: no timestamp, both or neither of `cutoff`/`test_fraction`, or a cutoff that
        leaves one side empty.
    """
    if "timestamp" not in log:
        raise ValueError("split_by_time needs a timestamp; map one with Columns(time=...).")
    if (cutoff is None) == (test_fraction is None):
        raise ValueError("Pass exactly one of cutoff= and test_fraction= to split_by_time.")
    times = log["timestamp"]
    if test_fraction is not None:
        _check_fraction(test_fraction)
        train, test = splits.temporal_split(times, test_fraction)
        return log.take(train), log.take(test)
    if not isinstance(cutoff, (int, np.integer)):
        raise TypeError(f"cutoff must be an int in the log's time unit, got {cutoff!r}.")
    order = np.argsort(times, kind="stable")
    is_test = times[order] >= cutoff
    if is_test.all() or not is_test.any():
        raise ValueError(f"cutoff={cutoff} leaves one side empty: timestamps span "
                         f"[{times.min()}, {times.max()}].")
    return log.take(order[~is_test]), log.take(order[is_test])


def split_users(log: Interactions, test_fraction: float = 0.2,
                seed: int = 42) -> Tuple[Interactions, Interactions]:
    """Held-out users: a seeded random `test_fraction` of the distinct users, with all of
    their interactions, form the test set.

    Raises:
      ValueError: `test_fraction` outside `(0, 1)`, or too few users for both sides.
    """
    _check_fraction(test_fraction)
    users = log["user"]
    unique, inverse = np.unique(users.astype(bytes) if users.dtype == object else users,
                                return_inverse=True)
    num_test = int(round(len(unique) * test_fraction))
    if not 0 < num_test < len(unique):
        raise ValueError(f"test_fraction={test_fraction} of {len(unique)} users leaves one side "
                         "empty; use more users or another fraction.")
    held_out = np.zeros(len(unique), dtype=bool)
    held_out[np.random.default_rng(seed).permutation(len(unique))[:num_test]] = True
    is_test = held_out[inverse.ravel()]
    return log.take(np.flatnonzero(~is_test)), log.take(np.flatnonzero(is_test))
