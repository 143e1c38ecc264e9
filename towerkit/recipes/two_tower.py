"""The `two_tower` recipe: a two-tower retrieval model on MovieLens ratings.

Split: the TFRS tutorials' shuffled 80/20 split (`tfrs_tutorial_split`, seeded by `--seed`).
Candidates: every distinct `item_id` of the dataset (ids are unique strings; titles are
kept for display). Feature sets:

- `basic`: query `user_id`, candidate `item_id` embeddings (the TFRS basic retrieval tutorial).
  Unlike the tutorial, the logQ correction and accidental-hit removal are on by default
  (`--no-logq --no-remove-accidental-hits` gives the tutorial's plain in-batch softmax).
- `rich`: query `user_id`, `timestamp`, `user_age`, `user_gender`,
  `user_occupation`, `user_zip_code`; candidate `item_id` and `item_title` tokens
  (the TFRS featurization / context-features / deep-recommenders tutorials).

A run directory holds `run.json`, `query_tower.json` / `candidate_tower.json` (Keras configs,
vocabularies included), `weights/` (a TF checkpoint of both towers) and `metrics.json`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import ClassVar, Optional

import numpy as np
import tensorflow as tf

from towerkit import _validation as check
from towerkit.data import movielens, recipe_data
from towerkit.data import (Vocabulary, take_rows,
                           tfrs_tutorial_split)
from towerkit.features import (FeatureSet, IdEmbedding, NormalizedNumeric, TextEmbedding,
                               TimestampEmbedding)
from towerkit.models import MLP, Tower, TwoTowerModel
from towerkit.recipes.base import (IndexInputs, Recipe, load_run, register_recipe,
                                   write_run_config)
from towerkit.recipes.mixed_precision import (check_mixed_precision, float32_layer_config,
                                              mixed_precision_policy)
from towerkit.recipes.run_state import epoch_seed, fit_resumable, json_default
from towerkit.tasks import Retrieval

__all__ = ["TwoTowerRecipe", "QUERY_FEATURES", "CANDIDATE_FEATURES", "build_towers"]

QUERY_FEATURES = {
    "basic": ("user_id",),
    "rich": ("user_id", "timestamp", "user_age", "user_gender", "user_occupation",
             "user_zip_code"),
}
CANDIDATE_FEATURES = {"basic": ("item_id",), "rich": ("item_id", "item_title")}
CANDIDATE_ID = "item_id"
TITLE = "item_title"
KS = (1, 5, 10, 50, 100)
_DTYPES = {"user_id": tf.string, "timestamp": tf.int64, "user_age": tf.float32,
           "user_gender": tf.bool, "user_occupation": tf.int64, "user_zip_code": tf.string,
           "item_id": tf.string, "item_title": tf.string}

DEFAULT_PARAMS = {
    "features": "basic", "embedding_dim": 32, "layers": "", "optimizer": "adagrad",
    "learning_rate": 0.1, "batch_size": 8192, "temperature": None, "logq": True,
    "remove_accidental_hits": True, "hard_negatives": None, "train_fraction": 0.8,
    "mixed_precision": False,
}


def _layer_sizes(spec) -> list:
    if isinstance(spec, (list, tuple)):
        return [int(s) for s in spec]
    spec = (spec or "").strip()
    try:
        return [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"layers must be comma-separated ints such as '64,32', got {spec!r}.")


def _column(columns: dict, name: str) -> np.ndarray:
    """A column as a NumPy array TF accepts (object bytes -> fixed-width bytes)."""
    values = np.asarray(columns[name])
    return values.astype(bytes) if values.dtype == object else values


def build_towers(params: dict, train: dict, catalogue_ids: np.ndarray,
                 catalogue_titles: np.ndarray) -> tuple:
    """Builds `(query_tower, candidate_tower)` with vocabularies/statistics from `train`.

    Args:
      params: The recipe params (see `DEFAULT_PARAMS`).
      train: Training columns (NumPy).
      catalogue_ids: `[n]` bytes, every candidate id (the movie vocabulary).
      catalogue_titles: `[n]` bytes, their titles (the title token vocabulary).
    """
    kind, dim = params["features"], int(params["embedding_dim"])
    if kind not in QUERY_FEATURES:
        raise ValueError(f"features must be one of {sorted(QUERY_FEATURES)}, got {kind!r}.")
    query = {"user_id": IdEmbedding(Vocabulary.from_values(_column(train, "user_id")).as_list(),
                                    dim, name="user_id")}
    candidate = {CANDIDATE_ID: IdEmbedding([v.decode() for v in catalogue_ids], dim,
                                           name=CANDIDATE_ID)}
    if kind == "rich":
        small = max(4, dim // 4)
        query["timestamp"] = TimestampEmbedding.adapt_from(train["timestamp"], num_buckets=1000,
                                                           embedding_dim=dim, name="timestamp")
        query["user_age"] = NormalizedNumeric.adapt_from(train["user_age"],
                                                             name="user_age")
        query["user_gender"] = IdEmbedding([0, 1], small, name="user_gender")
        query["user_occupation"] = IdEmbedding(
            Vocabulary.from_values(train["user_occupation"]).as_list(), small,
            name="user_occupation")
        query["user_zip_code"] = IdEmbedding(
            Vocabulary.from_values(_column(train, "user_zip_code")).as_list(), small,
            name="user_zip_code")
        candidate[TITLE] = TextEmbedding.adapt_from(catalogue_titles, embedding_dim=dim,
                                                    name=TITLE)
    layers = _layer_sizes(params["layers"])
    if kind == "rich" and not layers:
        layers = [dim]  # concatenated features must be projected back to a common width
    query_tower = Tower(FeatureSet(query, name="query_features"),
                        MLP(layers, name="query_mlp") if layers else None, name="query_tower")
    candidate_tower = Tower(FeatureSet(candidate, name="candidate_features"),
                            MLP(layers, name="candidate_mlp") if layers else None,
                            name="candidate_tower")
    return query_tower, candidate_tower


class _Data:
    """Columns, split and candidate catalogue of a run (deterministic in the run config)."""

    def __init__(self, config: dict):
        self.columns = recipe_data.rating_columns(config)
        n = len(self.columns["user_id"])
        train_size = int(round(n * float(config["params"].get("train_fraction", 0.8))))
        self.train_idx, self.test_idx = tfrs_tutorial_split(n, train_size, seed=config["seed"])
        ids = _column(self.columns, CANDIDATE_ID)
        self.candidate_ids, first = np.unique(ids, return_index=True)
        # Titles identify candidates in the index; a log without them uses the ids.
        titles = _column(self.columns, TITLE) if TITLE in self.columns else ids
        self.candidate_titles = titles[first]

    def split(self, name: str) -> dict:
        if name not in ("train", "test"):
            raise ValueError(f"Unknown split {name!r}; the two_tower recipe has 'train' and 'test'.")
        return take_rows(self.columns, self.train_idx if name == "train" else self.test_idx)

    def candidate_features(self, keys) -> dict:
        features = {CANDIDATE_ID: self.candidate_ids, TITLE: self.candidate_titles}
        return {k: features[k] for k in keys}


def _tensor_dict(columns: dict, keys) -> dict:
    return {k: _column(columns, k) for k in keys}


def _embed(tower, features: dict, batch_size: int = 8192) -> np.ndarray:
    n = len(next(iter(features.values())))
    out = [tower({k: tf.constant(v[i:i + batch_size]) for k, v in features.items()}).numpy()
           for i in range(0, n, batch_size)]
    return np.concatenate(out).astype(np.float32)


def top_k_ids(query_embeddings: np.ndarray, candidate_embeddings: np.ndarray, k: int,
              chunk: int = 4096) -> tuple:
    """Exact top-k by inner product: `(indices [q, k], scores [q, k])`, best first."""
    if k > len(candidate_embeddings):
        raise ValueError(f"k={k} exceeds the catalogue size {len(candidate_embeddings)}.")
    indices, scores = [], []
    for i in range(0, len(query_embeddings), chunk):
        s = query_embeddings[i:i + chunk] @ candidate_embeddings.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        indices.append(np.take_along_axis(part, order, axis=1))
        scores.append(np.take_along_axis(part_scores, order, axis=1))
    return np.concatenate(indices), np.concatenate(scores)


def hit_rates(true_idx: np.ndarray, top_idx: np.ndarray, ks=KS) -> dict:
    """`top_k_categorical_accuracy`: share of rows whose true candidate is in the first k."""
    hits = top_idx == true_idx[:, None]
    return {f"top_{k}_categorical_accuracy": float(hits[:, :k].any(axis=1).mean()) for k in ks}


@register_recipe
class TwoTowerRecipe(Recipe):
    """Two-tower retrieval on MovieLens (`towerkit train --model two_tower`).

    References:
      Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
      Recommendations", RecSys 2019: https://doi.org/10.1145/3298689.3346996
    """

    name = "two_tower"
    default_epochs = 3
    data_class: ClassVar[type] = _Data  # the rows, split and catalogue of a run config

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        d = DEFAULT_PARAMS
        parser.add_argument("--features", choices=sorted(QUERY_FEATURES), default=d["features"],
                            help="feature set (default: %(default)s)")
        parser.add_argument("--embedding-dim", type=check.positive_int, default=d["embedding_dim"])
        parser.add_argument("--layers", default=d["layers"],
                            help="dense layer sizes of both towers, e.g. '64,32' (default: none)")
        parser.add_argument("--optimizer", choices=("adagrad", "adam"), default=d["optimizer"])
        parser.add_argument("--learning-rate", type=check.positive_float,
                            default=d["learning_rate"])
        parser.add_argument("--batch-size", type=check.positive_int, default=d["batch_size"])
        parser.add_argument("--temperature", type=check.positive_float, default=d["temperature"])
        parser.add_argument("--logq", action=argparse.BooleanOptionalAction, default=d["logq"],
                            help="logQ correction from training item frequencies (default: on; "
                                 "top-100 accuracy 0.24 -> 0.39 on 100k, see benchmarks/parity)")
        parser.add_argument("--remove-accidental-hits", action=argparse.BooleanOptionalAction,
                            default=d["remove_accidental_hits"],
                            help="mask in-batch negatives equal to the positive (default: on)")
        parser.add_argument("--hard-negatives", type=check.positive_int,
                            default=d["hard_negatives"])
        parser.add_argument("--train-fraction", type=check.open_fraction,
                            default=d["train_fraction"])
        parser.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction,
                            default=d["mixed_precision"],
                            help="train under the mixed_float16 policy with loss scaling; the "
                                 "saved towers are float32 (default: off)")

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _params(config: dict) -> dict:
        params = dict(DEFAULT_PARAMS)
        params.update(config.get("params") or {})
        unknown = set(params) - set(DEFAULT_PARAMS)
        if unknown:
            raise ValueError(f"Unknown two_tower params {sorted(unknown)}; known: "
                             f"{sorted(DEFAULT_PARAMS)}.")
        return params

    def validate_config(self, config: dict) -> None:
        """Checks every param's type and range, the dataset and its columns, before any work."""
        super().validate_config(config)
        params = self._params(config)
        self._check_tower_params(params)
        if params["temperature"] is not None:
            check.check_float("temperature", params["temperature"], low=0)
        if params["hard_negatives"] is not None:
            check.check_int("hard_negatives", params["hard_negatives"])
        check_mixed_precision(params["mixed_precision"])
        self._check_dataset(config, params)

    @staticmethod
    def _check_tower_params(params: dict) -> None:
        """The checks of the params every MovieLens two-tower recipe shares."""
        if params["features"] not in QUERY_FEATURES:
            raise ValueError(f"features must be one of {sorted(QUERY_FEATURES)}, got "
                             f"{params['features']!r}.")
        check.check_int("embedding_dim", params["embedding_dim"])
        check.check_int("batch_size", params["batch_size"])
        for size in _layer_sizes(params["layers"]):
            check.check_int("layers (each size)", size)
        if params["optimizer"] not in ("adagrad", "adam"):
            raise ValueError(f"optimizer must be 'adagrad' or 'adam', got {params['optimizer']!r}.")
        check.check_float("learning_rate", params["learning_rate"], low=0)
        check.check_float("train_fraction", params["train_fraction"], low=0, high=1,
                          high_open=True)

    def _check_dataset(self, config: dict, params: dict, extra_columns=()) -> None:
        """A ratings log (tfds MovieLens or files) with every column the features (and
        `extra_columns`) read."""
        needed = set(QUERY_FEATURES[params["features"]]) | {CANDIDATE_ID} | set(extra_columns)
        if params["features"] != "basic":
            needed.add(TITLE)
        missing = sorted(needed - recipe_data.column_names(config))
        if missing:
            raise ValueError(f"The {self.name} recipe with --features {params['features']} "
                             f"needs the columns {missing}, which "
                             f"{recipe_data.describe(config)} lacks; use --features basic or "
                             + recipe_data.missing_fix(config, missing) + ".")

    def _load_towers(self, run_dir: pathlib.Path, data: _Data, params: dict) -> tuple:
        run_dir = pathlib.Path(run_dir)
        for name in ("query_tower.json", "candidate_tower.json"):
            if not (run_dir / name).is_file():
                raise ValueError(f"{run_dir} lacks {name}; it is not a finished {self.name} run "
                                 "(train it again).")
        query_tower = _deserialize(run_dir / "query_tower.json")
        candidate_tower = _deserialize(run_dir / "candidate_tower.json")
        _check_feature_names(run_dir, query_tower, candidate_tower)
        test = data.split("test")
        query_tower(_tensor_dict({k: v[:2] for k, v in test.items()},
                                 QUERY_FEATURES[params["features"]]))
        candidate_tower({k: tf.constant(v[:2]) for k, v in
                         data.candidate_features(CANDIDATE_FEATURES[params["features"]]).items()})
        checkpoint = tf.train.Checkpoint(query_tower=query_tower, candidate_tower=candidate_tower)
        try:
            status = checkpoint.read(str(run_dir / "weights" / "towers"))
            status.assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError, IndexError) as e:
            raise ValueError(f"Cannot read the weights of run {run_dir} from "
                             f"{run_dir / 'weights'} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); retrain the run with "
                             "`towerkit train --overwrite`.") from e
        return query_tower, candidate_tower

    # -- contract ----------------------------------------------------------------------------
    def train(self, config: dict, run_dir: pathlib.Path) -> dict:
        params = self._params(config)
        run_dir = pathlib.Path(run_dir)
        write_run_config(run_dir, config)
        tf.keras.utils.set_random_seed(int(config["seed"]))
        data = self.data_class(config)
        train = data.split("train")
        with mixed_precision_policy(params["mixed_precision"]):
            query_tower, candidate_tower, history = self._fit(config, params, train, data,
                                                              run_dir)
        (run_dir / "query_tower.json").write_text(json.dumps(
            float32_layer_config(tf.keras.layers.serialize(query_tower)), default=json_default))
        (run_dir / "candidate_tower.json").write_text(json.dumps(
            float32_layer_config(tf.keras.layers.serialize(candidate_tower)),
            default=json_default))
        tf.train.Checkpoint(query_tower=query_tower, candidate_tower=candidate_tower).write(
            str(run_dir / "weights" / "towers"))
        if params["mixed_precision"]:  # evaluate the float32 towers that the run serves
            query_tower, candidate_tower = self._load_towers(run_dir, data, params)
        metrics = self._evaluate(query_tower, candidate_tower, data, params, "test")
        metrics["train_loss"] = float(history["loss"][-1])
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        return metrics

    def _fit(self, config: dict, params: dict, train: dict, data, run_dir: pathlib.Path):
        """Builds and trains the towers; returns `(query_tower, candidate_tower, history)`."""
        query_tower, candidate_tower = build_towers(params, train, data.candidate_ids,
                                                    data.candidate_titles)
        keys = sorted(set(QUERY_FEATURES[params["features"]])
                      | set(CANDIDATE_FEATURES[params["features"]]))
        sampling = {}
        if params["logq"]:
            vocab = Vocabulary.from_values(_column(train, CANDIDATE_ID))
            sampling = {"sampling_vocabulary": vocab.as_list(), "sampling_counts": vocab.counts}
        needs_ids = params["logq"] or params["remove_accidental_hits"]
        task = Retrieval(temperature=params["temperature"],
                         num_hard_negatives=params["hard_negatives"],
                         remove_accidental_hits=params["remove_accidental_hits"], **sampling)
        model = TwoTowerModel(query_tower, candidate_tower, task,
                              candidate_id_key=CANDIDATE_ID if needs_ids else None)
        optimizer = (tf.keras.optimizers.Adagrad(params["learning_rate"])
                     if params["optimizer"] == "adagrad"
                     else tf.keras.optimizers.Adam(params["learning_rate"]))
        model.compile(optimizer=optimizer)
        # Ids are looked up once here, not in every training step (the towers keep their
        # lookups for evaluation and serving); the examples then live in memory as tensors.
        examples = tf.data.Dataset.from_tensor_slices(
            model.lookup_ids({k: tf.constant(v) for k, v in _tensor_dict(train, keys).items()}))
        num_train, batch_size = len(train["user_id"]), int(params["batch_size"])

        def epoch_batches(epoch: int) -> tf.data.Dataset:
            # A fixed order per epoch, so a resumed run sees the same batches.
            return (examples.shuffle(num_train, seed=epoch_seed(config["seed"], epoch),
                                     reshuffle_each_iteration=False)
                    .batch(batch_size).prefetch(tf.data.AUTOTUNE))

        history = fit_resumable(model, epoch_batches, int(config["epochs"]), run_dir, verbose=2)
        return query_tower, candidate_tower, history

    def _evaluate(self, query_tower, candidate_tower, data: _Data, params: dict, split: str,
                  dump_topn: Optional[str] = None) -> dict:
        rows = data.split(split)
        queries = _embed(query_tower, _tensor_dict(rows, QUERY_FEATURES[params["features"]]))
        candidates = _embed(candidate_tower,
                            data.candidate_features(CANDIDATE_FEATURES[params["features"]]))
        k = min(max(KS), len(candidates))
        top_idx, top_scores = top_k_ids(queries, candidates, k)
        true_idx = np.searchsorted(data.candidate_ids, _column(rows, CANDIDATE_ID))
        metrics = hit_rates(true_idx, top_idx, [x for x in KS if x <= k])
        # Popularity baseline: everyone gets the most-rated training movies.
        train_ids = _column(data.split("train"), CANDIDATE_ID)
        counts = np.bincount(np.searchsorted(data.candidate_ids, train_ids),
                             minlength=len(data.candidate_ids))
        popular = np.argsort(-counts, kind="stable")[:k]
        popular_lists = np.broadcast_to(popular, (len(true_idx), k))
        for name, value in hit_rates(true_idx, popular_lists, [x for x in KS if x <= k]).items():
            metrics[f"popularity_{name}"] = value
        metrics["num_queries"] = int(len(queries))
        metrics["num_candidates"] = int(len(candidates))
        if dump_topn:
            np.savez(dump_topn, query_user_ids=_column(rows, "user_id"),
                     true_ids=_column(rows, CANDIDATE_ID), topn_ids=data.candidate_ids[top_idx],
                     topn_scores=top_scores)
        return metrics

    def restore(self, run_dir) -> tuple:
        """`(query_tower, candidate_tower, data, params)` of a finished run, weights restored."""
        _, config = load_run(run_dir)
        params = self._params(config)
        data = self.data_class(config)
        query_tower, candidate_tower = self._load_towers(run_dir, data, params)
        return query_tower, candidate_tower, data, params

    def evaluate(self, run_dir, split: str = "test", dump_topn: Optional[str] = None) -> dict:
        query_tower, candidate_tower, data, params = self.restore(run_dir)
        return self._evaluate(query_tower, candidate_tower, data, params, split, dump_topn)

    def index_inputs(self, run_dir) -> IndexInputs:
        query_tower, candidate_tower, data, params = self.restore(run_dir)
        query_keys = QUERY_FEATURES[params["features"]]
        test_queries = _tensor_dict(data.split("test"), query_keys)
        return IndexInputs(
            query_model=query_tower,
            query_signature={k: tf.TensorSpec([None], _DTYPES[k], name=k) for k in query_keys},
            candidate_ids=data.candidate_ids,
            candidate_embeddings=_embed(
                candidate_tower, data.candidate_features(CANDIDATE_FEATURES[params["features"]])),
            sample_queries={k: v[:8] for k, v in test_queries.items()},
            candidate_titles=data.candidate_titles,
            tuning_queries={k: v[8:508] for k, v in test_queries.items()},
        )


def _check_feature_names(run_dir, *towers) -> None:
    """Runs trained when the recipes read tfds MovieLens names cannot be fed the dataset-free
    columns: say so, instead of failing on a missing key."""
    names = set()
    for tower in towers:
        tower_names = tower.feature_names
        names.update(tower_names() if callable(tower_names) else tower_names)
    legacy = sorted(n for n in names if n in movielens.RECIPE_NAMES or n.startswith("movie_"))
    if legacy:
        raise ValueError(f"Run {run_dir} reads the features {legacy}: tfds MovieLens names, "
                         "which towerkit's recipes no longer use (see "
                         "towerkit.data.movielens.RECIPE_NAMES); retrain the run with `towerkit "
                         "train --overwrite` (SavedModels it exported keep serving).")


def _deserialize(path: pathlib.Path):
    """A tower from its Keras config file; a damaged file gives a message naming it."""
    try:
        return tf.keras.layers.deserialize(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"Cannot read the tower config {path} ({type(e).__name__}: {e}); the run "
                         "is damaged: retrain it with `towerkit train --overwrite`.") from e
