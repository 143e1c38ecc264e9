"""An interaction log in memory: user, item and optional timestamp, rating and weight.

Every source (see `towerkit.data.sources`) returns `Interactions`; splits, vocabularies, the
sequential protocol and the training shards take them, whatever the log's column names were.

Example:
  >>> log = Interactions.from_columns({"uid": [1, 1, 2], "sku": ["a", "b", "a"],
  ...                                  "ts": [10, 20, 30]},
  ...                                 Columns(user="uid", item="sku", time="ts"))
  >>> len(log), log.fields
  (3, ('user', 'item', 'timestamp'))
  >>> log.vocabulary("item").as_list()
  ['a', 'b']
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from towerkit.data import _schema
from towerkit.data.columns import CANONICAL, Columns
from towerkit.data.feature_table import FeatureTable
from towerkit.data.vocabulary import Vocabulary

__all__ = ["Interactions"]


class Interactions:
    """Aligned NumPy columns of an interaction log, with optional feature tables.

    Columns are stored under canonical names: `user` and `item` (int64, or object arrays of
    `bytes`), and where present `timestamp` (int64), `rating` and `weight` (float32).

    Args:
      columns: dict canonical name -> np.ndarray, already converted (use `from_columns`).
      user_features: FeatureTable or None. One row per user id.
      item_features: FeatureTable or None. One row per item id.
    """

    def __init__(self, columns: Mapping[str, np.ndarray],
                 user_features: Optional[FeatureTable] = None,
                 item_features: Optional[FeatureTable] = None):
        unknown = set(columns) - set(CANONICAL)
        if unknown or not {"user", "item"} <= set(columns):
            raise ValueError(f"Interactions need columns user and item and only "
                             f"{list(CANONICAL)}, got {sorted(columns)}; build them with "
                             "Interactions.from_columns.")
        self._columns = {f: np.asarray(columns[f]) for f in CANONICAL if f in columns}
        self.user_features = user_features
        self.item_features = item_features

    @classmethod
    def from_columns(cls, data, columns: Columns = Columns(),
                     user_features=None, item_features=None, user_key: Optional[str] = None,
                     item_key: Optional[str] = None,
                     source: str = "interactions") -> "Interactions":
        """Checks and converts a dict of array-likes (or a pandas DataFrame).

        Args:
          data: dict of array-likes or a DataFrame holding the mapped columns.
          columns: Columns. Which source column holds which field.
          user_features: FeatureTable, dict of array-likes, DataFrame or None.
          item_features: FeatureTable, dict of array-likes, DataFrame or None.
          user_key: str. The id column of `user_features` (default: `columns.user`).
          item_key: str. The id column of `item_features` (default: `columns.item`).
          source: str. Names the input in error messages.

        Returns:
          The checked `Interactions`.

        Raises:
          ValueError: a missing column, no rows, missing or non-finite values, a feature table
            with duplicate keys, keys absent from the interactions or ids without a row.
          TypeError: ids that are not strings or integers, non-numeric ratings/weights, or
            timestamps that are neither integers nor datetimes.
        """
        if not isinstance(columns, Columns):
            raise TypeError(f"columns must be a towerkit.data.Columns, got {type(columns).__name__}.")
        converted = _schema.convert(data, columns.mapping(), source)
        if not len(converted["user"]):
            raise ValueError(f"{source} has no rows.")
        tables = []
        for table, key, field in ((user_features, user_key or columns.user, "user"),
                                  (item_features, item_key or columns.item, "item")):
            if table is not None and not isinstance(table, FeatureTable):
                table = FeatureTable.from_columns(table, key, f"{field} feature table")
            if table is not None:
                table.check_against(converted[field], field, f"{field} feature table")
            tables.append(table)
        return cls(converted, *tables)

    @classmethod
    def concat(cls, parts: Sequence["Interactions"]) -> "Interactions":
        """Rows of `parts`, in order (feature tables from the first part).

        Raises:
          ValueError: no parts, or parts with different fields or id kinds.
        """
        if not parts:
            raise ValueError("concat needs at least one Interactions.")
        first = parts[0]
        for part in parts[1:]:
            if part.fields != first.fields:
                raise ValueError(f"Cannot concatenate fields {part.fields} to {first.fields}.")
            for field in ("user", "item"):
                if (part[field].dtype == object) != (first[field].dtype == object):
                    raise TypeError(f"{field} ids are strings in one part and integers in "
                                    "another; cast the column to one type.")
        columns = {f: np.concatenate([p[f] for p in parts]) for f in first.fields}
        return cls(columns, first.user_features, first.item_features)

    @property
    def fields(self) -> tuple:
        """Canonical names of the columns present, e.g. `('user', 'item', 'timestamp')`."""
        return tuple(self._columns)

    @property
    def columns(self) -> dict:
        """`{canonical name: np.ndarray}` (a shallow copy)."""
        return dict(self._columns)

    def __getitem__(self, field: str) -> np.ndarray:
        if field not in self._columns:
            raise KeyError(f"No column {field!r}; this log has {list(self._columns)}.")
        return self._columns[field]

    def __contains__(self, field: str) -> bool:
        return field in self._columns

    def __len__(self) -> int:
        return len(self._columns["user"])

    def __repr__(self) -> str:
        return f"Interactions({len(self)} rows, fields={self.fields})"

    def take(self, indices) -> "Interactions":
        """The rows at `indices` (feature tables kept whole)."""
        indices = np.asarray(indices)
        if indices.dtype.kind not in ("i", "u"):
            raise TypeError(f"indices must be integers, got dtype {indices.dtype}.")
        return Interactions({f: c[indices] for f, c in self._columns.items()},
                            self.user_features, self.item_features)

    def vocabulary(self, field: str, min_count: int = 1) -> Vocabulary:
        """The `user` or `item` vocabulary, most frequent first (ties by id), values seen
        fewer than `min_count` times left out."""
        if field not in ("user", "item"):
            raise ValueError(f"vocabulary field must be 'user' or 'item', got {field!r}.")
        return Vocabulary.from_values(self._columns[field], min_count=min_count)

    def canonical_order(self) -> np.ndarray:
        """Row indices sorting the log by every column (last field first): a source-order-free
        form for comparing two logs."""
        keys = []
        for f in reversed(self.fields):
            c = self._columns[f]
            keys.append(c.astype(bytes) if c.dtype == object else c)
        return np.lexsort(keys)

    def to_dataset(self, batch_size: Optional[int] = None, shuffle: bool = False,
                   seed: Optional[int] = None) -> tf.data.Dataset:
        """The in-memory path: a `tf.data.Dataset` of interaction dicts.

        Batches are sliced from the whole columns (one op per batch rather than one per row).

        Args:
          batch_size: int or None. None yields single interactions, in row order.
          shuffle: bool. Draw a fresh random permutation of the rows each pass (batched only).
          seed: int or None. Seed of the permutation.

        Returns:
          Dicts of `[batch]` (or scalar) tensors keyed by the canonical field names.
        """
        tensors = {f: tf.constant(c.astype(bytes) if c.dtype == object else c)
                   for f, c in self._columns.items()}
        if batch_size is None:
            if shuffle:
                raise ValueError("shuffle=True needs a batch_size.")
            return tf.data.Dataset.from_tensor_slices(tensors)
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}.")
        n = len(self)
        num_batches = -(-n // batch_size)
        if shuffle:
            order = tf.data.Dataset.from_tensors(n).map(
                lambda size: tf.random.shuffle(tf.range(size, dtype=tf.int64), seed=seed))
        else:
            order = tf.data.Dataset.from_tensors(tf.range(n, dtype=tf.int64))
        batches = order.flat_map(lambda perm: tf.data.Dataset.range(num_batches).map(
            lambda i: perm[i * batch_size:(i + 1) * batch_size]))
        return batches.map(lambda rows: {f: tf.gather(t, rows) for f, t in tensors.items()},
                           num_parallel_calls=tf.data.AUTOTUNE)
