# towerkit: {"test_parameters": {"EPOCHS": 1}}
# %% [markdown]
# # Ranking and multi-task learning
#
# Retrieval narrows a huge catalogue to a few hundred candidates; **ranking** then orders them
# with a model that may look at the (user, movie) pair jointly, and is trained on a richer
# signal: here the star rating, not just "the user watched it". The two models can share their
# towers and be trained together, which helps when one signal is scarce (few ratings, many
# views) and acts as a regulariser.
#
# This tutorial, following the TFRS [multitask](https://www.tensorflow.org/recommenders/examples/multitask)
# tutorial on MovieLens 100K,
# 1. builds one `MultiTaskModel` with a retrieval task (in-batch softmax) and a ranking task
#    (rating regression through an MLP over the two tower outputs);
# 2. trains it with three loss weightings: ranking only, retrieval only, and both;
# 3. prints the **trade-off table** (retrieval accuracy vs rating RMSE) and plots it;
# 4. runs the two-stage pipeline: retrieve 100 movies, re-rank them by predicted rating.
#
# References: Caruana, *Multitask Learning*, Machine Learning 1997; Covington et al., *Deep
# Neural Networks for YouTube Recommendations*, RecSys 2016 (candidate generation + ranking).

# %% tags=["parameters"]
EPOCHS = 3            # per weighting (the test suite uses 1)
EMBEDDING_DIM = 32
BATCH_SIZE = 8192
LEARNING_RATE = 0.1   # Adagrad, as in the TFRS tutorial
SEED = 42

# %%
import towerkit  # first: switches TensorFlow to the legacy Keras that TFRS needs

import numpy as np
import tensorflow as tf
import matplotlib.pyplot as plt

from towerkit.data import Vocabulary, recipe_columns, take_rows, tfrs_tutorial_split
from towerkit.features import FeatureSet, IdEmbedding
from towerkit.index import BruteForce
from towerkit.models import MLP, MultiTaskModel, Tower
from towerkit.tasks import Ranking, Retrieval

# %% [markdown]
# ## Data
#
# MovieLens 100K ratings through `tfds.load` (`towerkit.data.recipe_columns` wraps it, naming the columns `user_id`, `item_id`, `rating`, ...), the TFRS
# tutorials' 80/20 split. Unlike retrieval, which only needs (user, movie) pairs, ranking uses
# the label `rating` (1 to 5 stars).

# %%
columns = recipe_columns("100k-ratings")
n = len(columns["user_id"])
train_idx, test_idx = tfrs_tutorial_split(n, train_size=int(0.8 * n), seed=SEED)
train, test = take_rows(columns, train_idx), take_rows(columns, test_idx)


def as_bytes(column):
    return np.asarray(column).astype(bytes)


item_ids, first = np.unique(as_bytes(columns["item_id"]), return_index=True)
title_of = dict(zip(item_ids, as_bytes(columns["item_title"])[first]))
keys = ("user_id", "item_id", "rating")


def feature_dict(rows):
    return {"user_id": as_bytes(rows["user_id"]), "item_id": as_bytes(rows["item_id"]),
            "rating": rows["rating"].astype(np.float32)}


train_data = tf.data.Dataset.from_tensor_slices(feature_dict(train)).shuffle(
    len(train_idx), seed=SEED).batch(BATCH_SIZE).cache()
print(f"train {len(train_idx)} ratings, test {len(test_idx)}; mean train rating "
      f"{train['rating'].mean():.2f}")

# %% [markdown]
# ## One model, two tasks
#
# Both tasks read the same towers. The retrieval task scores `<user, movie>` against the other
# movies of the batch; the ranking task feeds `concat(user, movie)` to an MLP (256 -> 64 -> 1)
# and regresses the rating. The total loss is
#
# `retrieval_weight * retrieval_loss + ranking_weight * ranking_loss`.
#
# Mind the scales: the retrieval loss is summed over the batch (as in TFRS), the rating MSE is
# averaged, so weights of 1 and 1 do not mean "equal say". That is why the weights are knobs to
# tune, and why we look at a table rather than trusting one setting.

# %%
user_vocabulary = Vocabulary.from_values(as_bytes(train["user_id"])).as_list()
WEIGHTINGS = {"ranking only": (0.0, 1.0), "retrieval only": (1.0, 0.0), "joint": (1.0, 1.0)}


def make_model(retrieval_weight, ranking_weight):
    tf.keras.utils.set_random_seed(SEED)
    users = Tower(FeatureSet({"user_id": IdEmbedding(user_vocabulary, EMBEDDING_DIM)}))
    movies = Tower(FeatureSet({"item_id": IdEmbedding(list(item_ids), EMBEDDING_DIM)}))
    model = MultiTaskModel(users, movies, score_model=MLP([256, 64, 1]),
                           retrieval_task=Retrieval(), ranking_task=Ranking("regression"),
                           retrieval_weight=retrieval_weight, ranking_weight=ranking_weight)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(LEARNING_RATE))
    return model


# %% [markdown]
# Evaluation on the test ratings: RMSE of the predicted rating (NumPy, from the model's `score`
# output) and the retrieval model's top-100 accuracy (is the rated movie among the 100 best
# scored of all 1,682, found with an exact `BruteForce` index).

# %%
test_features = {k: tf.constant(v) for k, v in feature_dict(test).items()}


def evaluate(model):
    outputs = model(test_features)
    predicted = outputs["score"].numpy()[:, 0]
    rmse = float(np.sqrt(np.mean((predicted - test["rating"]) ** 2)))
    index = BruteForce(k=100).index(
        model.candidate_model({"item_id": tf.constant(item_ids)}), identifiers=item_ids)
    _, top = index(outputs["query_embedding"])
    hits = top.numpy().astype(bytes) == as_bytes(test["item_id"])[:, None]
    return {"rmse": rmse, "top_100": float(hits.any(axis=1).mean()),
            "top_10": float(hits[:, :10].any(axis=1).mean())}


results, models = {}, {}
for name, (retrieval_weight, ranking_weight) in WEIGHTINGS.items():
    models[name] = make_model(retrieval_weight, ranking_weight)
    models[name].fit(train_data, epochs=EPOCHS, verbose=0)
    results[name] = evaluate(models[name])
    print(f"{name:<15} {results[name]}")

# %% [markdown]
# ## The trade-off table
#
# Two reference points: predicting the mean training rating for everything gives the RMSE to
# beat; a random ranking finds the rated movie in the top 100 with probability 100 / 1,682.

# %%
mean_rmse = float(np.sqrt(np.mean((train["rating"].mean() - test["rating"]) ** 2)))
random_top100 = 100 / len(item_ids)
print(f"{'weights (retrieval, ranking)':<32}{'RMSE':>8}{'top-10 acc':>12}{'top-100 acc':>13}")
for name, (rw, kw) in WEIGHTINGS.items():
    r = results[name]
    print(f"{name + f' ({rw:g}, {kw:g})':<32}{r['rmse']:>8.3f}{r['top_10']:>12.3f}"
          f"{r['top_100']:>13.3f}")
print(f"{'predict the mean rating':<32}{mean_rmse:>8.3f}")
print(f"{'random ranking':<32}{'':>8}{'':>12}{random_top100:>13.3f}")

# A model trained with a zero weight on a task never learns it: its number there is untrained.
assert results["retrieval only"]["top_100"] > 2 * random_top100
assert results["joint"]["top_100"] > 2 * random_top100
assert results["ranking only"]["rmse"] < results["retrieval only"]["rmse"]

fig, ax = plt.subplots(figsize=(6, 4))
for name, r in results.items():
    ax.scatter(r["rmse"], r["top_100"], s=80)
    ax.annotate(name, (r["rmse"], r["top_100"]), textcoords="offset points", xytext=(6, 6))
ax.set(xlabel="test RMSE (lower is better)", ylabel="test top-100 accuracy (higher is better)",
       title="Retrieval vs ranking quality")
ax.axvline(mean_rmse, color="gray", ls=":", label="mean-rating RMSE")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Reading the table (TFRS reports the same pattern): the ranking-only model learns ratings but
# its towers retrieve no better than random; the retrieval-only model retrieves well but its
# rating head was never trained (its RMSE is that of an untrained network). The joint model is
# close to the best of both on each task, one model instead of two. (After the test suite's
# single epoch every RMSE is still near the predict-the-mean baseline; more epochs separate
# them.) Try other weights (e.g. `(0.1, 1.0)`) to move along the
# trade-off: with a summed retrieval loss, small retrieval weights already matter.
#
# ## Two stages: retrieve, then rank
#
# In production the stages run in sequence. The joint model does both: its towers retrieve 100
# candidates for a user (fast, via an index), its rating head orders them (one MLP call per
# candidate, affordable for 100, not for the whole catalogue).

# %%
joint = models["joint"]
index = BruteForce(query_model=joint.query_model, k=100).index(
    joint.candidate_model({"item_id": tf.constant(item_ids)}), identifiers=item_ids)
user = b"42"
_, retrieved = index({"user_id": tf.constant([user])})
retrieved = retrieved.numpy()[0]
pairs = {"user_id": tf.constant([user] * len(retrieved)), "item_id": tf.constant(retrieved)}
predicted_rating = joint(pairs)["score"].numpy()[:, 0]
order = np.argsort(-predicted_rating)
print(f"User {user.decode()}: 100 retrieved, top 10 after ranking by predicted rating")
for rank, i in enumerate(order[:10], start=1):
    print(f"{rank:>3}. {title_of[retrieved[i]].decode():<50} predicted {predicted_rating[i]:.2f}"
          f" (retrieval rank {i + 1})")
assert len(set(retrieved)) == 100
