"""Column checks and conversions shared by every interaction source (private).

Each check raises a one-line `ValueError`/`TypeError` that names the column, the problem and
the fix, before any work starts. Converted columns have one canonical dtype per field:
ids are int64 or an object array of `bytes`; timestamps int64; ratings and weights float32.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

ID_FIELDS = ("user", "item")
VALUE_FIELDS = ("rating", "weight")


def column_names(data) -> list:
    """The column names of a dict of arrays or a pandas DataFrame."""
    names = getattr(data, "columns", None)
    return [str(n) for n in (names if names is not None else data.keys())]


def check_present(data, wanted: Sequence[str], source: str) -> None:
    """Raises if a wanted column is missing, listing the available ones."""
    available = column_names(data)
    missing = [c for c in wanted if c not in available]
    if missing:
        raise ValueError(f"{source} has no column {', '.join(map(repr, missing))}; available "
                         f"columns: {available}. Fix: map the fields with Columns(user=..., "
                         "item=..., ...).")


def _array(values) -> np.ndarray:
    if hasattr(values, "to_numpy"):  # pandas Series: string/arrow dtypes come back as objects
        if getattr(values.dtype, "tz", None) is not None:  # tz-aware datetimes -> naive UTC
            values = values.dt.tz_convert(None)
        return values.to_numpy()
    types = {type(v) for v in values} if isinstance(values, (list, tuple)) else set()
    if len(types) > 1 and types & {str, bytes}:
        return np.array(values, dtype=object)  # np.asarray would turn [b"a", 2] into strings
    return np.asarray(values)


def id_column(values, column: str, source: str) -> np.ndarray:
    """Ids as int64 or an object array of bytes.

    Raises:
      TypeError: floats, booleans or other non-string, non-integer values.
      ValueError: missing (None/NaN) ids.
    """
    array = _array(values)
    if array.ndim != 1:
        raise ValueError(f"{source}: id column {column!r} must be 1-D, got shape {array.shape}.")
    kind = array.dtype.kind
    if kind in ("i", "u"):
        return array.astype(np.int64, copy=False)
    if kind == "f":
        raise TypeError(f"{source}: ids in column {column!r} are floats (e.g. {array[:1]}); ids "
                        "must be strings or integers. Fix: cast them (.astype('int64') or "
                        ".astype(str)); floats often mean missing ids.")
    if kind == "U":
        return np.array([v.encode("utf-8") for v in array.tolist()], dtype=object)
    if kind == "S":
        return array.astype(object)
    if kind == "O":
        values = array.tolist()
        if all(type(v) is bytes for v in values):
            return np.array(values, dtype=object) if array.dtype != object else array
        if all(type(v) is str for v in values):
            return np.array([v.encode("utf-8") for v in values], dtype=object)
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            return np.array(values, dtype=np.int64)
        bad = next(v for v in values if type(v) not in (bytes, str))
        if bad is None or type(bad).__name__ in ("NAType", "NaTType") or (
                isinstance(bad, float) and np.isnan(bad)):
            raise ValueError(f"{source}: id column {column!r} has missing values; drop or fill "
                             "those rows first.")
        raise TypeError(f"{source}: ids in column {column!r} must all be strings or all be "
                        f"integers, found {type(bad).__name__} {bad!r}. Fix: cast the column "
                        "to str or int64.")
    raise TypeError(f"{source}: ids in column {column!r} have dtype {array.dtype}; ids must be "
                    "strings or integers. Fix: cast the column to str or int64.")


def time_column(values, column: str, source: str) -> np.ndarray:
    """Timestamps as int64: integers unchanged, datetimes as Unix seconds, whole floats cast.

    Raises:
      TypeError: not numbers or datetimes.
      ValueError: non-finite or fractional values.
    """
    array = _array(values)
    kind = array.dtype.kind
    if kind == "M":
        if np.isnat(array).any():
            raise ValueError(f"{source}: timestamp column {column!r} has missing values (NaT); "
                             "drop or fill those rows first.")
        return array.astype("datetime64[s]").astype(np.int64)
    if kind in ("i", "u"):
        return array.astype(np.int64, copy=False)
    if kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            raise ValueError(f"{source}: timestamp column {column!r} has {int((~finite).sum())} "
                             "non-finite value(s) (NaN/inf); drop or fill those rows first.")
        if np.any(array != np.floor(array)):
            raise ValueError(f"{source}: timestamp column {column!r} has fractional values; "
                             "timestamps are whole units. Fix: scale them (e.g. to "
                             "milliseconds) and round.")
        return array.astype(np.int64)
    raise TypeError(f"{source}: timestamp column {column!r} has dtype {array.dtype}; expected "
                    "integers (e.g. Unix seconds) or datetimes. Fix: parse or cast it.")


def value_column(values, column: str, field: str, source: str) -> np.ndarray:
    """Ratings or weights as float32.

    Raises:
      TypeError: not numbers.
      ValueError: non-finite values.
    """
    array = _array(values)
    if array.dtype.kind not in ("i", "u", "f", "b"):
        raise TypeError(f"{source}: {field} column {column!r} has dtype {array.dtype}; expected "
                        "numbers. Fix: cast it to float.")
    array = array.astype(np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        raise ValueError(f"{source}: {field} column {column!r} has {int((~finite).sum())} "
                         "non-finite value(s) (NaN/inf, or beyond float32); drop or fill those "
                         "rows first.")
    return array


def feature_column(values, column: str, source: str) -> np.ndarray:
    """A feature table column: strings as bytes, integers int64, floats float32; a column of
    lists stays an object array of NumPy arrays."""
    array = _array(values)
    kind = array.dtype.kind
    if kind in ("i", "u", "b"):
        return array.astype(np.int64)
    if kind == "f":
        return array.astype(np.float32)
    if kind in ("U", "S"):
        return id_column(array, column, source)
    if kind == "O" and len(array):
        first = array[0]
        if isinstance(first, (str, bytes)):
            return id_column(array, column, source)
        if isinstance(first, (list, tuple, np.ndarray)):
            out = np.empty(len(array), dtype=object)
            out[:] = [np.asarray(v) for v in array]
            return out
    raise TypeError(f"{source}: feature column {column!r} has dtype {array.dtype}; expected "
                    "strings, numbers or lists of numbers.")


def convert(data, mapping: Mapping[str, str], source: str) -> dict:
    """Checks that every mapped column exists, then converts each to its canonical dtype.

    Args:
      data: dict of array-likes or a pandas DataFrame.
      mapping: `{canonical field: source column}` (see `Columns.mapping`).
      source: str. Names the input in messages (a path, "DataFrame"...).

    Returns:
      `{canonical field: np.ndarray}`, all of one length.
    """
    check_present(data, list(mapping.values()), source)
    lengths = {c: len(data[c]) for c in mapping.values()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{source}: columns have different lengths {lengths}.")
    if not next(iter(lengths.values())):
        raise ValueError(f"{source} has no rows.")
    out = {}
    for field, column in mapping.items():
        if field in ID_FIELDS:
            out[field] = id_column(data[column], column, source)
        elif field == "timestamp":
            out[field] = time_column(data[column], column, source)
        else:
            out[field] = value_column(data[column], column, field, source)
    return out
