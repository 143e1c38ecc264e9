"""The `dat` recipe: the Dual Augmented Two-tower model on MovieLens ratings.

"The same towers, augmented": the feature sets, split, candidates and evaluation are those of
the `two_tower` recipe (`--features basic|rich`, the TFRS tutorials' 80/20 split, every
`item_id` a candidate, `top_{1,5,10,50,100}_categorical_accuracy` on the test split). On top:

- each tower is an `AugmentedTower`: the feature embeddings plus an augmented vector (`a_u` by
  `user_id`, `a_v` by `item_id`, zero-initialised, as wide as the tower output) go through an
  MLP (`--layers`, default `64,32`) and are L2-normalised; scores are `<p_u, p_v> / temperature`;
- the Adaptive-Mimic losses (`--amm-user-weight`, `--amm-item-weight`) and the Category
  Alignment Loss (`--cal-weight`) over MovieLens genres;
- the main loss is the in-batch softmax with logQ correction (`--loss softmax`, default) or
  binary cross-entropy with `--num-negatives` uniformly sampled negatives (`--loss bce`).

Genres: a MovieLens movie has one to six genres; TFDS stores them sorted by label id
(Action=0, Adventure=1, ..., Drama=7, ...). CAL needs one category per item, so a movie is
assigned its *first* genre in that list (the smallest label id): "Action|Comedy" -> Action.
This keeps the assignment fixed per movie; the major category of a batch is then almost always
Drama or Action.

Ablations: `--no-augment` (the same towers without augmented vectors, hence without AMM),
`--amm-user-weight 0 --amm-item-weight 0` (augmented vectors trained by the main loss only),
`--cal-weight 0`.

Unknown users/items at serving: their ids map to the augmented tables' out-of-vocabulary row,
which no training example reaches and which therefore stays at its zero initialisation: an
unknown user is embedded from its other features with `a_u = 0` (see `AugmentedTower`).

`--validation-fraction F` holds out the last share F of the shuffled training rows as a
`valid` split (the test split is unchanged); the defaults were chosen on such a split, see
`benchmarks/dat/RESULTS.md`.

A run directory holds `run.json`, `query_tower.json` / `candidate_tower.json` (Keras configs),
`weights/` (a TF checkpoint of both towers) and `metrics.json`.

References:
  Yu et al., "A Dual Augmented Two-tower Model for Online Large-scale Recommendation",
  DLP-KDD 2021 (workshop proceedings: https://dlp-kdd.github.io/).
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Sequence

import numpy as np
import tensorflow as tf

from towerkit import _validation as check
from towerkit.data import Vocabulary
from towerkit.features import IdEmbedding
from towerkit.models import MLP, AugmentedTower, DualAugmentedTwoTowerModel
from towerkit.recipes.base import Recipe, register_recipe, write_run_config
from towerkit.recipes.run_state import epoch_seed, fit_resumable, json_default
from towerkit.recipes.two_tower import (CANDIDATE_FEATURES, CANDIDATE_ID, QUERY_FEATURES,
                                        TwoTowerRecipe, _column, _Data, _layer_sizes,
                                        _tensor_dict, build_towers)
from towerkit.tasks import Retrieval

__all__ = ["DatRecipe", "GENRE", "first_genres"]

GENRE = "item_genre"
QUERY_ID = "user_id"
DEFAULT_PARAMS = {
    "features": "basic", "embedding_dim": 32, "layers": "64,32", "optimizer": "adam",
    "learning_rate": 0.01, "batch_size": 2048, "temperature": 0.1, "logq": True,
    "remove_accidental_hits": True, "train_fraction": 0.8, "validation_fraction": 0.0,
    "loss": "softmax", "num_negatives": 10, "augment": True, "amm_user_weight": 0.5,
    "amm_item_weight": 0.5, "cal_weight": 0.01,
}


def first_genres(genres: np.ndarray) -> np.ndarray:
    """Each row's first genre id (TFDS sorts a movie's genres by id), `[n]` int64.

    Raises:
      ValueError: a row without any genre.
    """
    out = np.empty(len(genres), np.int64)
    for i, row in enumerate(genres):
        row = np.asarray(row)
        if row.size == 0:
            raise ValueError(f"Row {i} has no item_genres; give every item at least one genre.")
        out[i] = int(row.min())
    return out


class _DatData(_Data):
    """`two_tower`'s data plus first-genre ids and an optional validation split of train."""

    def __init__(self, config: dict):
        super().__init__(config)
        fraction = float(config["params"].get("validation_fraction", 0.0) or 0.0)
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {fraction}.")
        self.valid_idx = np.zeros(0, np.int64)
        if fraction > 0:
            cut = len(self.train_idx) - int(round(len(self.train_idx) * fraction))
            self.train_idx, self.valid_idx = self.train_idx[:cut], self.train_idx[cut:]
        self.genres = first_genres(self.columns["item_genres"])
        self.num_categories = int(self.genres.max()) + 1

    def split(self, name: str) -> dict:
        if name == "valid":
            if not len(self.valid_idx):
                raise ValueError("This run has no 'valid' split; train it with "
                                 "--validation-fraction F (e.g. 0.1).")
            rows = self.valid_idx
        elif name in ("train", "test"):
            rows = self.train_idx if name == "train" else self.test_idx
        else:
            raise ValueError(f"Unknown split {name!r}; the dat recipe has 'train', 'test' and "
                             "(with --validation-fraction) 'valid'.")
        out = {k: v[rows] for k, v in self.columns.items() if k != "item_genres"}
        out[GENRE] = self.genres[rows]
        return out


def build_dat_towers(params: dict, train: dict, catalogue_ids: np.ndarray,
                     catalogue_titles: np.ndarray) -> tuple:
    """`(query_tower, candidate_tower)`: `two_tower`'s feature sets, an MLP, augmented vectors.

    Args:
      params: The recipe params (see `DEFAULT_PARAMS`).
      train: Training columns (NumPy).
      catalogue_ids: `[n]` bytes, every candidate id.
      catalogue_titles: `[n]` bytes, their titles.
    """
    layers = _layer_sizes(params["layers"])
    if not layers:
        raise ValueError("dat needs at least one tower layer (--layers, e.g. '64,32'): the "
                         "augmented vector is concatenated to the features and projected.")
    base = dict(params, layers="")
    query, candidate = build_towers(base, train, catalogue_ids, catalogue_titles)
    width = layers[-1]
    query_augment = candidate_augment = None
    if params["augment"]:
        users = Vocabulary.from_values(_column(train, QUERY_ID)).as_list()
        query_augment = IdEmbedding(users, width, embeddings_initializer="zeros",
                                    name="user_id_augment")
        candidate_augment = IdEmbedding([v.decode() for v in catalogue_ids], width,
                                        embeddings_initializer="zeros", name="item_id_augment")
    query_tower = AugmentedTower(query.features, MLP(layers, name="query_mlp"),
                                 augment=query_augment, augment_key=QUERY_ID,
                                 name="query_tower")
    candidate_tower = AugmentedTower(candidate.features, MLP(layers, name="candidate_mlp"),
                                     augment=candidate_augment, augment_key=CANDIDATE_ID,
                                     name="candidate_tower")
    return query_tower, candidate_tower


@register_recipe
class DatRecipe(TwoTowerRecipe):
    """Dual Augmented Two-tower retrieval on MovieLens (`towerkit train --model dat`).

    References:
      Yu et al., "A Dual Augmented Two-tower Model for Online Large-scale Recommendation",
      DLP-KDD 2021 (workshop proceedings: https://dlp-kdd.github.io/).
    """

    name = "dat"
    default_epochs = 3
    data_class = _DatData

    def __init__(self, callbacks: Sequence[tf.keras.callbacks.Callback] = ()):
        """Args:
          callbacks: Keras callbacks spanning the whole training (e.g. to watch the augmented
            vectors); the CLI passes none.
        """
        self.callbacks = list(callbacks)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        d = DEFAULT_PARAMS
        parser.add_argument("--features", choices=sorted(QUERY_FEATURES), default=d["features"],
                            help="feature set, as two_tower (default: %(default)s)")
        parser.add_argument("--embedding-dim", type=int, default=d["embedding_dim"])
        parser.add_argument("--layers", default=d["layers"],
                            help="tower layer sizes; the last is the output and augmented-vector "
                                 "width (default: %(default)s)")
        parser.add_argument("--optimizer", choices=("adagrad", "adam"), default=d["optimizer"])
        parser.add_argument("--learning-rate", type=float, default=d["learning_rate"])
        parser.add_argument("--batch-size", type=int, default=d["batch_size"])
        parser.add_argument("--temperature", type=float, default=d["temperature"],
                            help="score = <p_u, p_v> / temperature (default: %(default)s)")
        parser.add_argument("--logq", action=argparse.BooleanOptionalAction, default=d["logq"],
                            help="logQ correction of the in-batch softmax (default: on; "
                                 "--loss softmax only)")
        parser.add_argument("--remove-accidental-hits", action=argparse.BooleanOptionalAction,
                            default=d["remove_accidental_hits"])
        parser.add_argument("--train-fraction", type=float, default=d["train_fraction"])
        parser.add_argument("--validation-fraction", type=float,
                            default=d["validation_fraction"],
                            help="hold out this share of train as the 'valid' split")
        parser.add_argument("--loss", choices=("softmax", "bce"), default=d["loss"],
                            help="in-batch softmax with logQ, or BCE with sampled negatives "
                                 "(default: %(default)s)")
        parser.add_argument("--num-negatives", type=int, default=d["num_negatives"],
                            help="uniform negatives per positive with --loss bce")
        parser.add_argument("--augment", action=argparse.BooleanOptionalAction,
                            default=d["augment"],
                            help="augmented vectors a_u, a_v (--no-augment: the same towers "
                                 "without them, hence without AMM)")
        parser.add_argument("--amm-user-weight", type=float, default=d["amm_user_weight"])
        parser.add_argument("--amm-item-weight", type=float, default=d["amm_item_weight"])
        parser.add_argument("--cal-weight", type=float, default=d["cal_weight"])

    def validate_config(self, config: dict) -> None:
        """Checks every param's type and range, the dataset and its columns, before any work."""
        Recipe.validate_config(self, config)  # two_tower's own params (hard negatives) differ
        params = self._params(config)
        self._check_tower_params(params)
        check.check_float("temperature", params["temperature"], low=0)
        check.check_float("validation_fraction", params["validation_fraction"], low=0, high=1,
                          low_open=False, high_open=True)
        for key in ("amm_user_weight", "amm_item_weight", "cal_weight"):
            check.check_float(key, params[key], low=0, low_open=False)
        self._check_dataset(config, params, extra_columns=("item_genres",))

    @staticmethod
    def _params(config: dict) -> dict:
        params = dict(DEFAULT_PARAMS)
        params.update(config.get("params") or {})
        unknown = set(params) - set(DEFAULT_PARAMS)
        if unknown:
            raise ValueError(f"Unknown dat params {sorted(unknown)}; known: "
                             f"{sorted(DEFAULT_PARAMS)}.")
        if params["loss"] not in ("softmax", "bce"):
            raise ValueError(f"loss must be 'softmax' or 'bce', got {params['loss']!r}.")
        if params["loss"] == "bce" and int(params["num_negatives"]) < 1:
            raise ValueError(f"--loss bce needs --num-negatives >= 1, got "
                             f"{params['num_negatives']}.")
        return params

    def build_model(self, config: dict, data: _DatData) -> DualAugmentedTwoTowerModel:
        """The untrained model of a run config (towers, task, loss weights)."""
        params = self._params(config)
        train = data.split("train")
        query_tower, candidate_tower = build_dat_towers(params, train, data.candidate_ids,
                                                        data.candidate_titles)
        sampling = {}
        if params["logq"] and params["loss"] == "softmax":
            vocab = Vocabulary.from_values(_column(train, CANDIDATE_ID))
            sampling = {"sampling_vocabulary": vocab.as_list(), "sampling_counts": vocab.counts}
        task = Retrieval(remove_accidental_hits=params["remove_accidental_hits"], **sampling)
        return DualAugmentedTwoTowerModel(
            query_tower, candidate_tower, task, loss=params["loss"],
            temperature=float(params["temperature"]),
            amm_user_weight=float(params["amm_user_weight"]),
            amm_item_weight=float(params["amm_item_weight"]),
            cal_weight=float(params["cal_weight"]), category_key=GENRE,
            num_categories=data.num_categories, candidate_id_key=CANDIDATE_ID)

    def training_dataset(self, config: dict, data: _DatData, epoch: int = 0) -> tf.data.Dataset:
        """Epoch `epoch`'s training batches (with sampled negatives for `--loss bce`).

        The order and the negatives are fixed by the run seed and the epoch
        (`run_state.epoch_seed`), so a resumed run sees the batches an uninterrupted one would.
        """
        params = self._params(config)
        train = data.split("train")
        keys = sorted(set(QUERY_FEATURES[params["features"]])
                      | set(CANDIDATE_FEATURES[params["features"]]) | {GENRE})
        seed = epoch_seed(config["seed"], epoch)
        ds = (tf.data.Dataset.from_tensor_slices(_tensor_dict(train, keys))
              .shuffle(len(train[QUERY_ID]), seed=seed, reshuffle_each_iteration=False)
              .batch(int(params["batch_size"])))
        if params["loss"] == "bce":
            catalogue = {k: tf.constant(v) for k, v in data.candidate_features(
                CANDIDATE_FEATURES[params["features"]]).items()}
            num_items = len(data.candidate_ids)
            num_negatives = int(params["num_negatives"])

            def add_negatives(index, batch):
                rows = tf.random.stateless_uniform(
                    [tf.shape(batch[QUERY_ID])[0], num_negatives], seed=[seed, index],
                    maxval=num_items, dtype=tf.int64)
                return {**batch, "negatives": {k: tf.gather(v, rows)
                                               for k, v in catalogue.items()}}

            ds = ds.enumerate().map(add_negatives)
        return ds.prefetch(tf.data.AUTOTUNE)

    def train(self, config: dict, run_dir: pathlib.Path) -> dict:
        """Trains, saves the run, returns test metrics (and `valid_*` ones with a valid split).

        Training runs through `run_state.fit_resumable` (checkpoints, `--resume`), with the
        recipe's `callbacks` spanning the whole training.
        """
        params = self._params(config)
        run_dir = pathlib.Path(run_dir)
        write_run_config(run_dir, config)
        tf.keras.utils.set_random_seed(int(config["seed"]))
        data = self.data_class(config)
        model = self.build_model(config, data)
        optimizer = (tf.keras.optimizers.Adagrad(params["learning_rate"])
                     if params["optimizer"] == "adagrad"
                     else tf.keras.optimizers.Adam(params["learning_rate"]))
        model.compile(optimizer=optimizer)
        history = fit_resumable(model, lambda epoch: self.training_dataset(config, data, epoch),
                                int(config["epochs"]), run_dir, callbacks=self.callbacks,
                                verbose=2)
        query_tower, candidate_tower = model.query_tower, model.candidate_tower
        (run_dir / "query_tower.json").write_text(json.dumps(
            tf.keras.layers.serialize(query_tower), default=json_default))
        (run_dir / "candidate_tower.json").write_text(json.dumps(
            tf.keras.layers.serialize(candidate_tower), default=json_default))
        tf.train.Checkpoint(query_tower=query_tower, candidate_tower=candidate_tower).write(
            str(run_dir / "weights" / "towers"))
        metrics = self._evaluate(query_tower, candidate_tower, data, params, "test")
        if len(data.valid_idx):
            valid = self._evaluate(query_tower, candidate_tower, data, params, "valid")
            metrics.update({f"valid_{k}": v for k, v in valid.items()})
        for key in ("loss", "main_loss", "amm_user_loss", "amm_item_loss", "cal_loss"):
            metrics[f"train_{key}"] = float(history[key][-1])
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        return metrics
