"""`mt_ebr`: Kuaishou's divide-and-conquer multi-task EBR on the sequential protocol.

Zhang et al. (WWW 2023) split the corpus into clusters, treat retrieval inside each cluster as
one task of a shared encoder adapted by a per-task prompt, and merge the clusters' results
under per-user quotas. Here:

* Divide (`--clusters`): `genres` (default), each movie in the cluster of its first TFDS genre
  (as `dat` chooses categories; 18 clusters on MovieLens 100K), or `kmeans`, k-means
  (`--num-clusters`, default 8) over Word2Vec-like item embeddings computed from the training
  users' sequences (SVD of the positive PMI of co-occurrences within 5 positions; the paper
  clusters Word2Vec embeddings). See `towerkit.data.ItemClusters`.
* Model: `towerkit.models.MultiTaskEBR` over a `SASRecTower` (`--num-blocks`, `--num-heads`,
  `--dropout`: 2 / 1 / 0.2; batch 1024, learning rate 3e-3: the settings benchmarked against
  `sasrec` in benchmarks/sequential/RESULTS.md, "Divide-and-conquer multi-task EBR", where alpha = 1 is also the best
  quota exponent on the valid users). An example is the task of its target's
  cluster; its loss is the full softmax over that cluster's items only (only `--loss full`;
  score and temperature as in `sasrec`: dot product, temperature 1, unless `--l2-normalize`).
  The intent model is a softmax head on the same encoder with its own prompt, trained with
  cross-entropy on the target's cluster (`--intent-weight`, default 1).
* Conquer: `towerkit.index.ClusteredIndex`, one index per cluster, quotas
  `M_k ~ p_uk ** alpha` summing to M = 50 (`--alpha`, default 1; 0 = equal quotas),
  merged by score. `evaluate` ranks exactly what the export serves (BruteForce per cluster);
  recall/HR/NDCG@20 are read on the first 20 of the merged top-50 list.
* `evaluate` adds list diversity: `distinct_clusters@50` and `distinct_genres@50`, the mean
  number of different clusters and different MovieLens genres among a user's top 50.
* `export`: one SavedModel holding the query model (K prompted encoder passes + the intent
  head) and the K sub-indexes of the chosen kind (`--index brute-force|annoy|portable` run on
  stock TF Serving). Serving inputs are those of every sequence recipe (`history` movie id
  strings, `history_length`).

Early stopping on the valid users' recall@50 (patience 3), `--epochs` a cap (default 30), the
best epoch kept, as for every sequence recipe.

References:
  Zhang et al., "Divide and Conquer: Towards Better Embedding-based Retrieval for Recommender
  Systems From a Multi-task Perspective", WWW 2023, https://arxiv.org/abs/2302.02657.
  Kang and McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018,
  https://arxiv.org/abs/1808.09781.
"""

from __future__ import annotations

import argparse
from typing import Optional

import numpy as np
import tensorflow as tf

from towerkit import _validation as check
from towerkit.data.item_clusters import ItemClusters, cooccurrence_embeddings
from towerkit.data.sequential_protocol import SequentialProtocol
from towerkit.evaluation.distinct_categories import distinct_categories
from towerkit.index.brute_force import BruteForce
from towerkit.index.clustered_index import ClusteredIndex
from towerkit.models.multi_task_ebr import MultiTaskEBR
from towerkit.recipes.base import IndexInputs, register_recipe
from towerkit.recipes.sasrec import SASRecRecipe
from towerkit.recipes.sequential import TOP_N

__all__ = ["MultiTaskEBRRecipe", "CLUSTERINGS", "GENRE_NAMES", "item_clusters",
           "diversity_metrics"]

CLUSTERINGS = ("genres", "kmeans")
DEFAULT_KMEANS_CLUSTERS = 8
#: Names of the TFDS MovieLens genre labels, by label id.
GENRE_NAMES = ("Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
               "Drama", "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "Unknown", "War", "Western",
               "(no genres listed)")
# The settings benchmarked against sasrec (benchmarks/sequential/RESULTS.md, "Divide-and-conquer multi-task EBR"); alpha = 1
# is the best quota exponent on the valid users there.
DEFAULTS = {"batch_size": 1024, "learning_rate": 3e-3, "num_blocks": 2, "num_heads": 1,
            "dropout": 0.2, "clusters": "genres",
            "num_clusters": None, "alpha": 1.0, "intent_weight": 1.0, "cluster_seed": 0}


def item_clusters(params: dict, protocol: SequentialProtocol) -> ItemClusters:
    """The clusters of a run's catalogue (`--clusters`, `--num-clusters`; deterministic)."""
    kind = params["clusters"]
    if kind == "genres":
        return ItemClusters.from_genres(protocol.sequences.item_genres, GENRE_NAMES)
    k = int(params["num_clusters"] or DEFAULT_KMEANS_CLUSTERS)
    if k > protocol.num_items:
        raise ValueError(f"--num-clusters {k} exceeds the {protocol.num_items} items.")
    embeddings = cooccurrence_embeddings(
        [protocol.sequences.sequence(u) for u in protocol.train_users], protocol.num_items)
    return ItemClusters.from_kmeans(embeddings, k, seed=int(params.get("cluster_seed", 0)))


def diversity_metrics(topn: np.ndarray, clusters: ItemClusters,
                      item_genres: Optional[np.ndarray]) -> dict:
    """`distinct_clusters@N` and (with genres) `distinct_genres@N` of top-N lists."""
    n = topn.shape[1]
    out = {f"distinct_clusters@{n}": distinct_categories(topn, clusters.assignments)}
    if item_genres is not None:
        out[f"distinct_genres@{n}"] = distinct_categories(topn, item_genres)
    return out


@register_recipe
class MultiTaskEBRRecipe(SASRecRecipe):
    """`mt_ebr`: per-cluster prompted SASRec tasks, an intent model, quota-merged retrieval."""

    name = "mt_ebr"
    default_epochs = 30
    defaults = DEFAULTS

    @classmethod
    def add_tower_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_tower_arguments(parser)  # the SASRec encoder's flags, at mt_ebr's defaults
        parser.add_argument("--clusters", choices=CLUSTERINGS, default=DEFAULTS["clusters"],
                            help="divide the catalogue by first genre or by k-means over "
                                 "co-occurrence item embeddings (default: %(default)s)")
        parser.add_argument("--num-clusters", type=check.positive_int, default=None,
                            help="K for --clusters kmeans (default "
                                 f"{DEFAULT_KMEANS_CLUSTERS}); genres fix K themselves")
        parser.add_argument("--alpha", type=float, default=DEFAULTS["alpha"],
                            help="quota exponent: M_k ~ p_uk^alpha (0 = equal quotas; "
                                 "default: %(default)s)")
        parser.add_argument("--intent-weight", type=float, default=DEFAULTS["intent_weight"],
                            help="weight of the intent cross-entropy (default: %(default)s)")

    def validate_config(self, config: dict) -> None:
        """The common and SASRec checks, then the EBR flags: one-line errors before any work."""
        super().validate_config(config)
        p = self.resolve_params(config)
        check.check_float("alpha", p["alpha"], low=0, low_open=False)
        check.check_float("intent_weight", p["intent_weight"], low=0, low_open=False)
        if p["clusters"] not in CLUSTERINGS:
            raise ValueError(f"--clusters must be one of {CLUSTERINGS}, got {p['clusters']!r}.")
        if p["num_clusters"] is not None:
            if p["clusters"] == "genres":
                raise ValueError("--num-clusters applies to --clusters kmeans only (genre "
                                 "clusters are the genres in use); drop it or add "
                                 "--clusters kmeans.")
            if check.check_int("num_clusters", p["num_clusters"]) < 2:
                raise ValueError(f"--num-clusters must be >= 2 (one cluster is plain SASRec), "
                                 f"got {p['num_clusters']}.")
        if p["loss"] != "full":
            raise ValueError(f"mt_ebr trains the full softmax inside the target's cluster; "
                             f"--loss {p['loss']} is not supported: drop --loss.")
        if p["separate_candidate_embeddings"]:
            raise ValueError("mt_ebr shares the item table between history and candidates; "
                             "drop --separate-candidate-embeddings.")

    def build_model(self, params: dict, protocol: SequentialProtocol) -> MultiTaskEBR:
        clusters = item_clusters(params, protocol)
        items = tf.keras.layers.Embedding(protocol.num_items + 1, int(params["embedding_dim"]),
                                          name="item_embedding")
        model = MultiTaskEBR(self.build_query_tower(params, protocol, items),
                             clusters.assignments, clusters.num_clusters,
                             temperature=float(params["temperature"]),
                             l2_normalize=bool(params["l2_normalize"]),
                             intent_weight=float(params["intent_weight"]))
        # Recipe-level facts the evaluation and the export read.
        model.clusters = clusters
        model.alpha = float(params["alpha"])
        model.example_age_scale = None   # serving inputs: the history only
        model.query({"history": tf.constant(protocol.split("valid").features["history"][:2])})
        return model

    def _checkpoint(self, model: MultiTaskEBR) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(query_tower=model.query_tower, prompts=model.prompts,
                                   intent_prompt=model.intent_prompt,
                                   intent_head=model.intent_head)

    # ---- retrieval ------------------------------------------------------------------------
    def clustered_index(self, model: MultiTaskEBR, alpha: float, k: int = TOP_N,
                        make_index=None, query_model=None) -> ClusteredIndex:
        """The per-cluster index over the model's items (identifiers: item indices 1..n)."""
        make_index = make_index or (lambda kk: BruteForce(k=kk))
        index = ClusteredIndex(make_index, model.item_clusters[1:], model.num_clusters,
                               query_model=query_model, k=k, alpha=alpha)
        table = model.candidates().numpy()[1:]
        return index.index(table, np.arange(1, len(table) + 1, dtype=np.int64))

    def query_outputs(self, model: MultiTaskEBR, protocol: SequentialProtocol,
                      split: str) -> dict:
        """`{"queries": [users, K, d], "intent": [users, K]}` of the users of `split`."""
        outs = [model.query({"history": b["history"]})
                for b in protocol.query_dataset(split, features=["history"])]
        return {key: np.concatenate([o[key].numpy() for o in outs]) for key in outs[0]}

    def top_n(self, model, protocol, split: str, alpha: Optional[float] = None) -> np.ndarray:
        """`[users, TOP_N]` item indices of the quota-merged lists (`alpha`: the run's)."""
        if alpha is None:
            alpha = float(getattr(model, "alpha", DEFAULTS["alpha"]))
        index = self.clustered_index(model, alpha)
        _, ids = index(self.query_outputs(model, protocol, split))
        return ids.numpy().astype(np.int64)

    def extra_metrics(self, model: MultiTaskEBR, protocol: SequentialProtocol,
                      topn: np.ndarray) -> dict:
        """List diversity (distinct clusters and genres in the top N), K and alpha."""
        metrics = diversity_metrics(topn, model.clusters, protocol.sequences.item_genres)
        metrics["num_clusters"] = model.num_clusters
        metrics["alpha"] = model.alpha
        return metrics

    def index_inputs(self, run_dir) -> IndexInputs:
        inputs = super().index_inputs(run_dir)
        query_model = inputs.query_model       # movie id strings -> {"queries", "intent"}
        model = query_model.model

        def make_index(index_class, k):
            return ClusteredIndex(lambda kk: index_class(k=kk), model.item_clusters[1:],
                                  model.num_clusters, query_model=query_model, k=k,
                                  alpha=model.alpha)

        inputs.make_index = make_index
        return inputs
