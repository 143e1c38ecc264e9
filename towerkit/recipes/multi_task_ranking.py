"""Multi-task ranking recipes: `shared_bottom`, `mmoe`, `cgc`, `ple`, `esmm`, `aitm`, `single_task`.

Data: the MovieLens multi-task setting of `towerkit.data.build_exposures` (every rating plus
`--negatives-per-rating` sampled unrated pairs; labels click, like, ctcvr, rating), split
80/10/10 by `--data-seed` (default 0, independent of the training `--seed`, so that runs with
different seeds share one split). Training uses `train`, stops early on the `valid` loss
(patience `--patience`, best weights restored); `evaluate` scores `test` (or `valid`).

Features, shared by every model: the user id and profile (age bucket, gender, occupation, zip
code's first character; looked up by user id inside the model), the movie id and genres (looked
up by movie id), and the exposure timestamp (bucketized + normalised). A served ranker therefore
needs only `user_id`, `timestamp` and candidate `item_id`s.

Tasks: the mixture models (`shared_bottom`, `mmoe`, `cgc`, `ple`) train `click` over all
exposures and `like` on clicked exposures, reporting `ctcvr = p_click * p_like`; `--rating`
adds a rating regression head (on clicks). `esmm` and `aitm` train `click` and `ctcvr` over all
exposures. `single_task --task T` trains one tower for one task (the baselines).

Metrics (`evaluate`): exact AUCs over the whole split (`towerkit.evaluation.StreamingAUC`):
`click_auc` and `ctcvr_auc` over all exposures, `like_auc` over clicked exposures;
`rating_rmse` on clicked exposures when trained; `gates`: per gate the mean weight of each
expert and the mean entropy (`towerkit.evaluation.GateStatistics`).

Defaults (Adam learning rate 0.01, batch 4096, patience 2) were picked on the validation split's
loss with MMoE: learning rate 0.003 reached 0.834 after 6 epochs, 0.01 reached 0.781 after 6 and
0.770 after 8 (seed 42).

A run directory holds `run.json`, `model.json` (the model's Keras config, lookup tables
included), `weights/` (a TF checkpoint) and `metrics.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
from typing import ClassVar, Optional

import numpy as np
import tensorflow as tf

from towerkit.data import recipe_data
from towerkit.data.exposures import MultiTaskExposures, build_exposures
from towerkit.evaluation import GateStatistics, StreamingAUC
from towerkit.features import AttributeEmbedding, FeatureSet, TimestampEmbedding
from towerkit.models import AITM, CGC, ESMM, MMoE, PLE, SharedBottom
from towerkit import _validation as check
from towerkit.recipes.base import (IndexInputs, Recipe, load_run, register_recipe,
                                   write_run_config)
from towerkit.recipes.best_epoch import BestEpoch
from towerkit.recipes.run_state import epoch_seed, fit_resumable, json_default

__all__ = ["MultiTaskRankingRecipe", "RankerInputs", "build_features", "REQUEST_FEATURES",
           "CANDIDATE_FEATURE"]

#: Per-request features a served ranker takes (besides the candidate ids).
REQUEST_FEATURES = {"user_id": tf.string, "timestamp": tf.int64}
CANDIDATE_FEATURE = "item_id"
# The rating columns the exposures and the shared features read.
NEEDED_COLUMNS = ("user_id", "item_id", "timestamp", "rating", "user_gender",
                  "user_occupation", "user_age", "user_zip_code", "item_genres")
_AGE_BINS = (18, 25, 35, 45, 50, 56)

DEFAULT_PARAMS = {
    "negatives_per_rating": 1.0, "data_seed": 0, "embedding_dim": 16, "attribute_dim": 8,
    "expert_sizes": "64", "bottom_sizes": "64", "tower_sizes": "32", "num_experts": 4,
    "num_task_experts": 2, "num_shared_experts": 2, "num_levels": 2, "rating": False,
    "loss_weights": "", "constraint_weight": 0.6, "learning_rate": 0.01, "batch_size": 4096,
    "patience": 2, "task": None,
}


@dataclasses.dataclass
class RankerInputs:
    """What `towerkit export` needs to serve a trained ranker.

    Attributes:
      model: The `MultiTaskRanker`; called with a flat feature dict (`REQUEST_FEATURES` plus
        `item_id`), it returns `{task: [batch]}`.
      request_signature: dict[str, tf.TensorSpec]. Per-request inputs, `[None]` each.
      candidate_feature: str. Name of the candidate id input (`item_id`).
      tasks: tuple[str]. The model's output tasks.
      sample_requests: dict[str, np.ndarray]. A few real requests (for warmup), keyed like
        `request_signature`.
      sample_candidates: np.ndarray `[len(sample), n]` bytes. Candidate ids for those requests.
    """

    model: tf.keras.Model
    request_signature: dict
    candidate_feature: str
    tasks: tuple
    sample_requests: dict
    sample_candidates: np.ndarray


def _sizes(spec) -> list:
    if isinstance(spec, (list, tuple)):
        return [int(s) for s in spec]
    try:
        sizes = [int(s) for s in str(spec).split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"layer sizes must be comma-separated ints such as '64,32', got "
                         f"{spec!r}.") from None
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"layer sizes must be positive ints such as '64,32', got {spec!r}.")
    return sizes


def _loss_weights(spec) -> dict:
    return check.parse_task_weights(spec, "--loss-weights",
                                    "TASK=WEIGHT pairs such as 'click=1,like=0.5'")


def _user_profiles(columns: dict) -> tuple:
    """`(user ids, profile codes per user, num_codes)` from the rating rows (first row per user).

    Codes (0 is padding): gender 1-2, occupation 3-23, age bucket 24-30, zip code's first
    character 31+.
    """
    users, first = np.unique(np.asarray(columns["user_id"]).astype(bytes), return_index=True)
    gender = np.asarray(columns["user_gender"])[first].astype(np.int64)
    occupation = np.asarray(columns["user_occupation"])[first].astype(np.int64)
    age = np.digitize(np.asarray(columns["user_age"])[first], _AGE_BINS)
    zips = [z[:1] for z in np.asarray(columns["user_zip_code"]).astype(bytes)[first]]
    zip_vocab = {z: i for i, z in enumerate(sorted(set(zips)))}
    occupation_offset, age_offset = 3, 3 + int(occupation.max()) + 1
    zip_offset = age_offset + len(_AGE_BINS) + 1
    codes = [[1 + int(g), occupation_offset + int(o), age_offset + int(a),
              zip_offset + zip_vocab[z]] for g, o, a, z in zip(gender, occupation, age, zips)]
    return users, codes, zip_offset + len(zip_vocab)


def build_features(params: dict, data: MultiTaskExposures, ratings: dict) -> FeatureSet:
    """The shared feature encoder: user id + profile, movie id + genres, timestamp.

    Args:
      params: recipe params (`embedding_dim`, `attribute_dim`).
      data: the exposures (the movie catalogue and genres; timestamps of `train`).
      ratings: the raw rating columns (user profiles).
    """
    dim, attr = int(params["embedding_dim"]), int(params["attribute_dim"])
    users, profile, num_profile_codes = _user_profiles(ratings)
    genre_codes = [[int(g) + 1 for g in genres] for genres in data.item_genres]
    num_genre_codes = 1 + max((max(g) for g in genre_codes if g), default=0)
    timestamps = data.columns["timestamp"][data.splits["train"]]
    return FeatureSet({
        "user_id": AttributeEmbedding(users, profile, num_profile_codes, dim=attr, id_dim=dim,
                                      name="user"),
        "item_id": AttributeEmbedding(data.item_ids, genre_codes, num_genre_codes, dim=attr,
                                       id_dim=dim, name="movie"),
        "timestamp": TimestampEmbedding.adapt_from(timestamps, num_buckets=50,
                                                   embedding_dim=attr, name="timestamp"),
    }, name="features")


class MultiTaskRankingRecipe(Recipe):
    """Base of the multi-task ranking recipes; subclasses set `name` and `build_model`."""

    default_epochs: ClassVar[int] = 10

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        d = DEFAULT_PARAMS
        parser.add_argument("--negatives-per-rating", type=float, default=d["negatives_per_rating"],
                            help="sampled unrated exposures per rating (default: %(default)s)")
        parser.add_argument("--data-seed", type=int, default=d["data_seed"],
                            help="seed of the sampled exposures and the split (default: "
                                 "%(default)s; independent of --seed)")
        parser.add_argument("--embedding-dim", type=int, default=d["embedding_dim"],
                            help="user and movie id embedding width (default: %(default)s)")
        parser.add_argument("--attribute-dim", type=int, default=d["attribute_dim"],
                            help="profile, genre and time embedding width (default: %(default)s)")
        parser.add_argument("--tower-sizes", default=d["tower_sizes"],
                            help="hidden widths of each task tower (default: %(default)s)")
        parser.add_argument("--loss-weights", default=d["loss_weights"],
                            help="per-task loss weights, e.g. 'click=1,like=0.5' (default: 1 each)")
        parser.add_argument("--learning-rate", type=float, default=d["learning_rate"],
                            help="Adam learning rate (default: %(default)s)")
        parser.add_argument("--batch-size", type=int, default=d["batch_size"])
        parser.add_argument("--patience", type=int, default=d["patience"],
                            help="epochs without a better validation loss before stopping "
                                 "(default: %(default)s)")
        cls.add_model_arguments(parser)

    @classmethod
    def add_model_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The model's own flags."""

    @staticmethod
    def add_rating_argument(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rating", action=argparse.BooleanOptionalAction,
                            default=DEFAULT_PARAMS["rating"],
                            help="also train a rating regression head (default: off)")

    @staticmethod
    def add_expert_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--expert-sizes", default=DEFAULT_PARAMS["expert_sizes"],
                            help="each expert's widths (default: %(default)s)")

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def params(config: dict) -> dict:
        params = dict(DEFAULT_PARAMS)
        params.update(config.get("params") or {})
        unknown = set(params) - set(DEFAULT_PARAMS)
        if unknown:
            raise ValueError(f"Unknown {config.get('recipe')} params {sorted(unknown)}; known: "
                             f"{sorted(DEFAULT_PARAMS)}.")
        return params

    @staticmethod
    def mixture_tasks(params: dict) -> tuple:
        return ("click", "like", "rating") if params["rating"] else ("click", "like")

    def build_model(self, features, params: dict, seed: int):
        raise NotImplementedError

    @staticmethod
    def load_data(config: dict) -> tuple:
        params = MultiTaskRankingRecipe.params(config)
        ratings = recipe_data.rating_columns(config)
        data = build_exposures(negatives_per_rating=float(params["negatives_per_rating"]),
                               seed=int(params["data_seed"]), columns=ratings)
        return data, ratings

    @staticmethod
    def _dataset(rows: dict, batch_size: int, shuffle_seed: Optional[int] = None):
        ds = tf.data.Dataset.from_tensor_slices(rows)
        if shuffle_seed is not None:
            ds = ds.shuffle(len(rows["click"]), seed=shuffle_seed, reshuffle_each_iteration=False)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def restore(self, run_dir) -> tuple:
        """Rebuilds a trained run's model: `(model, data, config)`."""
        _, config = load_run(run_dir)
        run_dir = pathlib.Path(run_dir)
        if not (run_dir / "model.json").is_file():
            raise ValueError(f"{run_dir} lacks model.json; it is not a finished "
                             f"{config['recipe']} run (train it again).")
        data, _ = self.load_data(config)
        model = tf.keras.layers.deserialize(json.loads((run_dir / "model.json").read_text()))
        model({k: v[:2] for k, v in data.split("test").items()})  # creates the variables
        tf.train.Checkpoint(model=model).read(
            str(run_dir / "weights" / "model")).expect_partial().assert_existing_objects_matched()
        return model, data, config

    @staticmethod
    def score(model, rows: dict, batch_size: int = 4096) -> dict:
        """Exact metrics of `model` over every row of `rows` (see the module docstring)."""
        aucs = {t: StreamingAUC() for t in ("click", "like", "ctcvr") if t in model.tasks
                or (t == "ctcvr" and {"click", "like"} <= set(model.tasks))}
        gates = GateStatistics()
        squared, clicked = 0.0, 0.0
        n = len(rows["click"])
        for start in range(0, n, batch_size):
            batch = {k: v[start:start + batch_size] for k, v in rows.items()}
            outputs, weights = model.forward(batch, training=False)
            outputs = {k: v.numpy() for k, v in outputs.items()}
            if weights:
                gates.update({k: v.numpy() for k, v in weights.items()})
            click = batch["click"]
            for task, auc in aucs.items():
                auc.update(batch[task], outputs[task], weights=click if task == "like" else None)
            if "rating" in outputs:
                squared += float((click * (outputs["rating"] - batch["rating"]) ** 2).sum())
                clicked += float(click.sum())
        metrics = {f"{task}_auc": auc.result() for task, auc in aucs.items()}
        if "rating" in model.tasks:
            metrics["rating_rmse"] = float(np.sqrt(squared / max(clicked, 1.0)))
        if gates.result():
            metrics["gates"] = gates.result()
        metrics["num_exposures"] = int(n)
        return metrics

    def validate_config(self, config: dict) -> None:
        """Checks every param's type and range and the dataset, before any work starts."""
        super().validate_config(config)
        params = self.params(config)
        check.check_float("negatives_per_rating", params["negatives_per_rating"], low=0)
        check.check_int("data_seed", params["data_seed"], minimum=0)
        for key in ("embedding_dim", "attribute_dim", "num_experts", "num_task_experts",
                    "num_levels", "batch_size", "patience"):
            check.check_int(key, params[key])
        check.check_int("num_shared_experts", params["num_shared_experts"], minimum=0)
        for key in ("expert_sizes", "bottom_sizes", "tower_sizes"):
            for size in _sizes(params[key]):
                check.check_int(f"{key} (each size)", size)
        check.check_float("learning_rate", params["learning_rate"], low=0)
        check.check_float("constraint_weight", params["constraint_weight"], low=0,
                          low_open=False)
        for task, weight in _loss_weights(params["loss_weights"]).items():
            check.check_float(f"loss weight of {task}", weight, low=0, low_open=False)
        missing = sorted(set(NEEDED_COLUMNS) - recipe_data.column_names(config))
        if missing:
            raise ValueError(f"The {self.name} recipe ranks exposures built from rated "
                             f"interactions with user profiles and item genres; "
                             f"{recipe_data.describe(config)} lacks {missing}: "
                             + recipe_data.missing_fix(config, missing) + ".")

    # -- contract ----------------------------------------------------------------------------
    def train(self, config: dict, run_dir: pathlib.Path) -> dict:
        params = self.params(config)
        run_dir = pathlib.Path(run_dir)
        write_run_config(run_dir, config)
        seed = int(config["seed"])
        tf.keras.utils.set_random_seed(seed)
        data, ratings = self.load_data(config)
        features = build_features(params, data, ratings)
        model = self.build_model(features, params, seed)
        model.compile(optimizer=tf.keras.optimizers.Adam(float(params["learning_rate"])))
        batch = int(params["batch_size"])
        train_rows = data.split("train")
        valid = next(iter(self._dataset(data.split("valid"), len(data.split("valid")["click"]))))
        # Early stopping on the loss of the whole validation split (one batch), best epoch kept;
        # BestEpoch maximises, hence the sign.
        stopper = BestEpoch(lambda: -float(model.compute_loss(valid, training=False)),
                            patience=int(params["patience"]))
        history = fit_resumable(
            model, lambda epoch: self._dataset(train_rows, batch,
                                               shuffle_seed=epoch_seed(seed, epoch)),
            int(config["epochs"]), run_dir, callbacks=[stopper], verbose=2)
        (run_dir / "model.json").write_text(json.dumps(tf.keras.layers.serialize(model),
                                                       default=json_default))
        tf.train.Checkpoint(model=model).write(str(run_dir / "weights" / "model"))
        metrics = self.score(model, data.split("test"))
        metrics["epochs_trained"] = len(stopper.scores)
        metrics["best_epoch"] = stopper.best_epoch
        metrics["valid_loss"] = -stopper.best_score
        metrics["train_loss"] = float(history["loss"][-1])
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        return metrics

    def evaluate(self, run_dir, split: str = "test", dump_topn: Optional[str] = None) -> dict:
        if dump_topn:
            raise ValueError("--dump-topn applies to retrieval runs; a ranker scores exposures, "
                             "it has no top-N lists.")
        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test' for a ranking run, got {split!r}.")
        model, data, _ = self.restore(run_dir)
        return self.score(model, data.split(split))

    def index_inputs(self, run_dir) -> IndexInputs:
        raise ValueError(
            f"{self.name} is a ranker: it scores candidates, it has no index. Serve it behind a "
            "retrieval run: `towerkit export RETRIEVAL_RUN --index KIND --rerank "
            f"{run_dir} --retrieve N --k K --model-base-path DIR`, or alone with "
            f"`towerkit export {run_dir} --model-base-path DIR`.")

    def ranker_inputs(self, run_dir) -> RankerInputs:
        """The trained model and the serving inputs (see `RankerInputs`)."""
        model, data, _ = self.restore(run_dir)
        test = data.split("test")
        rng = np.random.default_rng(0)
        sample = {k: np.asarray(test[k][:8]) for k in REQUEST_FEATURES}
        candidates = data.item_ids[rng.integers(0, len(data.item_ids), size=(8, 20))]
        return RankerInputs(
            model=model,
            request_signature={k: tf.TensorSpec([None], dtype, name=k)
                               for k, dtype in REQUEST_FEATURES.items()},
            candidate_feature=CANDIDATE_FEATURE, tasks=tuple(sorted(model(
                {k: v[:1] for k, v in test.items()}))),
            sample_requests=sample, sample_candidates=candidates)


def _common(params: dict) -> dict:
    return {"loss_weights": _loss_weights(params["loss_weights"]),
            "tower_sizes": _sizes(params["tower_sizes"])}


@register_recipe
class SharedBottomRecipe(MultiTaskRankingRecipe):
    """`towerkit train --model shared_bottom`: Caruana 1997 (see `towerkit.models.SharedBottom`)."""

    name = "shared_bottom"

    @classmethod
    def add_model_arguments(cls, parser):
        parser.add_argument("--bottom-sizes", default=DEFAULT_PARAMS["bottom_sizes"],
                            help="shared layer widths (default: %(default)s)")
        cls.add_rating_argument(parser)

    def build_model(self, features, params, seed):
        return SharedBottom(features, self.mixture_tasks(params),
                            bottom_sizes=_sizes(params["bottom_sizes"]), **_common(params))


@register_recipe
class MMoERecipe(MultiTaskRankingRecipe):
    """`towerkit train --model mmoe`: Ma et al., KDD 2018 (see `towerkit.models.MMoE`)."""

    name = "mmoe"

    @classmethod
    def add_model_arguments(cls, parser):
        parser.add_argument("--num-experts", type=int, default=DEFAULT_PARAMS["num_experts"])
        cls.add_expert_arguments(parser)
        cls.add_rating_argument(parser)

    def build_model(self, features, params, seed):
        return MMoE(features, self.mixture_tasks(params), num_experts=int(params["num_experts"]),
                    expert_sizes=_sizes(params["expert_sizes"]), seed=seed, **_common(params))


@register_recipe
class PLERecipe(MultiTaskRankingRecipe):
    """`towerkit train --model ple`: Tang et al., RecSys 2020 (see `towerkit.models.PLE`)."""

    name = "ple"

    @classmethod
    def add_model_arguments(cls, parser):
        if cls.name == "ple":
            parser.add_argument("--num-levels", type=int, default=DEFAULT_PARAMS["num_levels"])
        parser.add_argument("--num-task-experts", type=int,
                            default=DEFAULT_PARAMS["num_task_experts"])
        parser.add_argument("--num-shared-experts", type=int,
                            default=DEFAULT_PARAMS["num_shared_experts"])
        cls.add_expert_arguments(parser)
        cls.add_rating_argument(parser)

    def build_model(self, features, params, seed):
        return PLE(features, self.mixture_tasks(params), num_levels=int(params["num_levels"]),
                   num_task_experts=int(params["num_task_experts"]),
                   num_shared_experts=int(params["num_shared_experts"]),
                   expert_sizes=_sizes(params["expert_sizes"]), seed=seed, **_common(params))


@register_recipe
class CGCRecipe(PLERecipe):
    """`towerkit train --model cgc`: Tang et al., RecSys 2020 (see `towerkit.models.CGC`)."""

    name = "cgc"

    def build_model(self, features, params, seed):
        return CGC(features, self.mixture_tasks(params),
                   num_task_experts=int(params["num_task_experts"]),
                   num_shared_experts=int(params["num_shared_experts"]),
                   expert_sizes=_sizes(params["expert_sizes"]), seed=seed, **_common(params))


@register_recipe
class ESMMRecipe(MultiTaskRankingRecipe):
    """`towerkit train --model esmm`: Ma et al., SIGIR 2018 (see `towerkit.models.ESMM`)."""

    name = "esmm"

    def build_model(self, features, params, seed):
        return ESMM(features, **_common(params))


@register_recipe
class AITMRecipe(MultiTaskRankingRecipe):
    """`towerkit train --model aitm`: Xi et al., KDD 2021 (see `towerkit.models.AITM`)."""

    name = "aitm"

    @classmethod
    def add_model_arguments(cls, parser):
        parser.add_argument("--constraint-weight", type=float,
                            default=DEFAULT_PARAMS["constraint_weight"],
                            help="weight of the label constraint (default: %(default)s, as in "
                                 "the authors' code)")

    def build_model(self, features, params, seed):
        return AITM(features, constraint_weight=float(params["constraint_weight"]),
                    **_common(params))


@register_recipe
class SingleTaskRecipe(MultiTaskRankingRecipe):
    """`towerkit train --model single_task --task T`: one tower for one task (the baselines).

    The model is `SharedBottom` with one task: `click` and `ctcvr` train over all exposures,
    `like` on clicked exposures.
    """

    name = "single_task"

    @classmethod
    def add_model_arguments(cls, parser):
        parser.add_argument("--task", choices=("click", "like", "ctcvr"), default="click",
                            help="the one task to train (default: %(default)s)")
        parser.add_argument("--bottom-sizes", default=DEFAULT_PARAMS["bottom_sizes"],
                            help="layer widths below the tower (default: %(default)s)")

    def build_model(self, features, params, seed):
        task = params["task"] or "click"
        if task not in ("click", "like", "ctcvr"):
            raise ValueError(f"--task must be click, like or ctcvr, got {task!r}.")
        return SharedBottom(features, (task,), bottom_sizes=_sizes(params["bottom_sizes"]),
                            **_common(params))
