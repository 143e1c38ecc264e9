"""A user or item feature table: one row of side features per id.

Example:
  >>> table = FeatureTable.from_columns({"sku": ["a", "b"], "price": [1.5, 2.0]}, key="sku")
  >>> table.lookup([b"b", b"a"])["price"]
  array([2. , 1.5], dtype=float32)
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from towerkit.data import _schema

__all__ = ["FeatureTable"]


@dataclasses.dataclass(frozen=True)
class FeatureTable:
    """Side features keyed by a user or item id.

    Attributes:
      key: str. The source column that held the ids.
      keys: np.ndarray `[num_rows]` int64 or object bytes. Unique ids.
      columns: dict str -> np.ndarray `[num_rows]`. Strings as bytes, integers int64, floats
        float32, lists as object arrays of NumPy arrays.
    """

    key: str
    keys: np.ndarray
    columns: Mapping[str, np.ndarray]

    @classmethod
    def from_columns(cls, data, key: str, source: str = "feature table") -> "FeatureTable":
        """Builds a table from a dict of array-likes or a pandas DataFrame.

        Args:
          data: dict of array-likes or a DataFrame, with the `key` column and any features.
          key: str. The id column.
          source: str. Names the input in error messages.

        Raises:
          ValueError: the key column is missing, the table is empty, or keys repeat.
          TypeError: keys that are not strings or integers, or an unsupported feature dtype.
        """
        _schema.check_present(data, [key], source)
        keys = _schema.id_column(data[key], key, source)
        if not len(keys):
            raise ValueError(f"{source} is empty; pass at least one row or no table.")
        unique, counts = np.unique(keys, return_counts=True)
        if (counts > 1).any():
            repeated = unique[counts > 1]
            raise ValueError(f"{source}: key column {key!r} has {len(repeated)} duplicate "
                             f"key(s), e.g. {list(repeated[:3])}; keep one row per key "
                             "(e.g. drop_duplicates(subset=key)).")
        columns = {name: _schema.feature_column(data[name], name, source)
                   for name in _schema.column_names(data) if name != key}
        return cls(key=key, keys=keys, columns=columns)

    def __len__(self) -> int:
        return len(self.keys)

    def check_against(self, ids: np.ndarray, field: str, source: str) -> None:
        """Checks that the table has a row for every id and no key outside `ids`.

        Raises:
          TypeError: the keys and ids are of different kinds (strings vs integers).
          ValueError: a key absent from the interactions, or an id absent from the table.
        """
        if (self.keys.dtype == object) != (ids.dtype == object):
            raise TypeError(f"{source}: keys of {self.key!r} are "
                            f"{'strings' if self.keys.dtype == object else 'integers'} but the "
                            f"interactions' {field} ids are "
                            f"{'strings' if ids.dtype == object else 'integers'}; cast one side.")
        seen = np.unique(ids)
        extra = self.keys[~np.isin(self.keys, seen)]
        if len(extra):
            raise ValueError(f"{source}: {len(extra)} key(s) of {self.key!r} are absent from the "
                             f"interactions' {field} ids, e.g. {list(extra[:3])}; filter the "
                             "table to ids that occur in the interactions.")
        missing = seen[~np.isin(seen, self.keys)]
        if len(missing):
            raise ValueError(f"{source}: {len(missing)} {field} id(s) of the interactions have "
                             f"no row in the table keyed by {self.key!r}, e.g. "
                             f"{list(missing[:3])}; add their rows.")

    def lookup(self, ids) -> dict:
        """Feature rows of `ids`, in order: `{column: np.ndarray [len(ids)]}`.

        Raises:
          ValueError: an id has no row in the table.
        """
        ids = np.asarray(ids, dtype=self.keys.dtype)
        order = np.argsort(self.keys)
        sorted_keys = self.keys[order]
        pos = np.clip(np.searchsorted(sorted_keys, ids), 0, len(sorted_keys) - 1)
        found = sorted_keys[pos] == ids
        if not np.all(found):
            raise ValueError(f"{int((~found).sum())} id(s) have no row in the table keyed by "
                             f"{self.key!r}, e.g. {list(ids[~found][:3])}.")
        rows = order[pos]
        return {name: column[rows] for name, column in self.columns.items()}
