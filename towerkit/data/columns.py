"""The caller's column names for an interaction log.

Every source (CSV, Parquet, TFRecord, a DataFrame, a `tf.data.Dataset`) is read through a
`Columns` mapping, so nothing in towerkit depends on how a log names its columns.

Example:
  >>> Columns(user="uid", item="sku", time="ts").required()
  ('uid', 'sku')
"""

from __future__ import annotations

import dataclasses
from typing import Optional

__all__ = ["Columns", "CANONICAL"]

# Canonical field name -> `Columns` attribute. Interactions store their columns under these.
CANONICAL = {"user": "user", "item": "item", "timestamp": "time", "rating": "rating",
             "weight": "weight"}


@dataclasses.dataclass(frozen=True)
class Columns:
    """Which source column holds which interaction field.

    Attributes:
      user: str. The user id column (strings or integers).
      item: str. The item id column (strings or integers).
      time: str or None. Event time: integers (e.g. Unix seconds) or datetimes.
      rating: str or None. An explicit rating (finite numbers).
      weight: str or None. A per-interaction training weight (finite numbers).
    """

    user: str = "user"
    item: str = "item"
    time: Optional[str] = None
    rating: Optional[str] = None
    weight: Optional[str] = None

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            required = field.name in ("user", "item")
            if (value is None and not required) or (isinstance(value, str) and value):
                continue
            raise TypeError(f"Columns.{field.name} must be a non-empty column name"
                            f"{'' if required else ' or None'}, got {value!r}.")
        names = [n for n in self.mapping().values()]
        if len(set(names)) != len(names):
            raise ValueError(f"Columns map two fields to the same column: {self.mapping()}.")

    def mapping(self) -> dict:
        """`{canonical field: source column}` for the fields that are set, in canonical order."""
        return {field: getattr(self, attr) for field, attr in CANONICAL.items()
                if getattr(self, attr) is not None}

    def required(self) -> tuple:
        """The source columns every log must have: `(user, item)`."""
        return (self.user, self.item)
