"""An Apache Beam pipeline that prepares training shards, for logs that need many machines.

It writes exactly what `towerkit.data.shards.write_shards` writes (the same files, byte for
byte): every input file is read a chunk at a time and checked by the same schema checks as
every other source (`towerkit.data.sources.iter_chunks`), each interaction is routed to
`shards.shard_of(user id)`, and each shard is written in source order (files in sorted path
order, chunks in file order) in blocks of `block_rows`. The parallelism unit is the input file,
so split a large log into many files. Shards go to a temporary directory; `manifest.json` is
written last, after every shard, and the directory is renamed to its final name when the
pipeline is done.

Beam is an optional extra (`pip install 'towerkit[beam]'`); the pipeline runs locally with the
DirectRunner (the default) and, with other pipeline options, on Dataflow, Flink or Spark
(input and output paths must then be reachable from the workers, e.g. `gs://`).

Example:
  >>> manifest = prepare_shards("logs/events-*.parquet", "shards/", num_shards=64,
  ...                           columns=Columns(user="uid", item="sku", time="ts"))
  >>> ds = towerkit.data.read_shards("shards/", batch_size=4096)
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from towerkit.data import shards as shard_files
from towerkit.data import sources
from towerkit.data.columns import Columns

__all__ = ["prepare_shards"]


def _beam():
    try:
        import apache_beam as beam  # pylint: disable=import-outside-toplevel
        return beam
    except ImportError as e:
        raise ImportError("The shard pipeline needs Apache Beam: "
                          "pip install 'towerkit[beam]'.") from e


def _read_and_route(indexed_file, columns, chunk_rows, num_shards, fmt):
    """`(file index, path)` -> `(shard, ((file index, chunk index), columns, dtypes))`."""
    file_index, path = indexed_file
    for chunk_index, chunk in enumerate(sources.iter_chunks(path, columns, chunk_rows, fmt)):
        dtypes = {f: shard_files._dtype_name(chunk[f]) for f in chunk.fields}  # pylint: disable=protected-access
        shard = shard_files.shard_of(chunk["user"], num_shards)
        for s in np.unique(shard):
            rows = np.flatnonzero(shard == s)
            yield int(s), ((file_index, chunk_index), {f: c[rows] for f, c in
                                                       chunk.columns.items()}, dtypes)


def _write_shard(keyed_parts, tmp_dir, num_shards, block_rows):
    """Writes one shard from its parts, in source order; returns `(shard, rows, dtypes)`."""
    shard, parts = keyed_parts
    parts = sorted(parts, key=lambda p: p[0])
    dtypes = parts[0][2]
    for _, _, d in parts:
        if d != dtypes:
            raise TypeError(f"Chunks have fields {d} and {dtypes}; give every id column one "
                            "type throughout the log.")
    merged = {f: np.concatenate([p[1][f] for p in parts]) for f in parts[0][1]}
    n = len(merged["user"])
    path = os.path.join(tmp_dir, shard_files.shard_name(shard, num_shards))
    with tf.io.TFRecordWriter(path) as writer:
        for start in range(0, n, block_rows):
            writer.write(shard_files.encode_block(
                {f: v[start:start + block_rows] for f, v in merged.items()}))
    return shard, n, dtypes


def _write_manifest(results, tmp_dir, num_shards, block_rows):
    """Writes empty files for shards no user fell into, then the manifest (last)."""
    counts = [0] * num_shards
    dtypes = None
    for shard, n, d in results:
        counts[shard] = n
        if dtypes is not None and d != dtypes:
            raise TypeError(f"Shards have fields {d} and {dtypes}; give every id column one "
                            "type throughout the log.")
        dtypes = d
    files = [shard_files.shard_name(i, num_shards) for i in range(num_shards)]
    for name in files:
        path = os.path.join(tmp_dir, name)
        if not tf.io.gfile.exists(path):
            tf.io.TFRecordWriter(path).close()
    manifest = {"format_version": shard_files._FORMAT_VERSION,  # pylint: disable=protected-access
                "fields": dtypes, "num_shards": num_shards, "block_rows": block_rows,
                "rows_per_shard": counts, "num_rows": int(sum(counts)), "files": files}
    with tf.io.gfile.GFile(os.path.join(tmp_dir, shard_files.MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)


def prepare_shards(file_pattern: str, directory: str, num_shards: int,
                   columns: Columns = Columns(), chunk_rows: int = 1 << 20,
                   block_rows: int = 4096, format: Optional[str] = None,  # noqa: A002
                   pipeline_args: Optional[Sequence[str]] = None,
                   overwrite: bool = False) -> dict:
    """Runs the Beam pipeline: CSV/Parquet/TFRecord files -> checked training shards.

    Args:
      file_pattern: str. A path or glob of input files (one format).
      directory: str. Output directory; must not exist unless `overwrite`.
      num_shards: int. Number of shard files.
      columns: Columns. Which source column holds which field.
      chunk_rows: int. Rows a worker reads (and checks) at a time.
      block_rows: int. Interactions per TFRecord record.
      format: str or None. File format, default from the extension.
      pipeline_args: Beam pipeline options as command-line flags (default: the DirectRunner),
        e.g. `["--runner=DataflowRunner", "--project=...", ...]`.
      overwrite: bool. Replace an existing `directory`.

    Returns:
      The manifest dict (also in `directory/manifest.json`).

    Raises:
      ImportError: Apache Beam is not installed (names the extra).
      ValueError, TypeError: bad sizes, an existing directory, an unknown format, no or empty
        files, or a schema error in the first chunk of the first file (all checked on the
        launching machine before the pipeline starts; later schema errors fail the pipeline
        with the same message).
    """
    beam = _beam()
    for name, value in (("num_shards", num_shards), ("chunk_rows", chunk_rows),
                        ("block_rows", block_rows)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    directory = os.fspath(directory)
    if tf.io.gfile.exists(directory) and not overwrite:
        raise ValueError(f"{directory} exists; pass overwrite=True or choose a new directory.")
    fmt = sources.file_format(file_pattern, format)
    files = sources._files(file_pattern)  # pylint: disable=protected-access
    next(iter(sources.iter_chunks(files[0], columns, min(chunk_rows, 10_000), fmt)))

    tmp = f"{directory.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
    tf.io.gfile.makedirs(tmp)
    options = beam.options.pipeline_options.PipelineOptions(
        list(pipeline_args) if pipeline_args is not None else ["--runner=DirectRunner"])
    try:
        with beam.Pipeline(options=options) as pipeline:
            _ = (pipeline
                 | "Files" >> beam.Create(list(enumerate(files)))
                 | "ReadCheckRoute" >> beam.FlatMap(_read_and_route, columns, chunk_rows,
                                                    num_shards, fmt)
                 | "GroupByShard" >> beam.GroupByKey()
                 | "WriteShards" >> beam.Map(_write_shard, tmp, num_shards, block_rows)
                 | "AllShards" >> beam.combiners.ToList()
                 | "WriteManifest" >> beam.Map(_write_manifest, tmp, num_shards, block_rows))
        if tf.io.gfile.exists(directory):
            tf.io.gfile.rmtree(directory)
        tf.io.gfile.rename(tmp, directory)
    finally:
        if tf.io.gfile.exists(tmp):
            if "://" in tmp:
                tf.io.gfile.rmtree(tmp)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    return shard_files.read_manifest(directory)
