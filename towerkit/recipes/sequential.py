"""Sequential retrieval recipes on the sequential benchmark protocol: `youtube_dnn`, `gru`, `popularity`.

Data: `towerkit.data.sequential_protocol.SequentialProtocol` (per-user histories, the users
split 80/10/10, "history before k -> item k" training examples). Every recipe retrieves over
the whole catalogue and is scored with Recall/HR/NDCG@20/50 (`towerkit.evaluation`).

`SequentialRecipe` is the reusable base: a subclass sets `name`, adds its flags in
`add_tower_arguments` and builds its query tower from the item embedding table in
`build_query_tower(params, protocol, item_embedding)`; training (in-batch softmax with logQ,
sampled softmax with logQ, or the full softmax over the catalogue), evaluation, the top-N dump
and `index_inputs` come from the base (override `build_model` to change the training model).
Multi-interest towers returning `[batch, num_interests, dim]` work unchanged: in training the
interest closest to the target scores it, in retrieval items are scored by their best interest.
Helpers for benchmarks: `resolve_params(config)`, `restore(run_dir)`, `top_n(model, protocol,
split)`, `load_protocol(config)`.

Example:
```python
@register_recipe
class MyRecipe(SequentialRecipe):
    name = "my_tower"

    def build_query_tower(self, params, protocol, item_embedding):
        return MyTower(item_embedding, output_dim=params["embedding_dim"])
```

Serving inputs (`index_inputs().query_signature`): `history`, tf.string `[batch, max_history]`
raw TFDS movie ids, oldest first, padded with `""`; `history_length`, tf.int32 `[batch]`, the
number of real items at the front of `history`. Strings are what clients have; the query model
maps them to item indices with a `StringLookup` whose out-of-vocabulary index is 0, the padding
index, so unknown or filtered-out movies are ignored like padding. Items beyond
`history_length` are ignored too. With `--profile` (youtube_dnn, mind), the raw profile
values are inputs as well: `user_age` (the `user_age_bucket` column), `user_gender` (0/1) and
`user_occupation`, int64 `[batch]`; unknown values count as
missing, so a client without a user's profile sends -1 (or any value outside the vocabulary).
`youtube_dnn` with the query-time example age (`--query-age last_history`, its default) also
takes `query_timestamp`, int64 `[batch]`: Unix seconds of the query (the time of the user's
last history item, as the evaluation feeds it); 0 (or any value <= 0) means "unknown" and gives
example age 0, the end of the training window.

A run directory holds `run.json`, `weights/` (a TF checkpoint of the query tower and the
candidate table), `catalogue.npz` (item ids and titles) and `metrics.json`.
"""

from __future__ import annotations

import abc
import argparse
import json
import pathlib
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from towerkit.data import recipe_data
from towerkit.models.sequential_retrieval import SequentialRetrievalModel, ServingQueryModel
from towerkit.data.sequential_protocol import SequentialProtocol
from towerkit.evaluation import evaluate_topn, popularity_topn, top_n_items
from towerkit import _validation as check
from towerkit.recipes.base import IndexInputs, Recipe, register_recipe, write_run_config
from towerkit.recipes.best_epoch import BestEpoch
from towerkit.recipes.run_state import epoch_seed, fit_resumable
from towerkit.tasks.retrieval import Retrieval
from towerkit.tasks.sampled_softmax import SampledSoftmax
from towerkit.towers.gru import GRUTower
from towerkit.towers.youtube_dnn import YouTubeDNN

__all__ = ["SequentialRecipe", "SequentialRetrievalModel", "ServingQueryModel",
           "YouTubeDNNRecipe", "GRURecipe", "PopularityRecipe", "TOP_N", "load_protocol"]

TOP_N = 50
QUERY_AGES = ("last_history", "zero")
# Chosen on the valid users (benchmarks/sequential/RESULTS.md).
YOUTUBE_DNN_OUTPUT_DEFAULT = "linear"
METRIC_NS = (20, 50)
LOSSES = ("full", "sampled", "inbatch")


def load_protocol(config: dict) -> SequentialProtocol:
    """The protocol of a run config, tfds or the caller's files (cached per process)."""
    return SequentialProtocol.from_run_config(
        config, max_history=int(config["params"].get("max_history", 20)))


def _check_movielens(config: dict) -> None:
    """An interaction log with event times: a tfds ratings config or files with a time column."""
    if recipe_data.is_file_data(config):
        if "time" not in config["data"]["columns"]:
            raise ValueError(f"The {config['recipe']} recipe orders each user's items by time: "
                             "pass --time-column C (the log's event-time column).")
        return
    recipe_data.tfds_name(config)


def tower_user_features(tower) -> set:
    """Names of the user profile features a query tower reads (they become serving inputs).

    YouTube DNN reads them through `side_embeddings`, MIND through its `profile_embedding`
    (a `towerkit.layers.ProfileEmbedding`).
    """
    names = set(getattr(tower, "side_embeddings", None) or {})
    profile = getattr(tower, "profile_embedding", None)
    names.update(getattr(profile, "feature_names", ()))
    return names


def _dump(path: str, protocol: SequentialProtocol, split: str, topn: np.ndarray) -> None:
    users = protocol.split(split).user_ids
    np.savez(path, user_id=users.astype(bytes),
             topn_item_id=protocol.item_ids[topn].astype(bytes))


def _metrics(protocol: SequentialProtocol, split: str, topn: np.ndarray) -> dict:
    metrics = evaluate_topn(topn, protocol.split(split).ground_truth, METRIC_NS)
    metrics["num_users"] = len(topn)
    return metrics


def _legacy_routing_checkpoint(model, path: str) -> bool:
    """Whether `path` is a checkpoint written before `CapsuleRouting` stored its inference
    logits: it has no `inference_logits` value, and holds every other variable of the model
    (the tables are the only model variables left unmatched)."""
    keys = [k for k, _ in tf.train.list_variables(path) if k.endswith("VARIABLE_VALUE")]
    if any("inference_logits" in k for k in keys):
        return False
    variables = {id(v): v for v in [*model.query_tower.variables,
                                    *model.candidate_embedding.variables]}.values()
    tables = [v for v in variables if v.name.split("/")[-1].startswith("inference_logits")]
    return bool(tables) and len(keys) == len(variables) - len(tables)


class SequentialRecipe(Recipe):
    """Base of the trainable sequential recipes: subclasses implement `build_query_tower`.

    Common flags: `--embedding-dim`, `--max-history`, `--batch-size`, `--learning-rate`,
    `--loss {full,sampled,inbatch}`, `--num-negatives`, `--temperature`, `--l2-normalize`,
    `--separate-candidate-embeddings`, `--early-stopping PATIENCE`. Subclasses add theirs in
    `add_tower_arguments`.

    Early stopping (every trainable sequence recipe, `BestEpoch`): after each epoch the valid
    users' recall@50 is computed; training stops `PATIENCE` (default 3) epochs after the best
    one, at most `--epochs` (default: the recipe's `default_epochs`, a cap), and the best
    epoch's weights are kept. Epoch counts fixed on one dataset do not transfer to another
    (a larger catalogue, fewer users); the valid users decide instead. Params without
    `early_stopping` (hand-built ones, run configs written before the flag) get the same
    default; `"early_stopping": 0` trains the fixed `epochs`.
    """

    default_epochs = 30

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--embedding-dim", type=check.positive_int, default=64)
        parser.add_argument("--max-history", type=check.positive_int, default=20)
        parser.add_argument("--batch-size", type=check.positive_int, default=256)
        parser.add_argument("--learning-rate", type=check.positive_float, default=1e-3)
        parser.add_argument("--loss", choices=LOSSES, default="full",
                            help="full softmax over the catalogue, sampled softmax with logQ, "
                                 "or in-batch softmax with logQ (default: %(default)s)")
        parser.add_argument("--num-negatives", type=check.positive_int, default=500,
                            help="negatives per batch for --loss sampled")
        parser.add_argument("--temperature", type=check.positive_float, default=1.0)
        parser.add_argument("--l2-normalize", action="store_true",
                            help="cosine scores (use with --temperature ~0.05-0.2)")
        parser.add_argument("--separate-candidate-embeddings", action="store_true",
                            help="a candidate table separate from the history item table")
        parser.add_argument("--early-stopping", type=int, default=3, metavar="PATIENCE",
                            help="stop after PATIENCE epochs without a better valid recall@50 "
                                 "and keep the best epoch's weights (0 = off; default "
                                 "%(default)s, --epochs is then a maximum)")
        cls.add_tower_arguments(parser)

    @classmethod
    def add_tower_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Tower-specific flags (their values arrive in `params`)."""

    @abc.abstractmethod
    def build_query_tower(self, params: dict, protocol: SequentialProtocol,
                          item_embedding: tf.keras.layers.Embedding) -> tf.keras.layers.Layer:
        """The query tower: maps the feature dict (see `SequentialProtocol.train_dataset`) to
        `[batch, embedding_dim]` or `[batch, num_interests, embedding_dim]`."""

    # ---- model -----------------------------------------------------------------------------
    @staticmethod
    def resolve_params(config: dict) -> dict:
        """`config["params"]` completed with the defaults of the common flags."""
        params = {"embedding_dim": 64, "max_history": 20, "batch_size": 256,
                  "learning_rate": 1e-3, "loss": "full", "num_negatives": 500,
                  "temperature": 1.0, "l2_normalize": False,
                  "separate_candidate_embeddings": False, "early_stopping": 3}
        params.update(config.get("params") or {})
        if params["loss"] not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {params['loss']!r}.")
        return params

    def validate_config(self, config: dict) -> None:
        """Checks the common params' types and ranges and the dataset, before any work."""
        super().validate_config(config)
        params = self.resolve_params(config)
        for name in ("embedding_dim", "max_history", "batch_size", "num_negatives"):
            check.check_int(name, params[name])
        for name in ("learning_rate", "temperature"):
            check.check_float(name, params[name], low=0)
        _check_movielens(config)

    def build_task(self, params: dict, protocol: SequentialProtocol):
        if params["loss"] == "inbatch":
            counts = np.bincount(protocol.train_examples["target"],
                                 minlength=protocol.num_items + 1)
            seen = np.flatnonzero(counts)
            return Retrieval(temperature=params["temperature"], remove_accidental_hits=True,
                             sampling_vocabulary=[int(i) for i in seen],
                             sampling_counts=counts[seen])
        return SampledSoftmax(
            sampling_probability=protocol.target_probability,
            num_negatives=params["num_negatives"] if params["loss"] == "sampled" else None,
            temperature=params["temperature"])

    def build_model(self, params: dict, protocol: SequentialProtocol) -> SequentialRetrievalModel:
        dim = int(params["embedding_dim"])
        items = tf.keras.layers.Embedding(protocol.num_items + 1, dim, name="item_embedding")
        candidates = (tf.keras.layers.Embedding(protocol.num_items + 1, dim,
                                                name="candidate_embedding")
                      if params["separate_candidate_embeddings"] else items)
        tower = self.build_query_tower(params, protocol, items)
        attributes = {}
        if params.get("genres"):
            if protocol.sequences.item_genres is None:
                raise ValueError("--genres needs item genres: a MovieLens config with "
                                 "item_genres, or --item-features with a genres column.")
            attributes["genres"] = protocol.sequences.item_genres
        model = SequentialRetrievalModel(tower, candidates, self.build_task(params, protocol),
                                         l2_normalize=bool(params["l2_normalize"]),
                                         item_attributes=attributes,
                                         example_age_scale=self.query_age_scale(params, protocol))
        model.query({k: tf.constant(v[:2]) for k, v in protocol.split("valid").features.items()})
        return model

    def query_age_scale(self, params: dict, protocol: SequentialProtocol) -> Optional[tuple]:
        """`example_age_scale` of the model (None: queries keep `example_age` 0)."""
        return None

    def early_stopping(self, params: dict, model, protocol: SequentialProtocol):
        """The `BestEpoch` callback of `--early-stopping` (None when off)."""
        patience = int(params.get("early_stopping", 0))
        if patience < 0:
            raise ValueError(f"--early-stopping must be >= 0 (0 = off), got {patience}.")
        if patience == 0:
            return None
        return BestEpoch(lambda: _metrics(protocol, "valid", self.top_n(model, protocol,
                                                                        "valid"))[
            f"recall@{TOP_N}"], patience)

    def _checkpoint(self, model: SequentialRetrievalModel) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(query_tower=model.query_tower,
                                   candidate_embedding=model.candidate_embedding)

    def query_embeddings(self, model, protocol, split: str) -> np.ndarray:
        out = [model.query(batch).numpy() for batch in protocol.query_dataset(split)]
        return np.concatenate(out)

    def top_n(self, model, protocol, split: str) -> np.ndarray:
        """`[users, TOP_N]` item indices retrieved for the users of `split`, best first."""
        return top_n_items(self.query_embeddings(model, protocol, split),
                           model.candidates().numpy(), TOP_N)

    # ---- Recipe contract -------------------------------------------------------------------
    def train(self, config: dict, run_dir: pathlib.Path) -> dict:
        run_dir = pathlib.Path(run_dir)
        params = self.resolve_params(config)
        protocol = load_protocol(config)
        tf.keras.utils.set_random_seed(int(config["seed"]))
        model = self.build_model(params, protocol)
        model.compile(optimizer=tf.keras.optimizers.Adam(params["learning_rate"]),
                      steps_per_execution=32)
        stopper = self.early_stopping(params, model, protocol)
        start = time.perf_counter()
        # One fixed order per epoch (seeded by run seed and epoch), so a resumed run sees the
        # batches an uninterrupted one would.
        history = fit_resumable(
            model, lambda epoch: protocol.train_dataset(
                int(params["batch_size"]), seed=epoch_seed(config["seed"], epoch)),
            int(config["epochs"]), run_dir, callbacks=[stopper] if stopper is not None else ())
        train_seconds = time.perf_counter() - start
        write_run_config(run_dir, config)
        self._checkpoint(model).write(str(run_dir / "weights" / "ckpt"))
        np.savez(run_dir / "catalogue.npz", item_ids=protocol.item_ids[1:].astype(bytes),
                 titles=(protocol.sequences.item_titles[1:].astype(bytes)
                         if protocol.sequences.item_titles is not None else
                         protocol.item_ids[1:].astype(bytes)))
        metrics = {f"valid_{k}": v for k, v in
                   _metrics(protocol, "valid", self.top_n(model, protocol, "valid")).items()}
        metrics["train_seconds"] = train_seconds
        metrics["final_loss"] = float(history["loss"][-1])
        if stopper is not None:
            # `train_seconds` then includes the per-epoch valid scoring.
            metrics["best_epoch"] = stopper.best_epoch
            metrics["epochs_run"] = len(stopper.scores)
            metrics[f"valid_recall@{TOP_N}_per_epoch"] = stopper.scores
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        return metrics

    def restore(self, run_dir) -> tuple:
        """`(config, protocol, model)` of a trained run, weights restored."""
        from towerkit.recipes.base import load_run

        _, config = load_run(run_dir)
        params = self.resolve_params(config)
        protocol = load_protocol(config)
        model = self.build_model(params, protocol)
        path = tf.train.latest_checkpoint(str(pathlib.Path(run_dir) / "weights")) or str(
            pathlib.Path(run_dir) / "weights" / "ckpt")
        try:
            status = self._checkpoint(model).read(path)
            try:
                status.assert_existing_objects_matched()
            except AssertionError:
                if not _legacy_routing_checkpoint(model, path):
                    raise
                # Saved before MIND's inference routing logits were a weight: the table keeps
                # its initial value, the draw those runs made in the graph (same routing).
                status.expect_partial()
        except (tf.errors.NotFoundError, tf.errors.DataLossError, AssertionError, ValueError) as e:
            raise ValueError(f"Cannot restore the weights of run {run_dir} ({type(e).__name__}: "
                             f"{e}); retrain it with `towerkit train`.") from e
        return config, protocol, model

    def evaluate(self, run_dir, split: str = "test", dump_topn: Optional[str] = None) -> dict:
        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test' (held-out users), got {split!r}.")
        _, protocol, model = self.restore(run_dir)
        topn = self.top_n(model, protocol, split)
        if dump_topn:
            _dump(dump_topn, protocol, split, topn)
        metrics = _metrics(protocol, split, topn)
        metrics.update(self.extra_metrics(model, protocol, topn))
        return metrics

    def extra_metrics(self, model, protocol: SequentialProtocol, topn: np.ndarray) -> dict:
        """Recipe-specific keys `evaluate` adds to the common metrics (none here)."""
        return {}

    def index_inputs(self, run_dir) -> IndexInputs:
        config, protocol, model = self.restore(run_dir)
        length = protocol.max_history
        used = [n for n in protocol.sequences.user_features
                if n in tower_user_features(model.query_tower)]
        vocabularies = {n: protocol.sequences.user_feature_vocabularies[n] for n in used}
        query_model = ServingQueryModel(protocol.item_ids[1:], model, length, vocabularies)
        signature = {"history": tf.TensorSpec([None, length], tf.string, name="history"),
                     "history_length": tf.TensorSpec([None], tf.int32, name="history_length")}
        for name in vocabularies:
            signature[name] = tf.TensorSpec([None], tf.int64, name=name)
        timed = model.example_age_scale is not None
        if timed:
            signature["query_timestamp"] = tf.TensorSpec([None], tf.int64,
                                                         name="query_timestamp")

        def queries(split, rows: slice) -> dict:
            """Raw serving inputs of the held-out users `rows` of `split`."""
            out = {"history": protocol.item_ids[split.history[rows]].astype(bytes),
                   "history_length": split.history_length[rows].astype(np.int32)}
            for name, vocab in vocabularies.items():
                # Raw TFDS values as int64 (age bucket, gender 0/1, occupation label).
                out[name] = vocab[split.features[name][rows] - 1].astype(np.int64)
            if timed:
                out["query_timestamp"] = split.features["query_timestamp"][rows].astype(np.int64)
            return out

        sample = queries(protocol.split("test"), slice(0, 8))
        tuning = queries(protocol.split("valid"), slice(None))
        titles = protocol.sequences.item_titles
        return IndexInputs(
            query_model=query_model, query_signature=signature,
            candidate_ids=protocol.item_ids[1:].astype(bytes),
            candidate_embeddings=model.candidates().numpy()[1:],
            sample_queries=sample,
            candidate_titles=titles[1:].astype(bytes) if titles is not None else None,
            tuning_queries=tuning)


@register_recipe
class YouTubeDNNRecipe(SequentialRecipe):
    """`youtube_dnn`: masked-mean history + example age (+ optional profile) ReLU tower.

    The example age of a query (`--query-age`): `last_history` (default) feeds the age of the
    user's last history item on the training scale (serving input `query_timestamp`; 0 =
    unknown = age 0), `zero` feeds 0 (the end of the training window) for every query. Held-out
    users' ground truth spans the whole time window, so "now" is the wrong time for them.
    `--output-activation`: the top layer is linear by default, ReLU (the paper's figure) as an
    option; both chosen on the valid users (benchmarks/sequential/RESULTS.md).
    """

    name = "youtube_dnn"

    @classmethod
    def add_tower_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--hidden-units", default="128",
                            help="comma-separated ReLU widths (default: %(default)s)")
        parser.add_argument("--dropout", type=float, default=0.0)
        parser.add_argument("--no-example-age", dest="example_age", action="store_false")
        parser.add_argument("--query-age", choices=QUERY_AGES, default="last_history",
                            help="example age of a query: from the time of the user's last "
                                 "history item (serving input query_timestamp) or 0 "
                                 "(default %(default)s)")
        parser.add_argument("--output-activation", choices=("linear", "relu"),
                            default=YOUTUBE_DNN_OUTPUT_DEFAULT,
                            help="activation of the top layer (the paper draws ReLU; "
                                 "default %(default)s)")
        parser.add_argument("--profile", dest="user_features", action="store_true",
                            help="add the user profile (age bucket, gender, occupation) as "
                                 "pooled side features; they become serving inputs")
        parser.add_argument("--genres", action="store_true",
                            help="add the pooled genres of the history items (derived from the "
                                 "history inside the model: no extra serving input)")

    def build_query_tower(self, params, protocol, item_embedding):
        units = [int(u) for u in str(params.get("hidden_units", "128")).split(",") if u.strip()]
        side = {}
        if params.get("user_features"):
            side = {name: tf.keras.layers.Embedding(size, 8, name=f"{name}_embedding")
                    for name, size in protocol.user_feature_sizes.items()}
        if params.get("genres") and protocol.sequences.item_genres is not None:
            side["history_genres"] = tf.keras.layers.Embedding(
                int(protocol.sequences.item_genres.max()) + 1, 8, name="genre_embedding")
        activation = str(params.get("output_activation", "linear"))
        if activation not in ("linear", "relu"):
            raise ValueError(f"--output-activation must be linear or relu, got {activation!r}.")
        return YouTubeDNN(item_embedding, hidden_units=units,
                          output_dim=int(params["embedding_dim"]), side_embeddings=side,
                          use_example_age=bool(params.get("example_age", True)),
                          dropout=float(params.get("dropout", 0.0)),
                          output_activation=None if activation == "linear" else "relu")

    def query_age_scale(self, params, protocol):
        # Params without `query_age` (runs trained before the flag) keep age 0 at query time.
        query_age = str(params.get("query_age", "zero"))
        if query_age not in QUERY_AGES:
            raise ValueError(f"--query-age must be one of {QUERY_AGES}, got {query_age!r}.")
        if query_age == "zero" or not params.get("example_age", True):
            return None
        return protocol.example_age_scale


@register_recipe
class GRURecipe(SequentialRecipe):
    """`gru`: the TFRS sequential-retrieval tutorial's GRU over the history."""

    name = "gru"
    default_epochs = 20

    @classmethod
    def add_tower_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--no-unroll", dest="unroll", action="store_false",
                            help="keep the GRU loop rolled (unrolled is faster on CPU)")
        # Chosen on the valid users (benchmarks/sequential/RESULTS.md).
        parser.set_defaults(batch_size=1024, learning_rate=3e-3)

    def build_query_tower(self, params, protocol, item_embedding):
        return GRUTower(item_embedding, units=int(params["embedding_dim"]),
                        unroll=bool(params.get("unroll", True)))


@register_recipe
class PopularityRecipe(Recipe):
    """`popularity`: every user gets the items most frequent among the train users."""

    name = "popularity"
    default_epochs = 1

    def validate_config(self, config: dict) -> None:
        super().validate_config(config)
        _check_movielens(config)

    def train(self, config: dict, run_dir: pathlib.Path) -> dict:
        run_dir = pathlib.Path(run_dir)
        protocol = load_protocol(config)
        write_run_config(run_dir, config)
        start = time.perf_counter()
        counts = np.bincount(np.concatenate([protocol.sequences.sequence(u)
                                             for u in protocol.train_users]),
                             minlength=protocol.num_items + 1)
        counts[0] = 0
        train_seconds = time.perf_counter() - start
        np.save(run_dir / "item_counts.npy", counts)
        split = protocol.split("valid")
        topn = popularity_topn(counts, len(split), TOP_N)
        metrics = {f"valid_{k}": v for k, v in _metrics(protocol, "valid", topn).items()}
        metrics["train_seconds"] = train_seconds
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        return metrics

    def evaluate(self, run_dir, split: str = "test", dump_topn: Optional[str] = None) -> dict:
        from towerkit.recipes.base import load_run

        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test' (held-out users), got {split!r}.")
        _, config = load_run(run_dir)
        protocol = load_protocol(config)
        counts = np.load(pathlib.Path(run_dir) / "item_counts.npy")
        topn = popularity_topn(counts, len(protocol.split(split)), TOP_N)
        if dump_topn:
            _dump(dump_topn, protocol, split, topn)
        return _metrics(protocol, split, topn)

    def index_inputs(self, run_dir) -> IndexInputs:
        raise ValueError("The popularity baseline has no query model to export; export a "
                         "trained recipe such as youtube_dnn.")
