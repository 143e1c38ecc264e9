"""The data of a training run: a TFDS MovieLens config or the caller's own files.

A run config (`run.json`) names its data in one of two ways:

- `"dataset": "movielens/100k-ratings"` (and `"data_dir"`): MovieLens through tfds.
- `"data": {"path", "format", "columns", "user_features", "user_key", "item_features",
  "item_key"}` (build it with `file_data`): an interaction log in CSV, Parquet or TFRecord
  files, read through `towerkit.data.sources` with the caller's column names, and optional
  user and item feature tables (CSV or Parquet).

Either way `rating_columns(config)` returns the per-interaction NumPy columns every recipe
reads, under the recipes' dataset-free column names (tfds MovieLens features are renamed by
`towerkit.data.movielens.RECIPE_NAMES`), so a recipe trains on a file log exactly as it trains
on the same log from tfds (same rows in the same order give the same run for the same seed).

Feature tables name their columns by role, not by dataset:

- item table: `title` (strings; the index identifiers and the `rich` two-tower's title
  tokens), `genres` (lists of integer or string categories; DAT's category, the genre
  clusters of `mt_ebr`, the rankers' genre features);
- user table: `age` (a number), `age_bucket` (a category), `gender` (bool or 0/1),
  `occupation` (an integer or string category), `zip_code` (strings).

Recipes that read a role the tables lack say so (and which flag or column fixes it) before
any work starts; a table column that no recipe reads is an error rather than silently unused.

Example:
  >>> spec = file_data("events.csv", user="uid", item="sku", time="ts",
  ...                  item_features="items.parquet", item_key="sku")
  >>> config = make_run_config("sasrec", data=spec)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Optional

import numpy as np

from towerkit.data import movielens
from towerkit.data.columns import CANONICAL, Columns

__all__ = ["file_data", "rating_columns", "column_names", "is_file_data", "describe",
           "check_data", "missing_fix", "tfds_name", "fingerprint", "ITEM_ROLES", "USER_ROLES"]

# Feature-table roles -> the per-interaction column names the recipes read.
ITEM_ROLES = {"title": "item_title", "genres": "item_genres"}
USER_ROLES = {"age": "user_age", "age_bucket": "user_age_bucket", "gender": "user_gender",
              "occupation": "user_occupation", "zip_code": "user_zip_code"}
# Interaction fields -> the recipes' column names.
_FIELDS = {"user": "user_id", "item": "item_id", "timestamp": "timestamp", "rating": "rating"}

_SPEC_KEYS = ("path", "format", "columns", "user_features", "user_key", "item_features",
              "item_key", "fingerprint")


def file_data(path, user: str, item: str, time: Optional[str] = None,
              rating: Optional[str] = None, user_features=None, user_key: Optional[str] = None,
              item_features=None, item_key: Optional[str] = None,
              format: Optional[str] = None) -> dict:  # noqa: A002
    """The `data` entry of a run config for an interaction log in files.

    Args:
      path: str or path. A CSV/TSV, Parquet or TFRecord file, or a glob of them
        (`logs/part-*.parquet`).
      user, item: str. The id columns (string or integer ids).
      time: str or None. Event time (integers or datetimes); the sequential recipes need it.
      rating: str or None. Explicit ratings; the multi-task rankers need them.
      user_features, item_features: str, path or None. Feature tables (CSV or Parquet), one
        row per id, columns named by role (see the module docstring).
      user_key, item_key: str or None. The tables' id columns (default: `user`/`item`).
      format: str or None. `csv`, `parquet` or `tfrecord` (default: from the extension).

    Returns:
      A JSON-serialisable dict with absolute paths.

    Raises:
      ValueError, TypeError: a missing file, an empty column name, a key without its table.
    """
    columns = Columns(user=user, item=item, time=time, rating=rating)
    for name, table, key in (("user", user_features, user_key),
                             ("item", item_features, item_key)):
        if key is not None and table is None:
            raise ValueError(f"--{name}-key {key!r} names the id column of a {name} feature "
                             f"table, but no --{name}-features table was given; add one or "
                             "drop the key.")
    spec = {"path": _absolute(path, "--data"), "format": format,
            "columns": {k: v for k, v in dataclasses.asdict(columns).items() if v is not None},
            "user_features": _absolute(user_features, "--user-features"),
            "user_key": user_key,
            "item_features": _absolute(item_features, "--item-features"),
            "item_key": item_key}
    check_data(spec)
    spec["fingerprint"] = fingerprint(spec)
    return spec


def fingerprint(spec: dict) -> dict:
    """Identifies the data files of a `data` entry: `{"files", "bytes", "sha256"}` over the
    log's and the feature tables' files (names, sizes and contents, in order).

    Stored in the run config, it lets `rating_columns` refuse files that changed after the
    run was trained (a run evaluated on other data than it was trained on would mix them).
    """
    from towerkit.data import sources  # pylint: disable=import-outside-toplevel

    digest = hashlib.sha256()
    count = total = 0
    for key in ("path", "user_features", "item_features"):
        if spec.get(key) is None:
            continue
        for name in sources._files(spec[key]):  # pylint: disable=protected-access
            size = os.path.getsize(name)
            digest.update(f"{key}:{os.path.basename(name)}:{size}\n".encode())
            with open(name, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            count, total = count + 1, total + size
    return {"files": count, "bytes": total, "sha256": digest.hexdigest()}


def _check_unchanged(spec: dict) -> None:
    stored = spec.get("fingerprint")
    if stored is None:
        return
    now = fingerprint(spec)
    if now != stored:
        raise ValueError(f"The data of this run changed since it was trained ({spec['path']} "
                         f"and its feature tables: {stored['files']} files, {stored['bytes']:,} "
                         f"bytes then; {now['files']} files, {now['bytes']:,} bytes, another "
                         "content hash now); restore the files the run was trained on, or "
                         "train a new run on the new data.")


def _absolute(path, flag: str) -> Optional[str]:
    if path is None:
        return None
    text = os.fspath(path)
    if not any(ch in text for ch in "*?[") and not os.path.exists(text):
        raise ValueError(f"{flag} {text}: no such file; pass an existing file or a glob of "
                         "files.")
    if os.path.isdir(text):
        raise ValueError(f"{flag} {text} is a directory; pass its files as a glob, e.g. "
                         f"'{os.path.join(text, '*.parquet')}'.")
    return os.path.abspath(text)


def check_data(spec) -> None:
    """Checks the shape of a run config's `data` entry (not the files' contents).

    Raises:
      ValueError, TypeError: naming the key and the fix.
    """
    if not isinstance(spec, dict):
        raise TypeError(f"The run config's 'data' must be a dict (see "
                        f"towerkit.data.recipe_data.file_data), got {type(spec).__name__}.")
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown or "path" not in spec or "columns" not in spec:
        raise ValueError(f"The run config's 'data' needs the keys {list(_SPEC_KEYS)} (path and "
                         f"columns at least), got {sorted(spec)}; build it with file_data().")
    if not isinstance(spec["columns"], dict):
        raise TypeError("data['columns'] must map user/item/time/rating to column names.")
    Columns(**spec["columns"])  # raises on empty or repeated names


def is_file_data(config: dict) -> bool:
    """Whether a run config trains on the caller's files (rather than a tfds dataset)."""
    return config.get("data") is not None


def describe(config: dict) -> str:
    """A short name of the run's data for messages: the tfds name or the log's path."""
    return config["data"]["path"] if is_file_data(config) else config["dataset"]


def tfds_name(config: dict) -> str:
    """The tfds config of a run on a MovieLens ratings dataset (`100k-ratings`); raises naming
    both ways to give a run its data otherwise."""
    dataset = config["dataset"]
    if not (dataset.startswith("movielens/") and dataset.endswith("-ratings")):
        raise ValueError(f"The {config.get('recipe', 'this')} recipe trains on an interaction "
                         "log: a MovieLens ratings config such as 'movielens/100k-ratings', or "
                         f"your own files with --data PATH; got --dataset {dataset!r}.")
    return dataset.split("/", 1)[1]


def column_names(config: dict) -> set:
    """The per-interaction columns a run's data has, without reading a file log's rows.

    For tfds this is the config's feature names (metadata only); for files, the recipe names
    of the mapped fields and of the feature tables' role columns (the tables are read).
    """
    if not is_file_data(config):
        return set(movielens.recipe_feature_names(tfds_name(config), config.get("data_dir")))
    spec = config["data"]
    names = {_FIELDS["user"], _FIELDS["item"]}
    field_of = {attr: field for field, attr in CANONICAL.items()}  # "time" -> "timestamp"
    names.update(_FIELDS[field_of[f]] for f in spec["columns"] if f in ("time", "rating"))
    for field, roles in (("user", USER_ROLES), ("item", ITEM_ROLES)):
        table = _feature_table(spec, field)
        if table is not None:
            names.update(roles[c] for c in table.columns)
    return names


def missing_fix(config: dict, missing) -> str:
    """How to supply recipe columns a run's data lacks (the end of an error message)."""
    if not is_file_data(config):
        return "a MovieLens config that has them, such as movielens/100k-ratings"
    flags = {_FIELDS["timestamp"]: "--time-column C", _FIELDS["rating"]: "--rating-column C"}
    for field, roles in (("user", USER_ROLES), ("item", ITEM_ROLES)):
        flags.update({column: f"a {role!r} column in --{field}-features"
                      for role, column in roles.items()})
    return "add " + ", ".join(flags.get(m, m) for m in missing)


def rating_columns(config: dict) -> dict:
    """The run's interactions as the recipes' NumPy columns (cached per process).

    Returns:
      `{name: read-only np.ndarray}`, one entry per interaction: `user_id` and `item_id`
      (bytes: integer ids as their decimal strings), `timestamp` (int64), `rating`
      (float32) and the feature-table roles looked up per interaction (`ITEM_ROLES`,
      `USER_ROLES`), typed as the tfds MovieLens features are.

    Raises:
      ValueError, TypeError: the data cannot be read or does not match its schema; the
        message names the file, column and fix.
    """
    if not is_file_data(config):
        return movielens.recipe_columns(tfds_name(config), data_dir=config.get("data_dir"))
    return _file_columns(json.dumps(config["data"], sort_keys=True))


def _feature_table(spec: dict, field: str):
    path = spec.get(f"{field}_features")
    if path is None:
        return None
    return _read_table(path, spec.get(f"{field}_key") or spec["columns"][field], field)


@functools.lru_cache(maxsize=8)
def _read_table(path: str, key: str, field: str):
    from towerkit.data import sources  # pylint: disable=import-outside-toplevel

    table = sources.read_table(path, key)
    roles = USER_ROLES if field == "user" else ITEM_ROLES
    unknown = sorted(set(table.columns) - set(roles))
    if unknown:
        raise ValueError(f"{field} feature table {path}: column(s) {unknown} are not {field} "
                         f"features the recipes read ({', '.join(roles)}); rename them to "
                         "those roles or drop them.")
    return table


@functools.lru_cache(maxsize=4)
def _file_columns(spec_json: str) -> dict:
    from towerkit.data import sources  # pylint: disable=import-outside-toplevel

    spec = json.loads(spec_json)
    check_data(spec)
    _check_unchanged(spec)
    columns = Columns(**spec["columns"])
    user_table, item_table = _feature_table(spec, "user"), _feature_table(spec, "item")
    log = sources.read(spec["path"], columns, user_features=user_table,
                       item_features=item_table, format=spec.get("format"))
    out = {_FIELDS["user"]: _bytes(log["user"]), _FIELDS["item"]: _bytes(log["item"])}
    if "timestamp" in log:
        out[_FIELDS["timestamp"]] = log["timestamp"].astype(np.int64)
    if "rating" in log:
        out[_FIELDS["rating"]] = log["rating"].astype(np.float32)
    for table, field, roles in ((user_table, "user", USER_ROLES),
                                (item_table, "item", ITEM_ROLES)):
        if table is None:
            continue
        looked_up = table.lookup(log[field])
        for role, values in looked_up.items():
            out[roles[role]] = _role_column(role, values, table, spec[f"{field}_features"])
    for value in out.values():
        value.setflags(write=False)
    return out


def _bytes(values: np.ndarray) -> np.ndarray:
    """Object array of `bytes` (as tfds gives strings); integers as their decimal strings."""
    out = np.empty(len(values), dtype=object)
    out[:] = (values.astype(bytes) if values.dtype == object
              else np.char.encode(values.astype(str), "ascii")).tolist()
    return out


def _role_column(role: str, values: np.ndarray, table, path: str) -> np.ndarray:
    """Types a feature-table column as the recipes read it (the tfds MovieLens dtypes)."""
    all_values = table.columns[role]

    def fail(expected: str):
        raise TypeError(f"Feature table {path}: column {role!r} must hold {expected}, got "
                        f"dtype {all_values.dtype} (e.g. {all_values[:2].tolist()!r}).")

    if role in ("title", "zip_code"):
        if values.dtype != object:
            if values.dtype.kind not in "iu":
                fail("strings")
        return _bytes(values)
    if role in ("age", "age_bucket"):
        if values.dtype.kind not in "iuf":
            fail("numbers")
        return values.astype(np.float32)
    if role == "gender":
        if values.dtype.kind not in "iub" or not np.isin(all_values, (0, 1)).all():
            fail("booleans or 0/1")
        return values.astype(bool)
    if role == "occupation":
        if values.dtype.kind in "iu":
            return values.astype(np.int64)
        if values.dtype != object:
            fail("integer or string categories")
        vocab = np.unique(all_values.astype(bytes)).tolist()  # strings: sorted codes
        code = {v: i for i, v in enumerate(vocab)}
        return np.array([code[v] for v in values.astype(bytes).tolist()], dtype=np.int64)
    if role == "genres":
        lists = [np.asarray(v) for v in values]
        kinds = {v.dtype.kind for v in lists if len(v)}
        if not lists or not all(v.ndim == 1 for v in lists) or not kinds <= set("iuSUO"):
            fail("lists of integer or string categories (a Parquet list column)")
        if kinds & set("SUO"):
            vocab = np.unique(np.concatenate([v.astype(str) for v in lists if len(v)]))
            code = {v: i for i, v in enumerate(vocab.tolist())}
            lists = [np.array([code[x] for x in v.astype(str).tolist()], dtype=np.int64)
                     for v in lists]
        out = np.empty(len(lists), dtype=object)
        out[:] = [v.astype(np.int64) for v in lists]
        return out
    raise AssertionError(f"unhandled role {role!r}")
