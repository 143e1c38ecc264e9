"""The recipe contract: trainable end-to-end workflows that the `towerkit` CLI drives.

A recipe is a registered `Recipe` subclass. `towerkit train --model NAME` instantiates the
recipe registered under `NAME`, calls `train(config, run_dir)`, and later commands reload the
run with `load_run(run_dir)` to `evaluate` it or to get its `index_inputs` for `towerkit export`.

A run directory holds `run.json` (see `RUN_KEYS`, plus the `state`/`files` completion record)
and whatever the recipe saves (weights, vocabularies). Runs are trained in a staging directory,
checkpointed, resumable and published atomically: see `towerkit.recipes.run_state`.
"""

from __future__ import annotations

import abc
import argparse
import dataclasses
import functools
import json
import os
import pathlib
from typing import Any, ClassVar, Optional, Union

import numpy as np
import tensorflow as tf

from towerkit.data import recipe_data
from towerkit.recipes import run_state

__all__ = [
    "IndexInputs",
    "Recipe",
    "RUN_FILE",
    "RUN_KEYS",
    "available_recipes",
    "get_recipe",
    "load_run",
    "make_run_config",
    "mark_run_complete",
    "register_recipe",
    "write_run_config",
]

RUN_FILE = "run.json"
RUN_KEYS = ("recipe", "dataset", "data_dir", "seed", "epochs", "params", "towerkit_version")

PathLike = Union[str, os.PathLike]


@dataclasses.dataclass
class IndexInputs:
    """Everything `towerkit export` needs to build and save an index for a trained run.

    Attributes:
      query_model: A Keras model/layer mapping the raw query feature dict to `[batch, dim]`
        or `[batch, num_interests, dim]` float32 embeddings.
      query_signature: dict[str, tf.TensorSpec]. The raw serving inputs, batch dim `None`.
      candidate_ids: np.ndarray `[n]`, bytes or int64, unique.
      candidate_embeddings: np.ndarray `[n, dim]` float32.
      sample_queries: dict[str, np.ndarray]. A few real queries (same keys as
        `query_signature`) for warmup and checks.
      candidate_titles: Optional np.ndarray `[n]` of display titles aligned with `candidate_ids`.
      tuning_queries: Optional dict[str, np.ndarray]. Held-out real queries (same keys as
        `query_signature`, a few hundred) on which `towerkit export --target-recall` tunes an
        ANN index against exact search; `sample_queries` when not given.
      make_index: Optional callable `(index_class, k) -> unbuilt Index` for runs whose serving
        is not one index over all candidates (`mt_ebr`: one index of `index_class` per item
        cluster, merged under quotas, `towerkit.index.ClusteredIndex`); None builds
        `index_class(query_model=query_model, k=k)`.
    """

    query_model: Any
    query_signature: dict
    candidate_ids: np.ndarray
    candidate_embeddings: np.ndarray
    sample_queries: dict
    candidate_titles: Optional[np.ndarray] = None
    tuning_queries: Optional[dict] = None
    make_index: Optional[Any] = None

    def __post_init__(self):
        ids = np.asarray(self.candidate_ids)
        if ids.ndim != 1:
            raise ValueError(f"candidate_ids must be 1-D [n], got shape {ids.shape}.")
        if ids.dtype.kind not in ("S", "O", "i", "u"):
            raise TypeError(
                f"candidate_ids must be bytes or int64, got dtype {ids.dtype}; encode strings "
                "with np.char.encode(ids, 'utf-8') or cast integers with .astype(np.int64).")
        if ids.dtype.kind in ("i", "u"):
            ids = ids.astype(np.int64)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("candidate_ids must be unique; deduplicate the candidate corpus.")
        emb = np.asarray(self.candidate_embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(ids):
            raise ValueError(
                f"candidate_embeddings must be [n={len(ids)}, dim], got shape {emb.shape}.")
        for name, spec in self.query_signature.items():
            if not isinstance(spec, tf.TensorSpec):
                raise TypeError(f"query_signature[{name!r}] must be a tf.TensorSpec, got {spec!r}.")
        for field in ("sample_queries", "tuning_queries"):
            queries = getattr(self, field)
            missing = set(self.query_signature) - set(queries if queries is not None else
                                                      self.query_signature)
            if missing:
                raise ValueError(f"{field} lacks the query features {sorted(missing)}.")
        if self.candidate_titles is not None and len(self.candidate_titles) != len(ids):
            raise ValueError("candidate_titles must align with candidate_ids (same length).")
        self.candidate_ids = ids
        self.candidate_embeddings = emb


class Recipe(abc.ABC):
    """A trainable end-to-end workflow behind `towerkit train/evaluate/export`.

    Subclasses set `name`, implement `train`, `evaluate` and `index_inputs`, may add CLI flags in
    `add_arguments` (their values arrive in `config["params"]`), and are registered with
    `@register_recipe`. Recipes are constructed without arguments.

    `config` is the dict stored in `run.json`: `{"recipe", "dataset", "data_dir", "seed",
    "epochs", "params", "towerkit_version"}` (build it with `make_run_config`). `train` must write
    it to the run directory (`write_run_config`) so that `load_run` can find the recipe again.
    """

    name: ClassVar[str] = ""
    default_epochs: ClassVar[int] = 3

    def __init_subclass__(cls, **kwargs):
        # Every recipe's own `train` runs through `run_state.train_atomically`: staging
        # directory, completion record, atomic publish, `overwrite`/`resume`.
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("train")
        if own is not None and not getattr(own, "_towerkit_atomic", False):
            cls.train = _atomic(own)

    def validate_config(self, config: dict) -> None:
        """Checks `config` before any work starts; raises ValueError/TypeError naming the fix.

        The base checks the `run.json` keys; recipes override it (calling `super()`) to check
        their params (ranges, choices) and the dataset.
        """
        missing = [k for k in RUN_KEYS if k not in config]
        if missing:
            raise ValueError(f"Run config lacks {missing}; build it with make_run_config().")
        if config.get("data") is not None:
            recipe_data.check_data(config["data"])
            if config["dataset"] is not None:
                raise ValueError("A run config names its data once: a tfds 'dataset' or your "
                                 "own files in 'data', not both.")
        elif not isinstance(config["dataset"], str) or not config["dataset"]:
            raise ValueError(f"dataset must be a TFDS name such as 'movielens/100k-ratings' "
                             f"(or pass your own files as data=file_data(...)), got "
                             f"{config['dataset']!r}.")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Adds recipe-specific flags; their parsed values become `config["params"]`."""

    @abc.abstractmethod
    def train(self, config: dict, run_dir: pathlib.Path) -> dict:
        """Trains on `config`, writes the run to `run_dir`, returns the final metrics.

        Subclasses implement `train(config, run_dir)` writing into the directory they are
        given (a staging directory) and train through `run_state.fit_resumable`; callers get
        the wrapped form `train(config, run_dir, *, overwrite=False, resume=False,
        checkpoint_every=None)`, which validates `run_dir` and the config (`validate_config`)
        first, then publishes the finished run atomically (see `towerkit.recipes.run_state`).
        """

    @abc.abstractmethod
    def evaluate(self, run_dir: PathLike, split: str = "test",
                 dump_topn: Optional[str] = None) -> dict:
        """Scores the run on `split`; optionally writes its top-N lists to `dump_topn` (.npz)."""

    @abc.abstractmethod
    def index_inputs(self, run_dir: PathLike) -> IndexInputs:
        """Returns what `towerkit export` needs to index and serve the run."""


def _atomic(train):
    @functools.wraps(train)
    def wrapper(self, config: dict, run_dir, *, overwrite: bool = False,
                resume: bool = False, checkpoint_every: Optional[int] = None) -> dict:
        if getattr(self, "_towerkit_training", False):  # super().train inside a recipe's train
            return train(self, config, pathlib.Path(run_dir))
        self._towerkit_training = True
        try:
            return run_state.train_atomically(self, train, config, run_dir,
                                              overwrite=overwrite, resume=resume,
                                              checkpoint_every=checkpoint_every)
        finally:
            self._towerkit_training = False

    wrapper._towerkit_atomic = True
    return wrapper


_REGISTRY: dict[str, type] = {}


def register_recipe(cls: type) -> type:
    """Class decorator: registers a `Recipe` subclass under `cls.name`.

    Raises:
      TypeError: `cls` is not a `Recipe` subclass.
      ValueError: `cls.name` is empty or already taken by another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, Recipe)):
        raise TypeError(f"register_recipe expects a Recipe subclass, got {cls!r}.")
    name = getattr(cls, "name", "")
    if not name or not isinstance(name, str):
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute `name`.")
    existing = _REGISTRY.get(name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ValueError(
            f"Recipe name {name!r} is already registered by {existing.__module__}."
            f"{existing.__qualname__}; pick another name.")
    _REGISTRY[name] = cls
    return cls


def available_recipes() -> list:
    """The registered recipe names, sorted."""
    return sorted(_REGISTRY)


def get_recipe(name: str) -> type:
    """Returns the recipe class registered under `name`.

    Raises:
      ValueError: no recipe has that name; the message lists the available ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"Unknown recipe {name!r}. Available recipes: {', '.join(available_recipes()) or 'none'}"
            " (towerkit.recipes imports the recipe modules that register them).") from None


def make_run_config(recipe: str, dataset: Optional[str] = None,
                    data_dir: Optional[PathLike] = None, seed: int = 42,
                    epochs: Optional[int] = None, params: Optional[dict] = None,
                    data: Optional[dict] = None) -> dict:
    """Builds a `run.json` config; `epochs=None` takes the recipe's `default_epochs`.

    The data is either `dataset` (a tfds name such as `movielens/100k-ratings`, read from
    `data_dir`) or `data`, the caller's own files (`towerkit.data.recipe_data.file_data`).
    """
    from towerkit import __version__

    if (dataset is None) == (data is None):
        raise ValueError("Pass the run's data once: dataset='movielens/100k-ratings' (tfds) or "
                         "data=file_data(PATH, user=..., item=...) (your own files).")
    if data is not None:
        recipe_data.check_data(data)
        if data_dir is not None:
            raise ValueError("data_dir is the tfds data dir; a run on your own files (data=...) "
                             "does not use it.")

    recipe_cls = get_recipe(recipe)
    if epochs is None:
        epochs = recipe_cls.default_epochs
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}.")
    return {
        "recipe": recipe,
        "dataset": dataset,
        "data_dir": os.path.abspath(os.fspath(data_dir)) if data_dir is not None else None,
        "seed": seed,
        "epochs": epochs,
        "params": dict(params or {}),
        "towerkit_version": __version__,
        **({"data": dict(data)} if data is not None else {}),
    }


def write_run_config(run_dir: PathLike, config: dict) -> pathlib.Path:
    """Writes `config` to `run_dir/run.json` (creating `run_dir`) and returns the file path.

    A `state` record already in the file is kept (a recipe rewriting its config while it
    trains does not mark the run complete or unfinished); `mark_run_complete` sets it.
    """
    missing = [k for k in RUN_KEYS if k not in config]
    if missing:
        raise ValueError(f"Run config lacks {missing}; build it with make_run_config().")
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RUN_FILE
    config = {k: v for k, v in config.items() if k not in run_state.STATE_KEYS}
    if path.is_file():
        try:
            existing = json.loads(path.read_text())
        except json.JSONDecodeError:
            existing = {}
        config.update({k: existing[k] for k in run_state.STATE_KEYS if k in existing})
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def load_run(run_dir: PathLike) -> tuple:
    """Reloads a run directory.

    Args:
      run_dir: A directory written by `towerkit train` (or `Recipe.train`).

    Returns:
      `(recipe, config)`: an instance of the run's recipe and the `run.json` dict.

    Raises:
      ValueError: `run_dir` has no readable `run.json`, names an unknown recipe, is not a
        complete run (unfinished: resume it; no completion record: retrain it), or a file of
        the run is missing, truncated or modified (the message names the file).
    """
    path = pathlib.Path(run_dir) / RUN_FILE
    if pathlib.Path(run_dir).exists() and not pathlib.Path(run_dir).is_dir():
        raise ValueError(f"{run_dir} is a file, not a run directory; pass the directory "
                         "written by `towerkit train --out`.")
    if not path.is_file() and (run_state.staging_dir(run_dir) / RUN_FILE).is_file():
        raise ValueError(
            f"{run_dir} has not finished training (an unfinished run is staged at "
            f"{run_state.staging_dir(run_dir)}): finish it with `towerkit train --resume "
            f"{run_dir}`.")
    if not path.is_file():
        raise ValueError(
            f"{run_dir} is not a towerkit run: {path} is missing. Create one with "
            "`towerkit train --model NAME --dataset movielens/100k-ratings --out RUN`.")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is corrupt ({e}); retrain the run.") from e
    if not isinstance(config, dict) or "recipe" not in config:
        raise ValueError(f"{path} has no 'recipe' key; it is not a towerkit run config.")
    import towerkit.recipes  # noqa: F401  (registers the built-in recipes)

    recipe = get_recipe(config["recipe"])()
    run_state.check_run_complete(run_dir, config)
    return recipe, config


mark_run_complete = run_state.mark_run_complete
