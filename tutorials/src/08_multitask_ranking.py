# towerkit: {"test_parameters": {"EPOCHS": 1, "RETRIEVAL_EPOCHS": 1}}
# %% [markdown]
# # Multi-task ranking: MMoE, ESMM, and retrieve-then-rank serving
#
# A ranker in production predicts several things at once: will the user click the movie, and
# having clicked, will they like it? The tasks share most of what they need to know, so one
# model learns them together. This tutorial
# 1. builds the **multi-task setting** from MovieLens 100K: exposures, click, like and ctcvr;
# 2. trains two multi-task rankers, **MMoE** (experts mixed by one gate per task) and **ESMM**
#    (pCTCVR = pCTR * pCVR over all exposures);
# 3. compares their per-task **AUCs** (exact, over the whole test split);
# 4. plots the MMoE **gate weights**: which experts each task uses;
# 5. exports **retrieve-then-rank** as one SavedModel (a two-tower index retrieves 100 movies,
#    the ranker scores them, the top 10 by p(click) * p(like | click) come back) and queries it.
#
# References: Ma et al., *Modeling Task Relationships in Multi-task Learning with Multi-gate
# Mixture-of-Experts*, KDD 2018; Ma et al., *Entire Space Multi-Task Model*, SIGIR 2018.

# %% tags=["parameters"]
EPOCHS = 6             # per ranker, with early stopping on validation (the test suite uses 1)
RETRIEVAL_EPOCHS = 3   # the two-tower retrieval model (the test suite uses 1)
SEED = 1

# %%
import towerkit  # first: switches TensorFlow to the legacy Keras that TFRS needs

import pathlib
import tempfile

import matplotlib.pyplot as plt
import numpy as np

from towerkit import recipes, serving
from towerkit.cli.export import export_retrieve_then_rank
from towerkit.data import build_exposures, recipe_columns

WORK = pathlib.Path(tempfile.mkdtemp(prefix="towerkit-08-"))

# %% [markdown]
# ## The multi-task setting
#
# MovieLens only records what users rated. To have exposures that were *not* acted on, every
# rating is joined by one sampled unrated (user, movie) pair: same user and time, a movie drawn
# by popularity (so that popularity alone does not give clicks away), never a pair the user
# rated. Labels:
#
# | task | label | defined on |
# |---|---|---|
# | click | rated (1) or sampled (0) | all exposures |
# | like | rating >= 4 | clicked exposures |
# | ctcvr | click and like | all exposures |
#
# The exposures are split 80/10/10 (train / valid for early stopping / test) by a fixed seed.

# %%
ratings = recipe_columns("100k-ratings")
data = build_exposures("100k-ratings", negatives_per_rating=1.0, seed=0, columns=ratings)
c = data.columns
print(f"{len(c['click']):,} exposures, click rate {c['click'].mean():.3f}, "
      f"like rate on clicks {c['like'][c['click'] == 1].mean():.3f}, "
      f"ctcvr rate {c['ctcvr'].mean():.3f}")
print({name: len(rows) for name, rows in data.splits.items()})

# %% [markdown]
# ## Two rankers
#
# Both read the same features: user id and profile, movie id and genres, time. **MMoE** feeds
# them to 4 experts and gives each task its own softmax gate over the experts; it trains click
# on all exposures and like on clicked ones (ctcvr is p(click) * p(like)). **ESMM** has a CTR
# and a CVR tower and trains only click and ctcvr = pCTR * pCVR, both over *all* exposures: the
# CVR tower learns p(like | click) without ever being fitted on the clicked subset alone.

# %%
metrics = {}
for name in ("mmoe", "esmm"):
    config = recipes.make_run_config(name, "movielens/100k-ratings", seed=SEED, epochs=EPOCHS)
    recipes.get_recipe(name)().train(config, WORK / name)
    metrics[name] = recipes.get_recipe(name)().evaluate(WORK / name)

# %% [markdown]
# ## Per-task AUC
#
# AUC of each task over the whole test split (an exact rank statistic accumulated over
# batches; a mean of per-batch AUCs would be biased). like is scored on clicked exposures only.

# %%
print(f"{'model':<6} {'click':>7} {'like':>7} {'ctcvr':>7}")
for name, m in metrics.items():
    print(f"{name:<6} {m['click_auc']:7.4f} {m['like_auc']:7.4f} {m['ctcvr_auc']:7.4f}")

# %% [markdown]
# ## Where do the tasks look? MMoE's gates
#
# Each task's gate gives every test exposure a distribution over the 4 experts. The bars show
# the mean weight per expert and task; the entropy says how sharply a gate routes (log 4 = 1.386
# is uniform). Tasks that lean on different experts have learnt to share only part of the model.

# %%
gates = metrics["mmoe"]["gates"]
fig, ax = plt.subplots(figsize=(6, 3))
width = 0.35
for i, task in enumerate(gates):
    weights = gates[task]["mean_weights"]
    ax.bar(np.arange(len(weights)) + i * width, weights, width,
           label=f"{task} (entropy {gates[task]['entropy']:.2f})")
ax.set_xticks(np.arange(len(weights)) + width / 2, [f"expert {e}" for e in range(len(weights))])
ax.set_ylabel("mean gate weight")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Retrieve, then rank, in one SavedModel
#
# A two-tower model retrieves; the ranker orders what it retrieved. `export_retrieve_then_rank`
# (what `towerkit export RETRIEVAL_RUN --index brute-force --rerank RANK_RUN --retrieve 100
# --k 10` runs) puts both in one SavedModel with stock TensorFlow ops: retrieve 100, score them
# with the ranker, fuse `p(click)^1 * p(like | click)^1`, return the top 10 with every task's
# probability. The request carries the user id and the time of the request.

# %%
config = recipes.make_run_config("two_tower", "movielens/100k-ratings", seed=SEED,
                                 epochs=RETRIEVAL_EPOCHS)
recipes.get_recipe("two_tower")().train(config, WORK / "two_tower")
retrieval = recipes.get_recipe("two_tower")().index_inputs(WORK / "two_tower")
ranker = recipes.get_recipe("mmoe")().ranker_inputs(WORK / "mmoe")
summary = export_retrieve_then_rank(retrieval, ranker, "brute-force", WORK / "export",
                                    retrieve=100, k=10, fusion={"click": 1.0, "like": 1.0})
report = serving.check(summary["path"])
print(f"exported to {summary['path']}; stock TF Serving can load it: {report.servable}")

# %%
model = serving.LocalModel(summary["path"])
out = model.predict_outputs({"user_id": ["42"], "timestamp": np.array([893_000_000])})
title_of = dict(zip(retrieval.candidate_ids, retrieval.candidate_titles))
print(f"{'rank':>4} {'score':>6} {'p_click':>7} {'p_like':>6}  title")
for rank in range(10):
    movie = out["ids"][0, rank]
    print(f"{rank + 1:>4} {out['scores'][0, rank]:6.3f} {out['click'][0, rank]:7.3f} "
          f"{out['like'][0, rank]:6.3f}  {title_of[movie].decode()}")
