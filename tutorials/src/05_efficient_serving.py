# towerkit: {"test_parameters": {"EPOCHS": 1, "NUM_CANDIDATES": 20000, "NUM_USERS": 200, "TIMING_QUERIES": 16}}
# %% [markdown]
# # Efficient serving: BruteForce vs ScaNN vs Annoy vs the portable index
#
# A trained two-tower model turns retrieval into maximum inner product search (MIPS): find the
# `k` candidate vectors with the largest dot product with the query vector. Exact search
# (`BruteForce`) reads every candidate for every query, which is fine for MovieLens' 1,682
# movies and hopeless for tens of millions of items. Approximate indexes read a small part of
# the catalogue and trade a little **recall** (the share of the exact top `k` they return) for
# a lot of speed. This tutorial
#
# 1. trains the `two_tower` recipe on MovieLens 100K and takes its learned embeddings;
# 2. scales the catalogue up with synthetic "variants" of the learned movie vectors (the
#    `NUM_CANDIDATES` parameter), so that the geometry (norms, clusters) is the model's;
# 3. builds all four towerkit indexes, tunes each approximate one to a `target_recall` on
#    held-out users, and plots recall against throughput;
# 4. shows which indexes stock TensorFlow Serving can run.
#
# Numbers depend on the machine (and on how busy it is); the *shape* of the trade-off is the
# point. For careful measurements see `benchmarks/index/`.
#
# References: Guo et al., *Accelerating Large-Scale Inference with Anisotropic Vector
# Quantization* (ScaNN), ICML 2020; Bernhardsson, [Annoy](https://github.com/spotify/annoy);
# Jegou et al., *Product Quantization for Nearest Neighbor Search*, TPAMI 2011 (inverted files).

# %% tags=["parameters"]
EPOCHS = 3                # two_tower training epochs (the test suite uses 1)
NUM_CANDIDATES = 200_000  # catalogue size after scaling up (the test suite uses 20,000)
K = 10                    # recall@K is measured against exact search
TARGET_RECALL = 0.95      # what target_recall tuning aims for
NUM_USERS = 943           # users whose vectors are the queries (half tune, half evaluate)
TIMING_QUERIES = 256      # queries per latency measurement
SEED = 42

# %%
import pathlib
import tempfile
import time

import towerkit  # first: switches TensorFlow to the legacy Keras that TFRS needs

import numpy as np
import tensorflow as tf
import matplotlib.pyplot as plt

from towerkit.data import recipe_columns
from towerkit.index import Annoy, BruteForce, ScaNN, recall_at_k, tune_for_recall
from towerkit.index.portable import PortableIndex
from towerkit.recipes import get_recipe, make_run_config

# %% [markdown]
# ## Learned embeddings
#
# The `two_tower` recipe (the TFRS basic retrieval model, see `01_quickstart_retrieval`) trains
# on MovieLens through `tfds.load` and `index_inputs` hands back what an index needs: the query
# tower, the candidate ids and their embeddings.

# %%
run_dir = pathlib.Path(tempfile.mkdtemp()) / "two_tower"
recipe = get_recipe("two_tower")()
metrics = recipe.train(make_run_config("two_tower", "movielens/100k-ratings", seed=SEED,
                                       epochs=EPOCHS), run_dir)
print({k: round(v, 3) for k, v in metrics.items() if "top_100" in k})
inputs = recipe.index_inputs(run_dir)
movies = inputs.candidate_embeddings
print("movie embeddings:", movies.shape)

# One query vector per user: the user tower applied to every user id.
users = np.unique(np.asarray(recipe_columns("100k-ratings")["user_id"]).astype(bytes))
user_vectors = inputs.query_model({"user_id": tf.constant(users)}).numpy()
rng = np.random.default_rng(SEED)
order = rng.permutation(len(users))[:NUM_USERS]
tuning_queries = user_vectors[order[: len(order) // 2]]      # to choose search settings
eval_queries = user_vectors[order[len(order) // 2:]]         # to report recall honestly
print("query vectors:", user_vectors.shape)

# %% [markdown]
# ## A bigger catalogue
#
# Each synthetic candidate is a random learned movie vector plus Gaussian noise (half the
# per-dimension spread of the learned vectors): a catalogue of many variants of real movies.
# The real movies are kept as the first rows. Queries stay the real user vectors.

# %%
spread = movies.std(axis=0, keepdims=True)
parents = rng.integers(0, len(movies), size=NUM_CANDIDATES - len(movies))
variants = movies[parents] + 0.5 * spread * rng.standard_normal(
    (len(parents), movies.shape[1])).astype(np.float32)
catalogue = np.concatenate([movies, variants]).astype(np.float32)
ids = np.arange(len(catalogue), dtype=np.int64)
print(f"catalogue {catalogue.shape}, {catalogue.nbytes / 1e6:.1f} MB of float32")

# %% [markdown]
# ## Four indexes
#
# | index | how it searches | servable by stock TF Serving |
# |---|---|---|
# | `BruteForce` | scores every candidate (one matmul + top-k) | yes |
# | `ScaNN` | k-means tree picks leaves, anisotropic quantization scores their points, the best are re-scored exactly | no: needs ScaNN's custom ops |
# | `Annoy` | a forest of random-projection trees, best-first search, exact scores of the collected items | yes (search in stock TF ops) |
# | `PortableIndex` | ScaNN's k-means leaves, then blocks of 32 candidates inside the best leaves; the best blocks are scored exactly, all in stock TF ops | yes |
#
# Every index is a drop-in `tfrs.layers.factorized_top_k.TopK`: `index(candidates, ids)` then
# `index(queries, k=...)`.

# %%
def build(index):
    start = time.perf_counter()
    index.index(catalogue, identifiers=ids)
    return index, time.perf_counter() - start


indexes = {}
for name, make in (("BruteForce", lambda: BruteForce(k=K)),
                   ("ScaNN", lambda: ScaNN(k=K)),
                   ("Annoy", lambda: Annoy(k=K, n_trees=10, seed=SEED)),
                   ("Portable", lambda: PortableIndex(k=K))):
    indexes[name], seconds = build(make())
    print(f"{name:<11} built in {seconds:6.2f} s, {indexes[name].size_bytes() / 1e6:7.1f} MB, "
          f"custom ops: {list(type(indexes[name]).custom_ops) or 'none'}")

# %% [markdown]
# ## Recall and throughput out of the box
#
# Recall@10 compares each index's top 10 with the exact top 10 of `BruteForce`, on the held-out
# users. Throughput is measured at two batch sizes: one query per call (an online request) and
# 256 queries per call (offline scoring, or a server that batches requests).

# %%
exact = indexes["BruteForce"]


def queries_per_second(index, batch_size):
    queries = eval_queries[:TIMING_QUERIES]
    batches = [queries[i:i + batch_size] for i in range(0, len(queries), batch_size)]
    index(batches[0], k=K)  # first call traces / warms caches
    start = time.perf_counter()
    for batch in batches:
        index(batch, k=K)
    return len(queries) / (time.perf_counter() - start)


def measure(name, index):
    return {"index": name,
            "recall": recall_at_k(index, eval_queries, reference=exact, k=K),
            "qps_1": queries_per_second(index, 1),
            "qps_256": queries_per_second(index, 256)}


def show(rows):
    print(f"{'index':<22}{'recall@10':>10}{'q/s batch 1':>14}{'q/s batch 256':>16}")
    for r in rows:
        print(f"{r['index']:<22}{r['recall']:>10.3f}{r['qps_1']:>14.0f}{r['qps_256']:>16.0f}")


defaults = [measure(name, index) for name, index in indexes.items()]
show(defaults)
assert defaults[0]["recall"] == 1.0, "BruteForce is the exact reference"

# %% [markdown]
# ## `target_recall` tuning
#
# Each approximate index has a query-time knob that buys recall with work: leaves searched
# (ScaNN, Portable), reorder depth (ScaNN), blocks scored exactly (Portable), items collected from the trees (`search_k`, Annoy).
# `towerkit.index.tune_for_recall` walks the index's `tuning_grid` from the cheapest setting up
# and stops at the first that reaches the target on the tuning queries. Its log of every
# setting tried (recall and time for the tuning queries, 256 per batch) is a recall/throughput
# curve, which we plot below. The knob changes no stored data, so no rebuild is needed.
#
# Tuning on one half of the users and reporting on the other keeps the number honest: a
# setting chosen on the evaluation queries would overstate recall.

# %%
reports = {}
for name in ("ScaNN", "Annoy", "Portable"):
    reports[name] = tune_for_recall(indexes[name], tuning_queries, target_recall=TARGET_RECALL,
                                    k=K, reference=exact)
    r = reports[name]
    print(f"{name:<9} setting {r['setting']}, tuning recall {r['recall']:.3f} "
          f"(reached {TARGET_RECALL}: {r['reached']}, {len(r['tried'])} settings tried)")

tuned = [defaults[0]] + [dict(measure(name, indexes[name]), index=f"{name} (tuned)")
                         for name in ("ScaNN", "Annoy", "Portable")]
show(tuned)

# %% [markdown]
# The held-out recall of a tuned index lands close to the target: the tuning queries and the
# evaluation queries come from the same users' distribution. If it lands below, tune on more
# queries or ask for a slightly higher target.

# %%
for row in tuned[1:]:
    print(f"{row['index']:<18} held-out recall@{K} {row['recall']:.3f} "
          f"(target {TARGET_RECALL}, gap {row['recall'] - TARGET_RECALL:+.3f})")

num_tuning = len(tuning_queries)
fig, ax = plt.subplots(figsize=(7, 4.5))
for name, marker in (("ScaNN", "o"), ("Annoy", "s"), ("Portable", "^")):
    tried = reports[name]["tried"]
    ax.plot([num_tuning / t["seconds"] for t in tried], [t["recall"] for t in tried],
            marker=marker, label=name)
ax.scatter([defaults[0]["qps_256"]], [1.0], color="black", marker="*", s=150,
           label="BruteForce", zorder=5)
ax.axhline(TARGET_RECALL, color="gray", ls="--", label=f"target {TARGET_RECALL}")
ax.set(xscale="log", xlabel="queries / second (batches of 256, log scale)",
       ylabel=f"recall@{K} (tuning queries)",
       title=f"Recall vs throughput, {len(catalogue):,} candidates")
ax.legend(loc="lower left")
fig.tight_layout()
plt.show()

# %% [markdown]
# How to read the plot: moving right is faster, moving up is more accurate. Each approximate
# index traces a curve as its knob grows; the brute-force star is the price of exactness. On
# small catalogues (the test suite runs 20,000 candidates) a single matmul is so cheap that
# brute force is competitive; the gap opens as the catalogue grows, because exact search
# costs grow linearly with it while the approximate indexes read roughly a fixed share.
#
# ## Which one to deploy?
#
# - **ScaNN** is the fastest at a given recall, but its SavedModel needs ScaNN's custom ops,
#   which the stock `tensorflow/serving` image does not have (`towerkit check-export` flags
#   them). Use it in-process, or build TF Serving with the ops linked in.
# - **PortableIndex** uses ScaNN to *build* the partition and only stock TensorFlow ops to
#   *search*: the stock server can load it. It is the default choice for TF Serving.
# - **Annoy** is also stock-op servable and needs no training step; its best-first search is
#   sequential per query, so it is slower in TensorFlow than the other two.
# - **BruteForce** is exact and simple: the right choice below ~100k candidates.
#
# The next tutorial, `06_deploy_tf_serving.ipynb`, exports an index, checks that stock
# TensorFlow Serving can load it, and queries it.

# %%
servable = [name for name, index in indexes.items() if not type(index).custom_ops]
print("stock TF Serving can run:", servable)
assert "ScaNN" not in servable and "Portable" in servable
