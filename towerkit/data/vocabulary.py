"""Vocabularies built from data: the distinct values of a column with their counts."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Union

import numpy as np

__all__ = ["Vocabulary"]


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Distinct values of a categorical column, most frequent first, with their counts.

    The order is deterministic: descending count, ties broken by ascending value. Values are
    `bytes` (string columns) or `int64`.

    Attributes:
      values: np.ndarray `[n]`. The distinct values.
      counts: np.ndarray `[n]` int64. How often each value occurred.
    """

    values: np.ndarray
    counts: np.ndarray

    @classmethod
    def from_values(cls, column, min_count: int = 1) -> "Vocabulary":
        """Builds the vocabulary of `column` (bytes/str or integer values).

        Args:
          column: array-like `[num_examples]` of bytes, str or integers.
          min_count: int. Values seen fewer times are left out (they map to the OOV bucket).

        Raises:
          TypeError: the column is neither strings nor integers.
          ValueError: the column is empty, or `min_count` removes every value.
        """
        column = np.asarray(column)
        if column.ndim != 1 or column.size == 0:
            raise ValueError(f"Vocabulary needs a non-empty 1-D column, got shape {column.shape}.")
        if column.dtype.kind == "U":
            column = np.char.encode(column, "utf-8")
        elif column.dtype.kind == "O":
            if not all(isinstance(v, bytes) for v in column[:100]):
                raise TypeError("Object columns must hold bytes; decode or encode them first.")
            column = column.astype(bytes)
        elif column.dtype.kind in ("i", "u", "b"):
            column = column.astype(np.int64)
        elif column.dtype.kind != "S":
            raise TypeError(
                f"Vocabulary columns must be strings or integers, got dtype {column.dtype}; "
                "bucketize float columns first.")
        values, counts = np.unique(column, return_counts=True)
        keep = counts >= min_count
        if not keep.any():
            raise ValueError(f"min_count={min_count} leaves no value (max count {counts.max()}).")
        values, counts = values[keep], counts[keep].astype(np.int64)
        order = np.lexsort((values, -counts))  # last key is primary: count desc, then value
        return cls(values=values[order], counts=counts[order])

    def __len__(self) -> int:
        return len(self.values)

    @property
    def is_string(self) -> bool:
        return self.values.dtype.kind == "S"

    def frequencies(self) -> np.ndarray:
        """`counts / counts.sum()` as float64: the empirical sampling probability of each value."""
        return self.counts / self.counts.sum()

    def as_list(self) -> list:
        """Values as Python `str` (decoded UTF-8) or `int`, the form Keras lookup layers take."""
        if self.is_string:
            return [v.decode("utf-8") for v in self.values]
        return [int(v) for v in self.values]

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes the vocabulary as JSON."""
        payload = {"kind": "string" if self.is_string else "int64",
                   "values": self.as_list(), "counts": [int(c) for c in self.counts]}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(payload, f)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Vocabulary":
        """Reads a vocabulary written by `save`.

        Raises:
          ValueError: the file is not a saved vocabulary.
        """
        try:
            with open(path, encoding="utf-8") as f:
                payload = json.load(f)
            kind, values, counts = payload["kind"], payload["values"], payload["counts"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is not a saved towerkit Vocabulary ({e}); rebuild it with "
                             "Vocabulary.from_values(...).save(path).") from e
        if len(values) != len(counts):
            raise ValueError(f"{path} is corrupt: {len(values)} values but {len(counts)} counts.")
        if kind == "string":
            array = np.array([v.encode("utf-8") for v in values], dtype=bytes)
        elif kind == "int64":
            array = np.array(values, dtype=np.int64)
        else:
            raise ValueError(f"{path} has unknown vocabulary kind {kind!r}.")
        return cls(values=array, counts=np.array(counts, dtype=np.int64))
