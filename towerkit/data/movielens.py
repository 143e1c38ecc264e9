"""MovieLens through the ordinary `tensorflow_datasets` loader.

Every TFDS MovieLens config works (`100k-ratings`, `1m-ratings`, `latest-small-ratings`, and the
matching `*-movies` configs). `data_dir` (or the `TFDS_DATA_DIR` environment variable, which
tfds itself honours) points at a prepared data dir; otherwise tfds downloads as usual. Before
calling tfds, towerkit checks whether the config is prepared there; when it is not and the
download host cannot be reached (or `TOWERKIT_OFFLINE=1` is set), it fails within seconds with
`MovieLensUnavailableError`, without writing into the data dir.
"""

from __future__ import annotations

import functools
import os
import socket
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

__all__ = ["load", "load_columns", "feature_names", "interactions", "recipe_columns",
           "recipe_feature_names", "RECIPE_NAMES", "MovieLensUnavailableError"]

# Where tfds downloads MovieLens from (checked before a download is attempted).
_DOWNLOAD_HOST = ("files.grouplens.org", 443)
OFFLINE_ENV = "TOWERKIT_OFFLINE"

_RATINGS_SUFFIX = "-ratings"
_MOVIES_SUFFIX = "-movies"


class MovieLensUnavailableError(RuntimeError):
    """The requested MovieLens config is neither in the data dir nor downloadable."""


def _normalise(config: str) -> str:
    config = config.strip()
    if config.startswith("movielens/"):
        config = config[len("movielens/"):]
    if not (config.endswith(_RATINGS_SUFFIX) or config.endswith(_MOVIES_SUFFIX)):
        raise ValueError(
            f"Unknown MovieLens config {config!r}: expected a TFDS MovieLens config such as "
            "'100k-ratings', '1m-ratings', 'latest-small-ratings' or '100k-movies'."
        )
    return config


def _resolve_data_dir(data_dir: Optional[str]) -> Optional[str]:
    if data_dir is not None:
        return os.fspath(data_dir)
    return os.environ.get("TFDS_DATA_DIR") or None


def _fix(config: str) -> str:
    return ("Fix: point towerkit at a data dir where it is prepared with `--data-dir DIR`, "
            "`data_dir=DIR` or `export TFDS_DATA_DIR=DIR` (prepare it on a machine with internet "
            f"access with `tfds build movielens/{config}` or `tfds.load`), or go online and let "
            "tfds download it.")


def _reachable(host=_DOWNLOAD_HOST, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(host, timeout=timeout).close()
        return True
    except OSError:
        return False


def _builder(config: str, data_dir: Optional[str]):
    return tfds.builder(f"movielens/{config}", data_dir=data_dir)


def _check_prepared(config: str, data_dir: Optional[str], download: bool) -> None:
    """Fails fast (without writing anything) when the config can be neither read nor fetched."""
    try:
        builder = _builder(config, data_dir)
    except Exception as e:  # tfds raises DatasetNotFoundError, ValueError...
        raise MovieLensUnavailableError(
            f"TFDS does not know 'movielens/{config}' ({type(e).__name__}: {e}).") from e
    if builder.is_prepared():
        return
    where = data_dir or "tfds' default data dir"
    if not download:
        raise MovieLensUnavailableError(
            f"TFDS dataset 'movielens/{config}' is not prepared in {where} and download=False. "
            + _fix(config))
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise MovieLensUnavailableError(
            f"TFDS dataset 'movielens/{config}' is not prepared in {where} and "
            f"{OFFLINE_ENV} is set, so towerkit does not download it. " + _fix(config))
    if not _reachable():
        raise MovieLensUnavailableError(
            f"TFDS dataset 'movielens/{config}' is not prepared in {where} and its download "
            f"host {_DOWNLOAD_HOST[0]} cannot be reached (offline?). " + _fix(config))


def feature_names(config: str, data_dir: Optional[str] = None) -> list:
    """The feature names of a MovieLens config, from TFDS metadata (no data is read).

    Raises:
      ValueError: `config` is not a MovieLens config.
    """
    config = _normalise(config)
    return sorted(_builder(config, _resolve_data_dir(data_dir)).info.features.keys())


def load(config: str = "100k-ratings", split: str = "train",
         data_dir: Optional[str] = None, download: bool = True) -> tf.data.Dataset:
    """Loads a MovieLens config as a `tf.data.Dataset` of feature dicts.

    Args:
      config: str. A TFDS MovieLens config, with or without the `movielens/` prefix.
      split: str. TFDS split; MovieLens only ships `train` (towerkit makes its own splits).
      data_dir: str or None. A TFDS data dir; defaults to `$TFDS_DATA_DIR`, then tfds' default.
      download: bool. Whether tfds may download when the data is missing.

    Returns:
      The dataset, one example (a dict of scalar tensors) per rating or movie.

    Raises:
      ValueError: `config` is not a MovieLens config.
      MovieLensUnavailableError: the data is missing and could not be downloaded; the message
        says how to point at a prepared data dir.
    """
    config = _normalise(config)
    resolved = _resolve_data_dir(data_dir)
    _check_prepared(config, resolved, download)
    try:
        return tfds.load(f"movielens/{config}", split=split, data_dir=resolved,
                         download=download)
    except Exception as e:  # tfds raises many types (AssertionError, DownloadError, OSError...)
        raise MovieLensUnavailableError(
            f"Could not load TFDS dataset 'movielens/{config}' (data_dir={resolved!r}): "
            f"{type(e).__name__}: {e}\n"
            "Fix: on a machine with internet access tfds downloads it automatically; offline, "
            "prepare it once elsewhere (`tfds build movielens/<config>` or `tfds.load`) and point "
            "towerkit at that directory with `--data-dir DIR`, `data_dir=DIR`, or "
            "`export TFDS_DATA_DIR=DIR`."
        ) from e


@functools.lru_cache(maxsize=8)
def _load_columns_cached(config: str, data_dir: Optional[str]) -> dict:
    ds = load(config, data_dir=data_dir).ragged_batch(1 << 16)
    chunks: dict[str, list] = {}
    for batch in ds:
        for key, value in batch.items():
            if isinstance(value, tf.RaggedTensor):  # movie_genres: variable length
                flat, splits = value.flat_values.numpy(), value.row_splits.numpy()
                chunks.setdefault(key, []).extend(np.split(flat, splits[1:-1]))
            else:
                chunks.setdefault(key, []).append(value.numpy())
    columns = {}
    for key, parts in chunks.items():
        if parts and isinstance(parts[0], np.ndarray) and parts[0].ndim == 1 and key != "movie_genres":
            columns[key] = np.concatenate(parts)
        else:
            column = np.empty(len(parts), dtype=object)
            column[:] = parts
            columns[key] = column
    for value in columns.values():
        value.setflags(write=False)
    return columns


def load_columns(config: str = "100k-ratings", data_dir: Optional[str] = None) -> dict:
    """Loads a whole MovieLens config into NumPy columns (cached per process).

    Args:
      config: str. A TFDS MovieLens config.
      data_dir: str or None. As in `load`.

    Returns:
      A dict from feature name to a read-only NumPy array of length `num_examples`; string
      features are `bytes` arrays, `movie_genres` is an object array of int64 arrays.
    """
    return _load_columns_cached(_normalise(config), _resolve_data_dir(data_dir))


# TFDS MovieLens feature names -> the recipes' dataset-free column names
# (`towerkit.data.recipe_data`); the features not listed keep their names.
RECIPE_NAMES = {"movie_id": "item_id", "movie_title": "item_title",
                "movie_genres": "item_genres", "user_rating": "rating",
                "raw_user_age": "user_age", "bucketized_user_age": "user_age_bucket",
                "user_occupation_label": "user_occupation"}


def recipe_columns(config: str = "100k-ratings", data_dir: Optional[str] = None) -> dict:
    """`load_columns` under the recipes' column names (`RECIPE_NAMES`): `user_id`, `item_id`,
    `timestamp`, `rating`, `item_title`, `item_genres`, `user_age`, `user_age_bucket`,
    `user_gender`, `user_occupation`, `user_zip_code` (the same read-only arrays)."""
    return {RECIPE_NAMES.get(name, name): values
            for name, values in load_columns(config, data_dir=data_dir).items()}


def recipe_feature_names(config: str, data_dir: Optional[str] = None) -> list:
    """`feature_names` under the recipes' column names (no data is read)."""
    return sorted(RECIPE_NAMES.get(n, n) for n in feature_names(config, data_dir))

# TFDS user profile columns -> names of the user feature table of `interactions`.
_USER_PROFILE = {"bucketized_user_age": "user_age", "user_gender": "user_gender",
                 "user_occupation_label": "user_occupation"}


def interactions(config: str = "100k-ratings", data_dir: Optional[str] = None):
    """A MovieLens ratings config as generic `towerkit.data.Interactions`.

    The one place that names MovieLens columns for the generic data layer: `user_id`,
    `movie_id`, `timestamp` and `user_rating` become the `user`, `item`, `timestamp` and
    `rating` fields (the ids as int64, so they order numerically); the profile columns (when the config has them) form the user feature
    table (`user_age`, `user_gender`, `user_occupation`), and `movie_title`/`movie_genres`
    the item feature table.

    Args:
      config: str. A TFDS MovieLens *ratings* config, e.g. `100k-ratings`.
      data_dir: str or None. As in `load`.

    Returns:
      `Interactions`, one row per rating in TFDS order.

    Raises:
      ValueError: not a ratings config.
      MovieLensUnavailableError: as `load`.
    """
    from towerkit.data.columns import Columns  # pylint: disable=import-outside-toplevel
    from towerkit.data.interactions import Interactions  # pylint: disable=import-outside-toplevel

    if not _normalise(config).endswith(_RATINGS_SUFFIX):
        raise ValueError(f"interactions needs a *-ratings config, got {config!r}.")
    columns = dict(load_columns(config, data_dir=data_dir))
    for c in ("user_id", "movie_id"):  # decimal strings: as integers they sort numerically
        columns[c] = np.array([int(v) for v in columns[c]], dtype=np.int64)
    users, first_user_row = np.unique(columns["user_id"], return_index=True)
    user_table = {"user_id": users}
    user_table.update({name: columns[c][first_user_row] for c, name in _USER_PROFILE.items()
                       if c in columns})
    movies, first_movie_row = np.unique(columns["movie_id"], return_index=True)
    item_table = {"movie_id": movies}
    item_table.update({c: columns[c][first_movie_row] for c in ("movie_title", "movie_genres")
                       if c in columns})
    return Interactions.from_columns(
        columns, Columns(user="user_id", item="movie_id", time="timestamp", rating="user_rating"),
        user_features=user_table if len(user_table) > 1 else None,
        item_features=item_table if len(item_table) > 1 else None,
        source=f"movielens/{_normalise(config)}")
