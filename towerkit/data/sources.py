"""Interaction sources: CSV, Parquet, TFRecord, a pandas DataFrame or a `tf.data.Dataset`.

Every source gives the same `Interactions` for the same log: ids as int64 or `bytes`,
timestamps int64, ratings and weights float32, under canonical field names, whatever the
source called its columns (`Columns`). `read` dispatches on the file extension; `iter_chunks`
reads a file (or a DataFrame, or a dataset) a chunk at a time, for logs larger than memory.
MovieLens is one more source: `towerkit.data.movielens.interactions`.

CSV and Parquet need pandas and pyarrow (`pip install 'towerkit[data]'`); TFRecord and
`tf.data` need only TensorFlow.

Example:
  >>> log = read("events.csv", Columns(user="uid", item="sku", time="ts"),
  ...            item_features="items.parquet")
  >>> for chunk in iter_chunks("events.parquet", Columns(user="uid", item="sku"), 1_000_000):
  ...     ...
"""

from __future__ import annotations

import os
import re
from typing import Iterator, Optional, Union

import numpy as np
import tensorflow as tf

from towerkit.data import _schema
from towerkit.data.columns import Columns
from towerkit.data.feature_table import FeatureTable
from towerkit.data.interactions import Interactions

__all__ = ["read", "iter_chunks", "read_table", "from_dataframe", "from_tf_dataset",
           "file_format", "FORMATS"]

# File format -> extensions (a trailing `.gz` is allowed for CSV and TFRecord).
FORMATS = {"csv": (".csv", ".tsv"), "parquet": (".parquet", ".pq"),
           "tfrecord": (".tfrecord", ".tfrecords")}
_INT = re.compile(r"^-?\d+$")
_FLOAT = re.compile(r"^-?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][-+]?\d+|nan|inf)$", re.IGNORECASE)

PathLike = Union[str, os.PathLike]


def _pandas():
    try:
        import pandas  # pylint: disable=import-outside-toplevel
        return pandas
    except ImportError as e:
        raise ImportError("Reading CSV or Parquet needs pandas and pyarrow: "
                          "pip install 'towerkit[data]'.") from e


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
        return pq
    except ImportError as e:
        raise ImportError("Reading Parquet needs pyarrow: pip install 'towerkit[data]'.") from e


def file_format(path: PathLike, format: Optional[str] = None) -> str:  # noqa: A002
    """The format of `path`: `format` if given, else from the extension.

    Raises:
      ValueError: an unknown format or extension.
    """
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"Unknown format {format!r}; expected one of {sorted(FORMATS)}.")
        return format
    name = os.fspath(path).lower()
    name = name[:-3] if name.endswith(".gz") else name
    for fmt, extensions in FORMATS.items():
        if name.endswith(extensions):
            return fmt
    raise ValueError(f"Unknown file format of {os.fspath(path)!r}; expected an extension in "
                     f"{[e for v in FORMATS.values() for e in v]} or format= one of "
                     f"{sorted(FORMATS)}.")


def _files(path: PathLike) -> list:
    files = sorted(tf.io.gfile.glob(os.fspath(path)))
    if not files:
        raise ValueError(f"No file matches {os.fspath(path)!r}.")
    for f in files:
        if tf.io.gfile.stat(f).length == 0:
            raise ValueError(f"{f} is empty (0 bytes); pass a file with a header and rows.")
    return files


# --- CSV --------------------------------------------------------------------------------

def _csv_chunks(path, columns: Columns, chunk_rows: int) -> Iterator[Interactions]:
    pd = _pandas()
    mapping = columns.mapping()
    id_columns = [columns.user, columns.item]
    id_kinds: dict = {}
    for f in _files(path):
        sep = "\t" if f.lower().removesuffix(".gz").endswith(".tsv") else ","
        try:
            header = pd.read_csv(f, sep=sep, nrows=0).columns
        except pd.errors.EmptyDataError as e:
            raise ValueError(f"{f} is empty; pass a file with a header and rows.") from e
        _schema.check_present({str(c): None for c in header}, list(mapping.values()), f)
        reader = pd.read_csv(f, sep=sep, usecols=list(mapping.values()),
                             dtype={c: str for c in id_columns}, chunksize=chunk_rows,
                             keep_default_na=True)
        for frame in reader:
            for c in id_columns:
                frame[c] = _csv_ids(frame[c], c, f, id_kinds)
            if columns.time and frame[columns.time].dtype.kind not in "iufM":
                try:
                    frame[columns.time] = pd.to_datetime(frame[columns.time], utc=True,
                                                         format="ISO8601")
                except (ValueError, TypeError) as e:
                    raise TypeError(f"{f}: timestamp column {columns.time!r} holds neither "
                                    f"numbers nor ISO 8601 dates ({str(e).splitlines()[0]}); "
                                    "fix or drop those rows.") from e
            yield Interactions.from_columns(frame, columns, source=f)


def _csv_ids(series, column: str, source: str, kinds: dict):
    """CSV ids read as text: integers if the first chunk's are all integers, else strings."""
    values = series.to_numpy(dtype=object)
    if any(not isinstance(v, str) for v in values):
        raise ValueError(f"{source}: id column {column!r} has missing values; drop or fill "
                         "those rows first.")
    if column not in kinds:
        if values.size and all(_INT.match(v) for v in values):
            kinds[column] = "int"
        elif values.size and all(_FLOAT.match(v) for v in values):
            raise TypeError(f"{source}: ids in column {column!r} are floats (e.g. "
                            f"{values[0]!r}); ids must be strings or integers. Fix: write them "
                            "as integers or strings; floats often mean missing ids.")
        else:
            kinds[column] = "str"
    if kinds[column] == "str":
        return values
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except ValueError as e:
        raise TypeError(f"{source}: id column {column!r} holds integers in its first rows but "
                        f"not later ({e}); make every id an integer, or quote them all as "
                        "strings with a non-digit character.") from e


# --- Parquet ----------------------------------------------------------------------------

def _parquet_file(f):
    pq = _pyarrow_parquet()
    try:
        return pq.ParquetFile(f)
    except Exception as e:  # pyarrow raises ArrowInvalid (a ValueError) or OSError
        raise ValueError(f"{f} is not a readable Parquet file ({e}).") from e


def _parquet_chunks(path, columns: Columns, chunk_rows: int) -> Iterator[Interactions]:
    mapping = columns.mapping()
    for f in _files(path):
        parquet = _parquet_file(f)
        _schema.check_present({n: None for n in parquet.schema_arrow.names},
                              list(mapping.values()), f)
        if parquet.metadata.num_rows == 0:
            raise ValueError(f"{f} has no rows.")
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=list(mapping.values())):
            yield Interactions.from_columns(batch.to_pandas(), columns, source=f)


# --- TFRecord ---------------------------------------------------------------------------

_KINDS = {"bytes_list": tf.string, "int64_list": tf.int64, "float_list": tf.float32}


def _tfrecord_spec(f, compression, mapping) -> dict:
    first = next(iter(tf.data.TFRecordDataset(f, compression_type=compression).take(1)), None)
    if first is None:
        raise ValueError(f"{f} holds no record.")
    try:
        example = tf.train.Example.FromString(first.numpy())
    except Exception as e:  # protobuf DecodeError
        raise ValueError(f"{f} does not hold tf.train.Example records ({e}).") from e
    features = example.features.feature
    _schema.check_present({n: None for n in features}, list(mapping.values()), f)
    return {c: tf.io.FixedLenFeature([], _KINDS[features[c].WhichOneof("kind")])
            for c in mapping.values()}


def _tfrecord_chunks(path, columns: Columns, chunk_rows: int) -> Iterator[Interactions]:
    mapping = columns.mapping()
    for f in _files(path):
        compression = "GZIP" if f.lower().endswith(".gz") else ""
        spec = _tfrecord_spec(f, compression, mapping)
        ds = tf.data.TFRecordDataset(f, compression_type=compression).batch(chunk_rows)
        for batch in ds.map(lambda x: tf.io.parse_example(x, spec)):
            yield Interactions.from_columns({k: v.numpy() for k, v in batch.items()}, columns,
                                            source=f)


# --- in-memory sources ------------------------------------------------------------------

def _dataset_chunks(ds: tf.data.Dataset, columns: Columns, chunk_rows: int,
                    source: str = "tf.data.Dataset") -> Iterator[Interactions]:
    spec = ds.element_spec
    if not isinstance(spec, dict):
        raise TypeError(f"{source} must yield dicts of features, got elements {spec}.")
    _schema.check_present(spec, list(columns.mapping().values()), source)
    ranks = {spec[c].shape.rank for c in columns.mapping().values()}
    if ranks == {0}:
        ds = ds.batch(chunk_rows)
    elif ranks != {1}:
        raise ValueError(f"{source} must yield scalar features (or batches of them), got "
                         f"shapes { {c: spec[c].shape for c in columns.mapping().values()} }.")
    ds = ds.map(lambda x: {c: x[c] for c in columns.mapping().values()})
    for batch in ds.as_numpy_iterator():
        yield Interactions.from_columns(batch, columns, source=source)


def _frame_chunks(frame, columns: Columns, chunk_rows: int) -> Iterator[Interactions]:
    _schema.check_present(frame, list(columns.mapping().values()), "DataFrame")
    for start in range(0, len(frame), chunk_rows):
        yield Interactions.from_columns(frame.iloc[start:start + chunk_rows], columns,
                                        source="DataFrame")


def iter_chunks(source, columns: Columns = Columns(), chunk_rows: int = 1 << 20,
                format: Optional[str] = None) -> Iterator[Interactions]:  # noqa: A002
    """Reads a log a chunk at a time; every chunk is checked like a whole log.

    Args:
      source: a path or glob (CSV, Parquet, TFRecord), a pandas DataFrame or a
        `tf.data.Dataset` of dicts.
      columns: Columns. Which source column holds which field.
      chunk_rows: int. Rows per chunk (the last may be shorter).
      format: str or None. `csv`, `parquet` or `tfrecord`; default from the extension.

    Yields:
      `Interactions` chunks without feature tables, in source order.

    Raises:
      ValueError, TypeError: as `Interactions.from_columns`, plus an unknown format, a path
        that matches no file, or an empty file; the first chunk is checked before any other
        is read.
    """
    if not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}.")
    if isinstance(source, tf.data.Dataset):
        return _dataset_chunks(source, columns, chunk_rows)
    if hasattr(source, "iloc"):
        return _frame_chunks(source, columns, chunk_rows)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path, a DataFrame or a tf.data.Dataset, got "
                        f"{type(source).__name__}.")
    readers = {"csv": _csv_chunks, "parquet": _parquet_chunks, "tfrecord": _tfrecord_chunks}
    return readers[file_format(source, format)](source, columns, chunk_rows)


def _table(table, key: str, field: str) -> Optional[FeatureTable]:
    if table is None or isinstance(table, FeatureTable):
        return table
    return read_table(table, key) if isinstance(table, (str, os.PathLike)) else \
        FeatureTable.from_columns(table, key, f"{field} feature table")


def read(source, columns: Columns = Columns(), user_features=None, item_features=None,
         user_key: Optional[str] = None, item_key: Optional[str] = None,
         format: Optional[str] = None) -> Interactions:  # noqa: A002
    """Reads a whole log into memory.

    Args:
      source: a path or glob (CSV, Parquet, TFRecord), a pandas DataFrame or a
        `tf.data.Dataset` of dicts.
      columns: Columns. Which source column holds which field.
      user_features, item_features: a path, DataFrame, dict of arrays, FeatureTable or None.
      user_key, item_key: str. The id column of each feature table (default: the
        interactions' user/item column name).
      format: str or None. As in `iter_chunks`.

    Returns:
      The checked `Interactions`.

    Raises:
      ValueError, TypeError: see `iter_chunks` and `Interactions.from_columns`.
    """
    tables = (_table(user_features, user_key or columns.user, "user"),
              _table(item_features, item_key or columns.item, "item"))
    parts = list(iter_chunks(source, columns, chunk_rows=1 << 22, format=format))
    if not parts:
        raise ValueError(f"{source!r} has no rows.")
    log = Interactions.concat(parts)
    for table, field in zip(tables, ("user", "item")):
        if table is not None:
            table.check_against(log[field], field, f"{field} feature table")
    return Interactions(log.columns, *tables)


def from_dataframe(frame, columns: Columns = Columns(), **kwargs) -> Interactions:
    """`read` of a pandas DataFrame."""
    return read(frame, columns, **kwargs)


def from_tf_dataset(ds: tf.data.Dataset, columns: Columns = Columns(), **kwargs) -> Interactions:
    """`read` of a `tf.data.Dataset` of dicts of scalars (or of batches)."""
    return read(ds, columns, **kwargs)


def read_table(source, key: str, format: Optional[str] = None) -> FeatureTable:  # noqa: A002
    """Reads a user or item feature table from CSV or Parquet, or takes a DataFrame.

    Raises:
      ValueError, TypeError: see `FeatureTable.from_columns`, plus an unknown format or an
        empty file.
    """
    if hasattr(source, "iloc") or isinstance(source, dict):
        return FeatureTable.from_columns(source, key, "feature table")
    fmt = file_format(source, format)
    frames = []
    for f in _files(source):
        if fmt == "csv":
            pd = _pandas()
            try:
                frames.append(pd.read_csv(f, sep="\t" if ".tsv" in f.lower() else ","))
            except pd.errors.EmptyDataError as e:
                raise ValueError(f"{f} is empty; pass a file with a header and rows.") from e
        elif fmt == "parquet":
            frames.append(_parquet_file(f).read().to_pandas())
        else:
            raise ValueError(f"Feature tables are read from CSV or Parquet, got {f!r}; load "
                             "it into a DataFrame first.")
    frame = frames[0] if len(frames) == 1 else _pandas().concat(frames, ignore_index=True)
    return FeatureTable.from_columns(frame, key, f"feature table {os.fspath(source)}")
