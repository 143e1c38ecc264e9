"""Training shards: an interaction log prepared as TFRecord files, streamed with `tf.data`.

For logs larger than memory. `write_shards` reads a source a chunk at a time (see
`towerkit.data.sources.iter_chunks`), checks each chunk like a whole log, and routes every
interaction to shard `shard_of(user id)`, so a user's events stay in one shard and the
assignment does not depend on chunking or on the runner (the Beam pipeline in
`towerkit.data.beam_pipeline` uses the same function). Each record is one `tf.train.Example`
holding a block of up to `block_rows` interactions (one list per field), which keeps the
writer vectorised. The shard files are written under a temporary directory that is renamed to
`directory` at the end, so a reader never sees half-written shards; `manifest.json` records
the fields, their dtypes and the rows per shard.

`read_shards` streams them back: files interleaved, blocks parsed in parallel, rows rebatched
(optionally shuffled by blocks and windows of rows), prefetched.

Example:
  >>> write_shards("events.parquet", "/data/shards", num_shards=64,
  ...              columns=Columns(user="uid", item="sku", time="ts"))
  >>> ds = read_shards("/data/shards", batch_size=4096, shuffle_buffer=100_000, seed=0)
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import zlib
from typing import Iterable, Optional, Union

import numpy as np
import tensorflow as tf

from towerkit.data.columns import Columns
from towerkit.data.interactions import Interactions

__all__ = ["write_shards", "read_shards", "load_shards", "read_manifest", "shard_of",
           "shard_name", "encode_block", "MANIFEST"]

MANIFEST = "manifest.json"
_FORMAT_VERSION = 1
_DTYPES = {"int64": tf.int64, "string": tf.string, "float32": tf.float32}


def shard_name(index: int, num_shards: int) -> str:
    """File name of shard `index`, e.g. `shard-00003-of-00064.tfrecord`."""
    return f"shard-{index:05d}-of-{num_shards:05d}.tfrecord"


def shard_of(ids: np.ndarray, num_shards: int) -> np.ndarray:
    """Shard index of each id: CRC-32 of the id's bytes (integers: little-endian int64).

    Deterministic across processes, machines and runners (unlike Python's `hash`).

    Args:
      ids: np.ndarray `[n]` int64 or object array of bytes.
      num_shards: int.

    Returns:
      np.ndarray `[n]` int64 in `[0, num_shards)`.
    """
    if ids.dtype == object:
        codes = np.fromiter((zlib.crc32(v) for v in ids), dtype=np.int64, count=len(ids))
    else:
        raw = np.ascontiguousarray(ids, dtype="<i8").view(np.uint8).reshape(-1, 8)
        codes = np.fromiter((zlib.crc32(r) for r in raw), dtype=np.int64, count=len(ids))
    return codes % num_shards


def _dtype_name(column: np.ndarray) -> str:
    return {"O": "string", "i": "int64", "f": "float32"}[column.dtype.kind]


def encode_block(columns: dict) -> bytes:
    """One serialized `tf.train.Example` holding aligned columns (one list per field)."""
    feature = {}
    for name, values in columns.items():
        if values.dtype == object:
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values.tolist()))
        elif values.dtype.kind == "i":
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _chunks(source, columns: Columns, chunk_rows: int, format: Optional[str]):  # noqa: A002
    if isinstance(source, Interactions):
        return (source.take(np.arange(s, min(s + chunk_rows, len(source))))
                for s in range(0, len(source), chunk_rows))
    if isinstance(source, (list, tuple)) and all(isinstance(p, Interactions) for p in source):
        return iter(source)
    from towerkit.data import sources  # pylint: disable=import-outside-toplevel
    return sources.iter_chunks(source, columns, chunk_rows, format)


class _ShardBuffers:
    """Per-shard row buffers, written out in full blocks."""

    def __init__(self, writers, block_rows):
        self.writers, self.block_rows = writers, block_rows
        self.pending = [[] for _ in writers]
        self.sizes = [0] * len(writers)
        self.counts = [0] * len(writers)

    def add(self, shard: int, columns: dict) -> None:
        self.pending[shard].append(columns)
        self.sizes[shard] += len(next(iter(columns.values())))
        if self.sizes[shard] >= self.block_rows:
            self.flush(shard, final=False)

    def flush(self, shard: int, final: bool) -> None:
        parts = self.pending[shard]
        if not parts:
            return
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        n = len(next(iter(merged.values())))
        full = n if final else n - n % self.block_rows
        for start in range(0, full, self.block_rows):
            block = {k: v[start:min(start + self.block_rows, full)] for k, v in merged.items()}
            self.writers[shard].write(encode_block(block))
        self.counts[shard] += full
        rest = {k: v[full:] for k, v in merged.items()}
        self.pending[shard] = [rest] if n > full else []
        self.sizes[shard] = n - full


def write_shards(source, directory: Union[str, os.PathLike], num_shards: int,
                 columns: Columns = Columns(), chunk_rows: int = 1 << 20,
                 block_rows: int = 4096, format: Optional[str] = None,  # noqa: A002
                 overwrite: bool = False) -> dict:
    """Streams a log into `num_shards` TFRecord shards, one chunk in memory at a time.

    Args:
      source: a path or glob (CSV, Parquet, TFRecord), a DataFrame, a `tf.data.Dataset` of
        dicts, an `Interactions`, or a list of `Interactions` chunks.
      directory: str. Output directory; must not exist unless `overwrite`.
      num_shards: int. Number of shard files.
      columns: Columns. Field mapping of a file/DataFrame/dataset source.
      chunk_rows: int. Rows read (and checked) at a time: bounds the writer's memory.
      block_rows: int. Interactions per TFRecord record.
      format: str or None. File format, default from the extension.
      overwrite: bool. Replace an existing `directory`.

    Returns:
      The manifest dict (also written to `directory/manifest.json`).

    Raises:
      ValueError: bad sizes, an existing directory, an empty source, or any schema error of
        `towerkit.data.sources` (raised before the output directory appears).
      TypeError: chunks whose fields or dtypes differ.
    """
    for name, value in (("num_shards", num_shards), ("chunk_rows", chunk_rows),
                        ("block_rows", block_rows)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    directory = os.fspath(directory)
    if os.path.exists(directory) and not overwrite:
        raise ValueError(f"{directory} exists; pass overwrite=True or choose a new directory.")
    tmp = f"{directory.rstrip(os.sep)}.tmp-{uuid.uuid4().hex[:8]}"
    os.makedirs(tmp)
    try:
        writers = [tf.io.TFRecordWriter(os.path.join(tmp, shard_name(i, num_shards)))
                   for i in range(num_shards)]
        buffers = _ShardBuffers(writers, block_rows)
        dtypes = None
        for chunk in _chunks(source, columns, chunk_rows, format):
            chunk_dtypes = {f: _dtype_name(chunk[f]) for f in chunk.fields}
            if dtypes is None:
                dtypes = chunk_dtypes
            elif chunk_dtypes != dtypes:
                raise TypeError(f"A chunk has fields {chunk_dtypes}, earlier chunks {dtypes}; "
                                "give every id column one type throughout the log.")
            shards = shard_of(chunk["user"], num_shards)
            order = np.argsort(shards, kind="stable")
            bounds = np.searchsorted(shards[order], np.arange(num_shards + 1))
            cols = chunk.columns
            for s in range(num_shards):
                rows = order[bounds[s]:bounds[s + 1]]
                if len(rows):
                    buffers.add(s, {f: c[rows] for f, c in cols.items()})
        if dtypes is None:
            raise ValueError(f"{source!r} has no rows.")
        for s in range(num_shards):
            buffers.flush(s, final=True)
        for w in writers:
            w.close()
        manifest = {"format_version": _FORMAT_VERSION, "fields": dtypes,
                    "num_shards": num_shards, "block_rows": block_rows,
                    "rows_per_shard": buffers.counts, "num_rows": int(sum(buffers.counts)),
                    "files": [shard_name(i, num_shards) for i in range(num_shards)]}
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
        if os.path.exists(directory):
            shutil.rmtree(directory)
        os.rename(tmp, directory)
        return manifest
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)


def read_manifest(directory: Union[str, os.PathLike]) -> dict:
    """The manifest of a shard directory.

    Raises:
      ValueError: not a complete shard directory (no manifest, or shard files missing).
    """
    path = os.path.join(os.fspath(directory), MANIFEST)
    if not tf.io.gfile.exists(path):
        raise ValueError(f"{os.fspath(directory)} has no {MANIFEST}: not a towerkit shard "
                         "directory (write one with write_shards or the Beam pipeline).")
    with tf.io.gfile.GFile(path) as f:
        manifest = json.load(f)
    if manifest.get("format_version") != _FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported shard format {manifest.get('format_version')!r}.")
    missing = [n for n in manifest["files"]
               if not tf.io.gfile.exists(os.path.join(os.fspath(directory), n))]
    if missing:
        raise ValueError(f"{os.fspath(directory)} lacks shard file(s) {missing[:3]}.")
    return manifest


def read_shards(directory: Union[str, os.PathLike], batch_size: Optional[int] = None,
                shuffle_buffer: int = 0, seed: Optional[int] = None, cycle_length: int = 4,
                deterministic: bool = True) -> tf.data.Dataset:
    """Streams shards as a `tf.data.Dataset` of interaction dicts.

    Args:
      directory: str. A directory written by `write_shards` (or the Beam pipeline).
      batch_size: int or None. Batch size; None yields single interactions.
      shuffle_buffer: int. Rows mixed at a time (0: no shuffling). When > 0, shard files
        and blocks are shuffled, and each window of about `shuffle_buffer` rows is
        permuted as a whole.
      seed: int or None. Shuffle seed.
      cycle_length: int. Shard files read concurrently.
      deterministic: bool. Keep a fixed order (False lets tf.data trade order for speed).

    Returns:
      Dicts of `user`, `item` and the optional fields (`[batch]` tensors when batched).

    Raises:
      ValueError: not a complete shard directory, or bad sizes.
    """
    manifest = read_manifest(directory)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}.")
    spec = {f: tf.io.RaggedFeature(_DTYPES[d]) for f, d in manifest["fields"].items()}
    files = [os.path.join(os.fspath(directory), n) for n in manifest["files"]]
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_buffer:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(cycle_length, len(files)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.map(lambda record: tf.io.parse_single_example(record, spec),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if shuffle_buffer:
        # Vectorised shuffling: blocks are shuffled, then windows of about `shuffle_buffer`
        # rows are permuted as a whole (one gather per window, not one op per row).
        window = max(1, shuffle_buffer // manifest["block_rows"])
        ds = ds.shuffle(2 * window, seed=seed, reshuffle_each_iteration=True)
        ds = ds.ragged_batch(window).map(
            lambda w: {f: v.flat_values for f, v in w.items()})
        ds = ds.map(lambda w: _permute(w, seed), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=deterministic)
    ds = ds.unbatch() if batch_size is None else ds.rebatch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def _permute(columns: dict, seed: Optional[int]) -> dict:
    first = next(iter(columns.values()))
    order = tf.random.shuffle(tf.range(tf.shape(first)[0]), seed=seed)
    return {f: tf.gather(v, order) for f, v in columns.items()}


def load_shards(directory: Union[str, os.PathLike]) -> Interactions:
    """Reads every shard into memory (shard by shard, in file order): for checks and small data."""
    columns: dict = {}
    for batch in read_shards(directory, batch_size=1 << 16).as_numpy_iterator():
        for f, v in batch.items():
            columns.setdefault(f, []).append(v)
    out = {}
    for f, parts in columns.items():
        v = np.concatenate(parts)
        out[f] = v.astype(object) if v.dtype.kind in ("S", "O") else v
    return Interactions(out)
