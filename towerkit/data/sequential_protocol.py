"""The sequential retrieval benchmark protocol (towerkit issue 5), shared by every sequence model.

* every rating is an implicit interaction; per user, sort by `(timestamp, item_id)`;
* keep items with >= 5 interactions, then users with >= 5 remaining interactions;
* items re-indexed `1..n` by descending frequency (ties by numeric item_id); 0 is padding;
* user ids sorted numerically, permuted with `numpy.random.RandomState(1230).permutation`,
  first 80% train, next 10% valid, last 10% test;
* train examples: for each train user and each position `k >= 1`, target item `k`,
  history = up to 20 items before `k`;
* valid/test users: the first `floor(80%)` of their sequence (at least 1) is the history (its
  last 20 items are fed), the rest is the ground truth; retrieval is over the whole catalogue
  and the history is not filtered.

On `movielens/100k-ratings`: 1,349 items, 77,377 training examples, 94 valid and 95 test users.

Example:
  >>> protocol = SequentialProtocol.from_tfds("100k-ratings")
  >>> ds = protocol.train_dataset(batch_size=256, seed=0)   # dicts of history, target, ...
  >>> test = protocol.split("test")                          # EvalSplit: features + ground truth
"""

from __future__ import annotations

import json
import functools
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from towerkit.data.sequences import (EvalSplit, UserSequences, build_user_sequences,
                                     load_user_sequences,
                                     make_eval_split, make_training_examples)

__all__ = ["SequentialProtocol", "SPLITS"]

SPLITS = ("train", "valid", "test")


class SequentialProtocol:
    """Users split, training examples and evaluation splits of the sequential benchmark.

    Args:
      sequences: UserSequences. The filtered, re-indexed interactions.
      max_history: int. History window fed to models (20 in the benchmark).
      split_seed: int. Seed of `numpy.random.RandomState(seed).permutation` over users.
      train_fraction: float. Share of users for training.
      valid_fraction: float. Share of users for validation; the rest is test.
      history_fraction: float. Share of a held-out user's sequence used as history.

    Attributes:
      sequences, num_items, item_ids, max_history;
      train_users, valid_users, test_users: np.ndarray of user indices;
      train_examples: dict of NumPy columns (see `make_training_examples`);
      train_item_counts: np.ndarray `[num_items + 1]` interactions of train users per item
        (popularity baseline);
      target_probability: np.ndarray `[num_items + 1]` float32, the share of training examples
        whose target is each item (the sampling probability for logQ correction);
      example_age_scale: `(t_max, span)` int Unix seconds of the training examples' example
        age `(t_max - t) / span` (see `make_training_examples`): the same scale turns a query
        time into the age of a query (`SequentialRetrievalModel`).
    """

    def __init__(self, sequences: UserSequences, max_history: int = 20, split_seed: int = 1230,
                 train_fraction: float = 0.8, valid_fraction: float = 0.1,
                 history_fraction: float = 0.8):
        if not (0 < train_fraction < 1 and 0 <= valid_fraction < 1
                and train_fraction + valid_fraction < 1):
            raise ValueError("train_fraction and valid_fraction must be in (0, 1) and sum below 1; "
                             f"got {train_fraction}, {valid_fraction}.")
        self.sequences = sequences
        self.max_history = int(max_history)
        self.history_fraction = float(history_fraction)
        users = np.arange(sequences.num_users)  # user_ids are sorted numerically already
        permuted = np.random.RandomState(split_seed).permutation(users)
        a = int(train_fraction * len(users))
        b = int((train_fraction + valid_fraction) * len(users))
        self.train_users, self.valid_users, self.test_users = permuted[:a], permuted[a:b], permuted[b:]
        self.train_examples = make_training_examples(sequences, self.train_users, self.max_history)
        n = sequences.num_items + 1
        self.train_item_counts = np.bincount(
            np.concatenate([sequences.sequence(u) for u in self.train_users]), minlength=n)
        self.train_item_counts[0] = 0
        times = self.train_examples["timestamp"]
        self.example_age_scale = ((int(times.max()), max(int(times.max() - times.min()), 1))
                                  if len(times) else (0, 1))
        targets = np.bincount(self.train_examples["target"], minlength=n)
        self.target_probability = (targets / max(targets.sum(), 1)).astype(np.float32)

    @classmethod
    def from_tfds(cls, config: str = "100k-ratings", data_dir: Optional[str] = None,
                  **kwargs) -> "SequentialProtocol":
        """Builds the protocol from a TFDS MovieLens ratings config (cached per process).

        `kwargs` are `SequentialProtocol` arguments plus `min_item_interactions` and
        `min_user_interactions` (see `build_user_sequences`).
        """
        key = _protocol_key(kwargs)
        return _cached_protocol(config, data_dir, key)

    @classmethod
    def from_run_config(cls, config: dict, **kwargs) -> "SequentialProtocol":
        """The protocol of a run config's data, tfds or the caller's files (cached per
        process); `kwargs` as in `from_tfds`."""
        from towerkit.data import recipe_data  # pylint: disable=import-outside-toplevel

        if not recipe_data.is_file_data(config):
            return cls.from_tfds(recipe_data.tfds_name(config), data_dir=config.get("data_dir"),
                                 **kwargs)
        key = _protocol_key(kwargs)
        return _cached_file_protocol(json.dumps(config["data"], sort_keys=True), key)

    @property
    def num_items(self) -> int:
        return self.sequences.num_items

    @property
    def item_ids(self) -> np.ndarray:
        """`[num_items + 1]` bytes TFDS movie ids; `item_ids[0] == b""` is padding."""
        return self.sequences.item_ids

    @property
    def user_feature_sizes(self) -> dict[str, int]:
        """Vocabulary size (including the 0 = unknown code) of each user profile feature."""
        return {k: len(v) + 1 for k, v in self.sequences.user_feature_vocabularies.items()}

    def users(self, split: str) -> np.ndarray:
        """User indices of `split` (`train`, `valid` or `test`)."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}: expected one of {SPLITS}.")
        return {"train": self.train_users, "valid": self.valid_users, "test": self.test_users}[split]

    def split(self, split: str) -> EvalSplit:
        """Histories and ground truth of the users of `split` (see `make_eval_split`)."""
        cache = self.__dict__.setdefault("_splits", {})
        if split not in cache:
            cache[split] = make_eval_split(self.sequences, self.users(split), self.max_history,
                                           self.history_fraction)
        return cache[split]

    def train_dataset(self, batch_size: int, seed: Optional[int] = None,
                      features: Optional[Sequence[str]] = None,
                      shuffle: bool = True) -> tf.data.Dataset:
        """`tf.data` pipeline of training examples: batches of feature dicts.

        Args:
          batch_size: int.
          seed: int or None. Shuffle seed (reshuffled each epoch).
          features: names to include (default: `history`, `history_length`, `target`,
            `example_age` and the user profile features; held-out users also have
            `query_timestamp`).
          shuffle: bool.
        """
        columns = self._select(self.train_examples, features)
        ds = tf.data.Dataset.from_tensor_slices(columns)
        if shuffle:
            ds = ds.shuffle(len(self.train_examples["target"]), seed=seed,
                            reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def query_dataset(self, split: str, batch_size: int = 1024,
                      features: Optional[Sequence[str]] = None) -> tf.data.Dataset:
        """`tf.data` of the query inputs of held-out users, in `split(split).users` order."""
        return tf.data.Dataset.from_tensor_slices(
            self._select(self.split(split).features, features)).batch(batch_size)

    def _select(self, columns, features):
        default = ["history", "history_length", "target", "example_age", "query_timestamp",
                   *self.sequences.user_features]
        # The default takes what the columns have (`query_timestamp`: held-out users only).
        names = (list(features) if features is not None else
                 [n for n in default if n in columns or n == "target"])
        unknown = [n for n in names if n not in columns and n != "target"]
        if unknown:
            raise ValueError(f"Unknown feature(s) {unknown}; available: {sorted(columns)}.")
        return {n: columns[n] for n in names if n in columns}


_PROTOCOL_DEFAULTS = {"max_history": 20, "split_seed": 1230, "train_fraction": 0.8,
                      "valid_fraction": 0.1, "history_fraction": 0.8,
                      "min_item_interactions": 5, "min_user_interactions": 5}


def _protocol_key(kwargs: dict) -> tuple:
    """The checked protocol arguments with their defaults, as a hashable cache key."""
    unknown = set(kwargs) - set(_PROTOCOL_DEFAULTS)
    if unknown:
        raise TypeError(f"Unknown protocol argument(s) {sorted(unknown)}; expected some of "
                        f"{sorted(_PROTOCOL_DEFAULTS)}.")
    return tuple(sorted({**_PROTOCOL_DEFAULTS, **kwargs}.items()))


@functools.lru_cache(maxsize=4)
def _cached_protocol(config, data_dir, kwargs):
    kwargs = dict(kwargs)
    seq_kwargs = {k: kwargs.pop(k) for k in ("min_item_interactions", "min_user_interactions")
                  if k in kwargs}
    return SequentialProtocol(load_user_sequences(config, data_dir, **seq_kwargs), **kwargs)


@functools.lru_cache(maxsize=4)
def _cached_file_protocol(spec_json, kwargs):
    from towerkit.data import recipe_data  # pylint: disable=import-outside-toplevel

    kwargs = dict(kwargs)
    seq_kwargs = {k: kwargs.pop(k) for k in ("min_item_interactions", "min_user_interactions")
                  if k in kwargs}
    columns = recipe_data.rating_columns({"data": json.loads(spec_json)})
    if "timestamp" not in columns:
        raise ValueError("The sequential recipes order each user's items by time: pass "
                         "--time-column C (the log's event-time column).")
    return SequentialProtocol(build_user_sequences(columns, **seq_kwargs), **kwargs)
