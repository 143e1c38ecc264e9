"""Parity benchmark: plain TFRS tutorials vs towerkit, in ONE process on the same split.

Trains, on the TFRS tutorials' split of `movielens/100k-ratings` (`tf.random.set_seed(42)`,
`shuffle(100_000, seed=42, reshuffle_each_iteration=False)`, first 80k train / last 20k test):

  (a)  the TFRS basic retrieval tutorial written with plain TFRS (top-K metrics computed in every
       training step, exactly as the tutorial does);
  (a') the same plain-TFRS model with `compute_metrics=not training` (what TFRS recommends);
  (b)  the same recipe built with towerkit (IdEmbedding towers, towerkit Retrieval task,
       TwoTowerModel; metrics only in evaluation);
  (c)  a towerkit model with more features (user metadata, timestamp, title tokens) and a dense
       layer in each tower, trained with the logQ correction (see --deep-* flags);
  (r)  the TFRS basic ranking tutorial in plain TFRS vs towerkit's RankingModel (RMSE).

(a), (a'), (b) and (c) report test top-100 accuracy from `tfrs.metrics.FactorizedTopK` over the
tutorial's candidate corpus (distinct movie titles for a/a'/b; distinct movie ids for c, whose
candidate key is the unique id). Training throughput is examples/s over `fit` (all epochs).

Usage:
  TFDS_DATA_DIR=<tfds dir> python benchmarks/parity/run_parity.py [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import towerkit  # noqa: F401  (legacy Keras before TF)
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from towerkit.data import Vocabulary, load, load_columns, take_rows, tfrs_tutorial_split
from towerkit.features import FeatureSet, IdEmbedding
from towerkit.models import MLP, RankingModel, Tower, TwoTowerModel
from towerkit.recipes import two_tower as recipe_lib
from towerkit.tasks import Ranking, Retrieval

SEED, TRAIN, BATCH, EPOCHS, DIM, LR = 42, 80_000, 8192, 3, 32, 0.1


def tutorial_datasets():
    """The tutorial's pipeline: tfds ratings/movies, seeded shuffle, take/skip, cached batches."""
    ratings = load("100k-ratings").map(lambda x: {"movie_title": x["movie_title"],
                                                  "user_id": x["user_id"],
                                                  "user_rating": x["user_rating"]})
    movies = load("100k-movies").map(lambda x: x["movie_title"])
    tf.random.set_seed(SEED)
    shuffled = ratings.shuffle(100_000, seed=SEED, reshuffle_each_iteration=False)
    train, test = shuffled.take(TRAIN), shuffled.skip(TRAIN).take(20_000)
    titles = np.unique(np.concatenate(list(movies.batch(1_000).as_numpy_iterator())))
    users = np.unique(np.concatenate(list(ratings.batch(1_000_000).map(
        lambda x: x["user_id"]).as_numpy_iterator())))
    cached_train = train.shuffle(100_000).batch(BATCH).cache()
    cached_test = test.batch(4096).cache()
    return movies, titles, users, cached_train, cached_test


def timed_fit(model, data, epochs):
    """Trains; returns training examples per wall-clock second and per CPU second.

    The CPU-second figure (process CPU time, all threads) is the fair one on a shared machine:
    it does not depend on what other processes do between two models' runs.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(data, epochs=epochs, verbose=0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"examples_per_s": TRAIN * epochs / wall, "examples_per_cpu_s": TRAIN * epochs / cpu}


# ---- (a) plain TFRS, the basic retrieval tutorial's model --------------------------------------
class TfrsMovielensModel(tfrs.Model):
    def __init__(self, user_model, movie_model, task, metrics_in_training=True):
        super().__init__()
        self.movie_model, self.user_model, self.task = movie_model, user_model, task
        self.metrics_in_training = metrics_in_training

    def compute_loss(self, features, training=False):
        user_embeddings = self.user_model(features["user_id"])
        movie_embeddings = self.movie_model(features["movie_title"])
        return self.task(user_embeddings, movie_embeddings,
                         compute_metrics=self.metrics_in_training or not training)


def plain_tfrs_retrieval(movies, titles, users, train, test, metrics_in_training):
    tf.keras.utils.set_random_seed(SEED)
    user_model = tf.keras.Sequential([
        tf.keras.layers.StringLookup(vocabulary=users, mask_token=None),
        tf.keras.layers.Embedding(len(users) + 1, DIM)])
    movie_model = tf.keras.Sequential([
        tf.keras.layers.StringLookup(vocabulary=titles, mask_token=None),
        tf.keras.layers.Embedding(len(titles) + 1, DIM)])
    task = tfrs.tasks.Retrieval(metrics=tfrs.metrics.FactorizedTopK(
        candidates=movies.batch(128).map(movie_model)))
    model = TfrsMovielensModel(user_model, movie_model, task, metrics_in_training)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=LR))
    throughput = timed_fit(model, train, EPOCHS)
    result = model.evaluate(test, return_dict=True, verbose=0)
    return {"top_100": result["factorized_top_k/top_100_categorical_accuracy"], **throughput}


# ---- (b) the same recipe with towerkit -----------------------------------------------------------
def towerkit_basic_retrieval(movies, titles, users, train, test, lookup_in_pipeline=True,
                             jit_compile=False, unique_candidates=False):
    """towerkit's basic model; by default its ids are looked up once in the input pipeline.

    `lookup_in_pipeline`: the cached batches are mapped through `model.lookup_ids` (and cached
    again) inside the timed region, so the training step only gathers embedding rows; the towers
    still take raw string ids (the lookup stays in them for evaluation and serving).
    `jit_compile`: compile the training step with XLA (possible only without string ops in it).
    `unique_candidates`: the model knows its candidate ids (`candidate_id_key`, the title the
    candidate tower embeds) and scores each distinct title of a batch once (the same loss and
    gradients as the `[batch, batch]` matrix, see `TwoTowerModel`).
    """
    tf.keras.utils.set_random_seed(SEED)
    query = Tower(FeatureSet({"user_id": IdEmbedding(users, DIM)}))
    candidate = Tower(FeatureSet({"movie_title": IdEmbedding(titles, DIM)}))
    task = Retrieval(metrics=tfrs.metrics.FactorizedTopK(
        candidates=movies.batch(128).map(lambda t: candidate({"movie_title": t}))))
    model = TwoTowerModel(query, candidate, task,
                          candidate_id_key="movie_title" if unique_candidates else None,
                          unique_candidates=unique_candidates)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=LR),
                  jit_compile=jit_compile)
    data = train.map(model.lookup_ids).cache() if lookup_in_pipeline else train
    throughput = timed_fit(model, data, EPOCHS)
    model.jit_compile = False  # evaluation streams string ids through the corpus metric
    model.test_function = None
    result = model.evaluate(test, return_dict=True, verbose=0)
    return {"top_100": result["factorized_top_k/top_100_categorical_accuracy"], **throughput}


# ---- (c) towerkit with more features -----------------------------------------------------------
def towerkit_deep_retrieval(args):
    columns = load_columns("100k-ratings")
    train_idx, test_idx = tfrs_tutorial_split(len(columns["user_id"]), TRAIN, seed=SEED)
    train_rows, test_rows = take_rows(columns, train_idx), take_rows(columns, test_idx)
    params = dict(recipe_lib.DEFAULT_PARAMS, features="rich", layers=args.deep_layers,
                  embedding_dim=args.deep_dim)
    ids = recipe_lib._column(columns, "movie_id")
    candidate_ids, first = np.unique(ids, return_index=True)
    candidate_titles = recipe_lib._column(columns, "movie_title")[first]
    tf.keras.utils.set_random_seed(SEED)
    query, candidate = recipe_lib.build_towers(params, train_rows, candidate_ids, candidate_titles)
    keys = sorted(set(recipe_lib.QUERY_FEATURES["rich"]) | set(recipe_lib.CANDIDATE_FEATURES["rich"]))
    vocab = Vocabulary.from_values(recipe_lib._column(train_rows, "movie_id"))
    corpus = tf.data.Dataset.from_tensor_slices(
        {"movie_id": candidate_ids, "movie_title": candidate_titles})
    metric = tfrs.metrics.FactorizedTopK(candidates=corpus.batch(128).map(
        lambda f: (f["movie_id"], candidate(f))))
    task = Retrieval(temperature=args.deep_temperature, remove_accidental_hits=True,
                     sampling_vocabulary=vocab.as_list(), sampling_counts=vocab.counts,
                     metrics=metric, id_based_metrics=True)
    model = TwoTowerModel(query, candidate, task, candidate_id_key="movie_id")
    optimizer = (tf.keras.optimizers.Adam(args.deep_lr) if args.deep_optimizer == "adam"
                 else tf.keras.optimizers.Adagrad(args.deep_lr))
    model.compile(optimizer=optimizer)
    train = (tf.data.Dataset.from_tensor_slices(recipe_lib._tensor_dict(train_rows, keys))
             .shuffle(TRAIN, seed=SEED).batch(args.deep_batch).cache())
    test = tf.data.Dataset.from_tensor_slices(
        recipe_lib._tensor_dict(test_rows, keys)).batch(4096).cache()
    throughput = timed_fit(model, train, args.deep_epochs)
    result = model.evaluate(test, return_dict=True, verbose=0)
    return {"top_100": result["factorized_top_k/top_100_categorical_accuracy"], **throughput}


# ---- (r) ranking: plain TFRS tutorial vs towerkit ----------------------------------------------
class TfrsRankingModel(tfrs.models.Model):
    def __init__(self, users, titles):
        super().__init__()
        self.user_embeddings = tf.keras.Sequential([
            tf.keras.layers.StringLookup(vocabulary=users, mask_token=None),
            tf.keras.layers.Embedding(len(users) + 1, DIM)])
        self.movie_embeddings = tf.keras.Sequential([
            tf.keras.layers.StringLookup(vocabulary=titles, mask_token=None),
            tf.keras.layers.Embedding(len(titles) + 1, DIM)])
        self.ratings = tf.keras.Sequential([tf.keras.layers.Dense(256, activation="relu"),
                                            tf.keras.layers.Dense(64, activation="relu"),
                                            tf.keras.layers.Dense(1)])
        self.task = tfrs.tasks.Ranking(loss=tf.keras.losses.MeanSquaredError(),
                                       metrics=[tf.keras.metrics.RootMeanSquaredError()])

    def call(self, features):
        return self.ratings(tf.concat([self.user_embeddings(features["user_id"]),
                                       self.movie_embeddings(features["movie_title"])], axis=1))

    def compute_loss(self, features, training=False):
        labels = features.pop("user_rating")
        return self.task(labels=labels, predictions=self(features))


def ranking(titles, users, train, test):
    results = {}
    tf.keras.utils.set_random_seed(SEED)
    plain = TfrsRankingModel(users, titles)
    plain.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=LR))
    throughput = timed_fit(plain, train, EPOCHS)
    rmse = plain.evaluate(test, return_dict=True, verbose=0)["root_mean_squared_error"]
    results["tfrs"] = {"rmse": rmse, **throughput}
    tf.keras.utils.set_random_seed(SEED)
    model = RankingModel(Tower(FeatureSet({"user_id": IdEmbedding(users, DIM)})),
                         Tower(FeatureSet({"movie_title": IdEmbedding(titles, DIM)})),
                         MLP([256, 64, 1]), Ranking("regression"), label_key="user_rating")
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=LR))
    throughput = timed_fit(model, train, EPOCHS)
    rmse = model.evaluate(test, return_dict=True, verbose=0)["root_mean_squared_error"]
    results["towerkit"] = {"rmse": rmse, **throughput}
    return results


THROUGHPUT_VARIANTS = {
    # name: (description, callable(movies, titles, users, train, test))
    "a2_tfrs_no_train_metrics": lambda m, t, u, tr, te: plain_tfrs_retrieval(m, t, u, tr, te, False),
    "b_towerkit_lookup_in_model": lambda m, t, u, tr, te: towerkit_basic_retrieval(
        m, t, u, tr, te, lookup_in_pipeline=False),
    "b_towerkit": lambda m, t, u, tr, te: towerkit_basic_retrieval(m, t, u, tr, te),
    "b_towerkit_jit": lambda m, t, u, tr, te: towerkit_basic_retrieval(m, t, u, tr, te,
                                                                       jit_compile=True),
    "b_towerkit_unique": lambda m, t, u, tr, te: towerkit_basic_retrieval(
        m, t, u, tr, te, unique_candidates=True),
}


def _median_summary(runs: list) -> dict:
    out = {}
    for unit in ("examples_per_s", "examples_per_cpu_s"):
        values = [r[unit] for r in runs]
        out[unit] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    out["top_100"] = sorted({round(r["top_100"], 6) for r in runs})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved rounds of the throughput comparison (default 3)")
    parser.add_argument("--variants", default=",".join(THROUGHPUT_VARIANTS),
                        help="comma-separated throughput variants to interleave")
    parser.add_argument("--deep-layers", default="64,32")
    parser.add_argument("--deep-dim", type=int, default=32)
    parser.add_argument("--deep-optimizer", choices=("adagrad", "adam"), default="adam")
    parser.add_argument("--deep-lr", type=float, default=0.01)
    parser.add_argument("--deep-batch", type=int, default=2048)
    parser.add_argument("--deep-epochs", type=int, default=4)
    parser.add_argument("--deep-temperature", type=float, default=None)
    parser.add_argument("--skip", default="", help="comma-separated one-off parts to skip: a,c,r")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(THROUGHPUT_VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(THROUGHPUT_VARIANTS)}")
    movies, titles, users, train, test = tutorial_datasets()
    results = {"machine": {"python": platform.python_version(), "tensorflow": tf.__version__,
                           "tf_keras": tf.keras.__version__ if hasattr(tf.keras, "__version__")
                           else None, "tfrs": tfrs.__version__, "numpy": np.__version__,
                           "cpus": os.cpu_count()},
               "config": vars(args)}
    # Warm the cache of the tutorial pipeline so no model pays for the first pass over tfds.
    for _ in train:
        pass
    for _ in test:
        pass

    def save():
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2, default=float)

    # Throughput: the variants interleaved, the order rotating each round; medians.
    runs = {v: [] for v in variants}
    for round_ in range(args.repeats):
        order = variants[round_ % len(variants):] + variants[:round_ % len(variants)]
        for name in order:
            run = THROUGHPUT_VARIANTS[name](movies, titles, users, train, test)
            runs[name].append(run)
            print(f"round {round_} {name}", json.dumps(run, default=float), flush=True)
        results["throughput_runs"] = runs
        save()
    results["throughput"] = {v: _median_summary(r) for v, r in runs.items()}
    if "a2_tfrs_no_train_metrics" in runs:
        base = results["throughput"]["a2_tfrs_no_train_metrics"]
        for v in variants:
            for unit in ("examples_per_s", "examples_per_cpu_s"):
                results["throughput"][v][f"ratio_vs_a2_{unit}"] = (
                    results["throughput"][v][unit]["median"] / base[unit]["median"])
    save()

    # One-off parts: the tutorial as written, the deep model, ranking.
    steps = [("a_tfrs_tutorial", lambda: plain_tfrs_retrieval(movies, titles, users, train, test, True)),
             ("c_towerkit_deep", lambda: towerkit_deep_retrieval(args)),
             ("r_ranking", lambda: ranking(titles, users, train, test))]
    for name, step in steps:
        if name.split("_")[0] in skip:
            continue
        start = time.perf_counter()
        try:
            results[name] = step()
        except Exception as e:  # record and go on: one broken part must not lose the others
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        results[name]["wall_s"] = round(time.perf_counter() - start, 1)
        print(name, json.dumps(results[name], default=float), flush=True)
        save()
    if "r_ranking" in results and "error" not in results["r_ranking"]:
        for unit in ("examples_per_s", "examples_per_cpu_s"):
            results[f"ratio_ranking_towerkit_over_tfrs_{unit}"] = (
                results["r_ranking"]["towerkit"][unit] / results["r_ranking"]["tfrs"][unit])
    print(json.dumps({k: v for k, v in results.items() if k != "throughput_runs"}, indent=2,
                     default=float))
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
