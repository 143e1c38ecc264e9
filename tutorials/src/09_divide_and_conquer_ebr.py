# towerkit: {"test_parameters": {"EPOCHS": 1, "EMBEDDING_DIM": 16, "NUM_BLOCKS": 1}}
# %% [markdown]
# # Divide and conquer: multi-task embedding-based retrieval (Kuaishou)
#
# One query vector has to rank the whole catalogue: the items it scores highest tend to come
# from a few dense regions (popular genres), and the negatives a softmax pushes away are mostly
# *easy* ones from unrelated regions. Zhang et al. (*Divide and Conquer: Towards Better
# Embedding-based Retrieval for Recommender Systems From a Multi-task Perspective*, WWW 2023)
# split the catalogue into clusters and turn retrieval into one task per cluster:
#
# 1. **Divide.** Every item goes to one of K clusters (here: a movie's first genre).
# 2. **Multi-task encoder.** A shared SASRec encoder reads the history; task k multiplies every
#    history token by a learned prompt `t_k` (element-wise) before the encoder, giving one
#    query vector per cluster. An example is the task of its target's cluster, and its
#    negatives come only from that cluster (hard negatives).
# 3. **Intent.** A head on the same encoder predicts `p_u`, the user's distribution over the
#    clusters.
# 4. **Conquer.** One index per cluster; cluster k contributes its best `M_k` items, with
#    `M_k ~ p_uk ** alpha` summing to M. alpha trades accuracy for diversity.
#
# This tutorial trains single-task SASRec and `mt_ebr` with the recipes the CLI runs
# (`towerkit train --model sasrec|mt_ebr`), looks at the quotas of a few users, sweeps alpha,
# and exports the merged retrieval as one SavedModel.

# %% tags=["parameters"]
EPOCHS = 4           # epoch cap (early stopping on the valid users decides)
EMBEDDING_DIM = 64
NUM_BLOCKS = 2
SEED = 0

# %%
import towerkit  # first: switches TensorFlow to the legacy Keras that TFRS needs

import pathlib
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from towerkit import recipes, serving
from towerkit.cli.export import build_index
from towerkit.evaluation import evaluate_topn
from towerkit.index import cluster_quotas
from towerkit.recipes.mt_ebr import diversity_metrics

print("towerkit", towerkit.__version__, "| TensorFlow", tf.__version__)

# %% [markdown]
# ## Train both models
#
# Same encoder settings for both (those of benchmarks/sequential/RESULTS.md, "Divide-and-conquer multi-task EBR": batch
# 1024, learning rate 3e-3, dropout 0.2, full softmax); `mt_ebr` adds the 18 genre clusters,
# the prompts and the intent head.

# %%
work = pathlib.Path(tempfile.mkdtemp(prefix="towerkit-mt-ebr-"))
params = {"embedding_dim": EMBEDDING_DIM, "num_blocks": NUM_BLOCKS, "batch_size": 1024,
          "learning_rate": 3e-3, "dropout": 0.2}
runs = {}
for name in ("sasrec", "mt_ebr"):
    recipe = recipes.get_recipe(name)()
    config = recipes.make_run_config(name, "movielens/100k-ratings", seed=SEED, epochs=EPOCHS,
                                     params=params)
    trained = recipe.train(config, work / name)
    runs[name] = recipe
    print(f"{name}: valid recall@50 {trained['valid_recall@50']:.3f} "
          f"(best epoch {trained.get('best_epoch')}, {trained['train_seconds']:.0f} s)")

# %% [markdown]
# ## The clusters
#
# `mt_ebr`'s default divide: each movie in the cluster of its first TFDS genre (the genres are
# listed by label id, so "Action|Comedy" is Action). The clusters are very unequal: Drama,
# Comedy and Action hold 962 of the 1,349 movies, War 3.

# %%
ebr = runs["mt_ebr"]
_, protocol, model = ebr.restore(work / "mt_ebr")
clusters = model.clusters
for name, size in sorted(zip(clusters.names, clusters.sizes()), key=lambda t: -t[1]):
    print(f"{name:12s} {size:4d} movies")

# %% [markdown]
# ## Accuracy and diversity on the test users
#
# Diversity is the mean number of distinct genre clusters, and of distinct genres (a movie has
# up to six), in a user's top 50. SASRec is scored against the same clusters.

# %%
genres = protocol.sequences.item_genres
for name, recipe in runs.items():
    metrics = recipe.evaluate(work / name, "test")
    _, p, m = recipe.restore(work / name)
    metrics.update(diversity_metrics(recipe.top_n(m, p, "test"), clusters, genres))
    print(f"{name:7s} recall@50 {metrics['recall@50']:.3f}  ndcg@50 {metrics['ndcg@50']:.3f}  "
          f"clusters@50 {metrics['distinct_clusters@50']:.1f}  "
          f"genres@50 {metrics['distinct_genres@50']:.1f}")

# %% [markdown]
# ## Quotas of a few users
#
# The intent head gives `p_u`; the quotas follow `M_k ~ p_uk ** alpha`, rounded by largest
# remainder to integers summing to exactly 50 (and never above a cluster's size). alpha = 0
# gives every cluster the same share; a large alpha gives everything to the likeliest ones.

# %%
outputs = ebr.query_outputs(model, protocol, "test")
intent = outputs["intent"][:3]
for alpha in (0.0, 1.0, 4.0):
    quotas = cluster_quotas(intent, 50, alpha, clusters.sizes())
    print(f"alpha = {alpha:g}")
    for user, row in enumerate(quotas):
        top = np.argsort(-row, kind="stable")[:5]
        shown = ", ".join(f"{clusters.names[k]} {row[k]} (p={intent[user, k]:.2f})"
                          for k in top)
        print(f"  user {user}: {shown}")

# %% [markdown]
# ## The alpha trade-off
#
# Re-ranking the same trained model with different alphas (no retraining): small alpha spreads
# the list over many clusters, large alpha follows the intent.

# %%
alphas = [0.0, 0.5, 1.0, 2.0, 4.0, 16.0]
points = []
for alpha in alphas:
    top = ebr.top_n(model, protocol, "test", alpha=alpha)
    m = evaluate_topn(top, protocol.split("test").ground_truth, [50])
    m.update(diversity_metrics(top, clusters, genres))
    points.append((alpha, m["distinct_clusters@50"], m["recall@50"]))
    print(f"alpha {alpha:5g}: recall@50 {m['recall@50']:.3f}, "
          f"clusters@50 {m['distinct_clusters@50']:.1f}")

fig, ax = plt.subplots(figsize=(6, 4))
ax.plot([p[1] for p in points], [p[2] for p in points], marker="o")
for alpha, x, y in points:
    ax.annotate(f"alpha={alpha:g}", (x, y), textcoords="offset points", xytext=(4, 4),
                fontsize=8)
ax.set_xlabel("distinct genre clusters in the top 50")
ax.set_ylabel("recall@50 (test users)")
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## Export: K indexes and the merge in one SavedModel
#
# `towerkit export RUN --index portable` builds one index of the chosen kind per cluster
# (`towerkit.index.ClusteredIndex`) behind the same serving inputs as every sequence model
# (`history` movie ids, `history_length`); the quotas are computed inside the graph. Stock
# TensorFlow Serving loads it with the BruteForce, Annoy or portable kinds.

# %%
inputs = ebr.index_inputs(work / "mt_ebr")
index, summary = build_index(inputs, "portable", k=50)
path = serving.export(index, work / "serving", query_signature=inputs.query_signature,
                      warmup_queries=inputs.sample_queries)
print(summary["class"], "over", summary["num_candidates"], "movies ->", path)

loaded = tf.saved_model.load(str(path))
queries = {k: tf.constant(v[:2]) for k, v in inputs.sample_queries.items()}
served = loaded.signatures["serving_default"](**queries)
_, in_process = index(queries)
assert (served["ids"].numpy() == in_process.numpy()).all()
titles = dict(zip(protocol.item_ids[1:], protocol.sequences.item_titles[1:]))  # bytes -> bytes
for movie in served["ids"].numpy()[0][:10]:
    print(" ", titles[movie].decode())
