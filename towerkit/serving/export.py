"""Versioned, atomic SavedModel exports for TensorFlow Serving, with warmup records."""

import logging
import os
import pathlib
import shutil
import time
import uuid

import numpy as np
import tensorflow as tf

from towerkit.index import Index, save_index
from towerkit.index.saving import QUERIES_KEY
from towerkit.serving import signatures as signatures_lib
from towerkit.serving.ranker import RankerServable, RetrieveThenRank
from towerkit.serving import warmup as warmup_lib

_TMP_PREFIX = ".towerkit-tmp-"
_LOG = logging.getLogger("towerkit.serving")
#: A temporary export directory without a recorded process older than this is stale.
STALE_AFTER_SECONDS = 3600


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_exports(model_base_path) -> dict:
    """Removes the temporary directories that crashed or killed exports left in a base path.

    An export builds its version in `<base>/.towerkit-tmp-<version>-p<pid>-<hex>` and renames it
    into place; a crash or kill leaves that directory behind (as large as the model). It is
    stale when its process no longer runs (or, for names without a process id, when it is older
    than `STALE_AFTER_SECONDS`). `export` calls this before writing.

    Args:
      model_base_path: The model's base path.

    Returns:
      `{"removed": [paths], "removed_bytes": int, "in_progress": [paths]}`; `in_progress` lists
      temporary directories of exports that still run (left alone).
    """
    base = pathlib.Path(model_base_path)
    report = {"removed": [], "removed_bytes": 0, "in_progress": []}
    if not base.is_dir():
        return report
    for path in sorted(base.glob(_TMP_PREFIX + "*")):
        if not path.is_dir():
            continue
        parts = path.name[len(_TMP_PREFIX):].split("-")
        pid = next((int(p[1:]) for p in parts if p.startswith("p") and p[1:].isdigit()), None)
        if pid is not None:
            stale = pid != os.getpid() and not _pid_alive(pid)
        else:
            stale = time.time() - path.stat().st_mtime > STALE_AFTER_SECONDS
        if not stale:
            report["in_progress"].append(str(path))
            continue
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        shutil.rmtree(path, ignore_errors=True)
        report["removed"].append(str(path))
        report["removed_bytes"] += size
        _LOG.warning("removed %s (%.1f MB), left by an export that did not finish", path,
                     size / 1e6)
    return report


def versions(model_base_path) -> list:
    """Returns the published versions under a model base path, ascending.

    Only directories named by a positive integer count, as in TF Serving's file system source;
    in-progress exports (hidden temporary directories) do not.

    Args:
      model_base_path: str | os.PathLike. Directory holding `<version>/` subdirectories.

    Returns:
      list[int]; empty when the directory does not exist.
    """
    base = pathlib.Path(model_base_path)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir()
                  if p.is_dir() and p.name.isdigit() and int(p.name) > 0)


def export(index_or_model, model_base_path, version: int | None = None, query_signature=None,
           warmup_queries: dict | None = None) -> pathlib.Path:
    """Writes `model_base_path/<version>/`, a SavedModel that TensorFlow Serving can load.

    The SavedModel is built in a hidden temporary directory inside `model_base_path` (same file
    system) and renamed into place, so a server polling the base path never sees a partial version.
    Temporary directories left by exports that crashed are removed first (`clean_stale_exports`,
    logged as a warning).
    Signatures (see `towerkit.index.save_index`): `serving_default(**query_features) -> {ids,
    scores}` with `max_k` results, `top_k(**query_features, k)` for a smaller `k`, and
    `query_embedding(**query_features) -> {embedding}`.

    Args:
      index_or_model: A built `towerkit.index.Index` (BruteForce, Annoy, the portable index, ...),
        saved with `towerkit.index.save_index`; a `RankerServable` or `RetrieveThenRank`
        (`towerkit.serving.ranker`), which carry their own signatures; or a path to an existing
        SavedModel directory, copied as is.
      model_base_path: str | os.PathLike. The model's base path (TF Serving's `base_path`).
      version: int | None. Version number; the next integer after the largest existing version
        (1 for an empty base path) when None.
      query_signature: dict[str, tf.TensorSpec] | tf.TensorSpec | None. The raw query inputs,
        batch dim None, e.g. `{"user_id": tf.TensorSpec([None], tf.string)}`; passed to
        `save_index` (None: inferred from the query model, or `queries` embeddings without one).
        Must be None when copying a SavedModel.
      warmup_queries: dict[str, array-like] | None. A few real queries, `[n, ...]` per input
        (n <= 1000), written as TF Serving warmup records (one single-row request to
        `serving_default` each). None writes no warmup file.

    Returns:
      pathlib.Path of the published version directory.

    Raises:
      ValueError: `version` is not a positive integer or already exists; the warmup queries do not
        match the `serving_default` inputs; the source path is not a SavedModel.
      TypeError: `index_or_model` is neither a towerkit index nor a SavedModel path; a warmup input
        has the wrong dtype.
    """
    base = pathlib.Path(model_base_path)
    if version is not None and (isinstance(version, bool)
                                or not isinstance(version, (int, np.integer)) or version < 1):
        raise ValueError(f"version must be a positive integer (TF Serving only loads directories "
                         f"named 1, 2, ...), got {version!r}.")
    version = None if version is None else int(version)
    if isinstance(index_or_model, (str, os.PathLike)):
        source = pathlib.Path(index_or_model)
        signatures_lib.read_saved_model_proto(source)  # Fails early, naming the problem.
        if query_signature is not None:
            raise ValueError("query_signature only applies when exporting an index; a SavedModel "
                             "path is copied as is. Drop query_signature.")
    elif isinstance(index_or_model, (RankerServable, RetrieveThenRank)):
        if query_signature is not None:
            raise ValueError(f"a {type(index_or_model).__name__} carries its own signature; drop "
                             "query_signature.")
    elif not isinstance(index_or_model, Index):
        raise TypeError(f"export takes a towerkit index or a SavedModel directory (or a "
                        f"RankerServable / RetrieveThenRank), got "
                        f"{type(index_or_model).__name__}. Build an index from towerkit.index "
                        "(e.g. BruteForce) or pass the path written by tf.saved_model.save.")
    if warmup_queries is not None and isinstance(query_signature, (dict, tf.TensorSpec)):
        # Fail before the (slow) save when the warmup queries cannot match the declared inputs.
        signatures_lib.validate_inputs(_declared_signature(query_signature), warmup_queries,
                                       what="warmup_queries")
    base.mkdir(parents=True, exist_ok=True)
    clean_stale_exports(base)
    if version is None:
        existing = versions(base)
        version = existing[-1] + 1 if existing else 1
    target = base / str(version)
    if target.exists():
        raise ValueError(f"{target} already exists: TF Serving versions are immutable. Export "
                         f"with version=None (next is {versions(base)[-1] + 1}) or a new number.")
    tmp = base / f"{_TMP_PREFIX}{version}-p{os.getpid()}-{uuid.uuid4().hex}"
    try:
        if isinstance(index_or_model, (str, os.PathLike)):
            shutil.copytree(source, tmp)
        elif isinstance(index_or_model, (RankerServable, RetrieveThenRank)):
            index_or_model.save(tmp)
        else:
            save_index(index_or_model, str(tmp), query_signature=query_signature)
        if warmup_queries is not None:
            _write_warmup(tmp, warmup_queries)
        _fsync_tree(tmp)
        try:
            os.rename(tmp, target)  # Atomic on one file system; fails if target appeared meanwhile.
        except OSError as error:
            raise ValueError(f"could not publish {target}: {error}. Another export probably "
                             "took this version; export again with version=None.") from error
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _declared_signature(query_signature) -> signatures_lib.Signature:
    """The serving_default inputs that `save_index` will write for `query_signature`."""
    specs = ({QUERIES_KEY: query_signature} if isinstance(query_signature, tf.TensorSpec)
             else dict(query_signature))
    inputs = {}
    for name, spec in specs.items():
        if not isinstance(spec, tf.TensorSpec):
            raise TypeError(f"query_signature[{name!r}] must be a tf.TensorSpec, got "
                            f"{type(spec).__name__}.")
        shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
        inputs[name] = signatures_lib.TensorInfo(dtype=spec.dtype, shape=shape)
    return signatures_lib.Signature(name="serving_default", inputs=inputs, outputs={})


def _write_warmup(saved_model_dir, warmup_queries) -> None:
    signatures = signatures_lib.read_signatures(saved_model_dir)
    if "serving_default" not in signatures:
        raise ValueError(f"the model has no 'serving_default' signature (it has "
                         f"{sorted(signatures)}), which warmup requests and TF Serving call.")
    queries = signatures_lib.validate_inputs(signatures["serving_default"], warmup_queries,
                                             what="warmup_queries")
    warmup_lib.write_warmup_requests(saved_model_dir, queries)


def _fsync_tree(root) -> None:
    """Flushes every file under `root` so that the rename publishes complete files after a crash."""
    for directory, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
