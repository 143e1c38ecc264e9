"""Deterministic train/test splits over example indices.

Splits return index arrays into a table of NumPy columns (see `movielens.load_columns`); use
`take_rows` to slice the columns. The same arguments always give the same split.
"""

from __future__ import annotations

from typing import Mapping, Tuple

import numpy as np
import tensorflow as tf

__all__ = ["tfrs_tutorial_split", "random_split", "temporal_split", "take_rows"]


def _check_sizes(num_examples: int, train_size: int) -> None:
    if not isinstance(num_examples, (int, np.integer)) or num_examples < 2:
        raise ValueError(f"num_examples must be an integer >= 2, got {num_examples!r}.")
    if not isinstance(train_size, (int, np.integer)) or not 0 < train_size < num_examples:
        raise ValueError(
            f"train_size must be an integer in [1, {num_examples - 1}], got {train_size!r}.")


def tfrs_tutorial_split(num_examples: int, train_size: int, seed: int = 42,
                        buffer_size: int = 100_000) -> Tuple[np.ndarray, np.ndarray]:
    """The TFRS tutorials' split, reproduced exactly as index arrays.

    The tutorials run `tf.random.set_seed(seed)`, then
    `ds.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=False)`, `take(train_size)` for
    training and `skip(train_size)` for testing. tf.data's shuffle order depends only on the
    seeds, the buffer size and the number of elements, so shuffling `range(num_examples)` the
    same way (in a private graph, leaving the caller's global seed alone) yields the permutation.

    Args:
      num_examples: int. Rows in the dataset (100_000 for `100k-ratings`).
      train_size: int. Rows in the training split (80_000 in the tutorials).
      seed: int. Both the global and the op seed, as in the tutorials.
      buffer_size: int. The shuffle buffer size (100_000 in the tutorials).

    Returns:
      `(train_indices, test_indices)`, int64 arrays of lengths `train_size` and
      `num_examples - train_size`, in the tutorial's order.

    Raises:
      ValueError: sizes out of range.
    """
    _check_sizes(num_examples, train_size)
    if buffer_size < 1:
        raise ValueError(f"buffer_size must be >= 1, got {buffer_size}.")
    with tf.Graph().as_default():
        tf.random.set_seed(seed)  # the graph-level seed of this private graph only
        ds = tf.data.Dataset.range(num_examples).shuffle(
            buffer_size, seed=seed, reshuffle_each_iteration=False).batch(num_examples)
        batch = tf.compat.v1.data.make_one_shot_iterator(ds).get_next()
        with tf.compat.v1.Session() as session:
            permutation = session.run(batch)
    return permutation[:train_size], permutation[train_size:]


def random_split(num_examples: int, test_fraction: float = 0.2,
                 seed: int = 42) -> Tuple[np.ndarray, np.ndarray]:
    """A uniformly random split with NumPy's PCG64 generator.

    Returns:
      `(train_indices, test_indices)`, each sorted ascending.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    num_test = int(round(num_examples * test_fraction))
    _check_sizes(num_examples, num_examples - num_test)
    permutation = np.random.default_rng(seed).permutation(num_examples)
    return np.sort(permutation[num_test:]), np.sort(permutation[:num_test])


def temporal_split(timestamps: np.ndarray,
                   test_fraction: float = 0.2) -> Tuple[np.ndarray, np.ndarray]:
    """A global time split: the latest `test_fraction` of events form the test set.

    Ties are broken by row index (a stable sort), so the split is deterministic.

    Returns:
      `(train_indices, test_indices)` in time order.
    """
    timestamps = np.asarray(timestamps)
    if timestamps.ndim != 1:
        raise ValueError(f"timestamps must be 1-D, got shape {timestamps.shape}.")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    num_test = int(round(len(timestamps) * test_fraction))
    _check_sizes(len(timestamps), len(timestamps) - num_test)
    order = np.argsort(timestamps, kind="stable")
    return order[:-num_test], order[-num_test:]


def take_rows(columns: Mapping[str, np.ndarray], indices: np.ndarray) -> dict:
    """Returns `{name: column[indices]}` for every column."""
    indices = np.asarray(indices)
    if indices.dtype.kind not in ("i", "u"):
        raise TypeError(f"indices must be integers, got dtype {indices.dtype}.")
    return {name: np.asarray(column)[indices] for name, column in columns.items()}
