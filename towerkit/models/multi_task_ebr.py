"""`MultiTaskEBR`: Kuaishou's divide-and-conquer embedding-based retrieval as one multi-task model."""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

__all__ = ["MultiTaskEBR"]

QUERIES = "queries"
INTENT = "intent"


@tf.keras.utils.register_keras_serializable(package="towerkit")
class MultiTaskEBR(tfrs.Model):
    """A shared sequence encoder, one learned task prompt per item cluster, and an intent head.

    The catalogue is split into K clusters (`towerkit.data.ItemClusters`); retrieval inside
    cluster k is task k. Following the paper, task k's query for a history `s_1..s_n` is

        e_u^k = Encoder([s_1 * t_k, ..., s_n * t_k])         # t_k: learned prompt [d]

    with the shared encoder (a `towerkit.towers.SASRecTower`, whose `token_scale` hook
    multiplies every history token element-wise by the prompt) and the shared item table `M`
    (the encoder's `item_embedding`) as the candidate side. Prompts start at 1 (every task
    starts as plain SASRec).

    Training (`compute_loss`): an example `(history, target)` is a task-`c(target)` example:
    its query is `e_u^{c(target)}` and its loss the softmax cross-entropy over the items of
    that cluster only (logits of items outside the cluster, and of the padding row, are
    masked out: every negative is an in-cluster, "hard" negative; all of them are used, a full
    in-cluster softmax). Scores are cosines divided by `temperature` (`l2_normalize`) or dot
    products. So prompt `t_k` receives gradient only from task-k examples.

    User intent (the paper leaves its model open; chosen here): `p_u = softmax(W h + b)` where
    `h` is the same shared encoder run on the history scaled by a separate learned intent
    prompt `t_0` (also initialised to 1), trained with cross-entropy against the target's
    cluster, weighted by `intent_weight` in the total loss. Its gradient reaches the shared
    encoder and `t_0`, never the task prompts. At serving, `query(features)` returns
    `{"queries": [batch, K, d], "intent": [batch, K]}`, the input of
    `towerkit.index.ClusteredIndex`.

    Cold items: an item in the catalogue has a cluster (genre clusters cover every movie;
    k-means sends cold items to the largest cluster), so it is a candidate of that cluster's
    task even without training examples.

    Args:
      query_tower: the shared encoder, a layer with `item_embedding` (an `Embedding`
        `[num_items + 1, d]`, row 0 padding) and `call(features, training, token_scale)`
        -> `[batch, d]` (`SASRecTower`).
      item_clusters: int `[num_items + 1]`, the cluster of each item; entry 0 (padding) -1.
      num_clusters: int K.
      temperature: float > 0. Logits are scores / temperature.
      l2_normalize: bool. Cosine scores (queries and items L2-normalised).
      intent_weight: float >= 0. Weight of the intent cross-entropy (0: an untrained head).

    Example:
    ```python
    items = tf.keras.layers.Embedding(num_items + 1, 64)
    model = MultiTaskEBR(SASRecTower(items, max_length=20), clusters.assignments,
                         clusters.num_clusters)
    model.compile(tf.keras.optimizers.Adam(1e-3))
    model.fit(train_ds)                       # dicts with history, target
    out = model.query({"history": history})   # {"queries": [b, K, 64], "intent": [b, K]}
    ```

    References:
      Zhang et al., "Divide and Conquer: Towards Better Embedding-based Retrieval for
      Recommender Systems From a Multi-task Perspective", WWW 2023,
      https://arxiv.org/abs/2302.02657.
    """

    def __init__(self, query_tower: tf.keras.layers.Layer, item_clusters, num_clusters: int,
                 temperature: float = 0.1, l2_normalize: bool = True,
                 intent_weight: float = 1.0, name: Optional[str] = None, **kwargs):
        super().__init__(name=name, **kwargs)
        items = getattr(query_tower, "item_embedding", None)
        if not isinstance(items, tf.keras.layers.Embedding):
            raise TypeError("query_tower must expose its item table as `item_embedding` (a "
                            "tf.keras.layers.Embedding), e.g. towerkit.towers.SASRecTower.")
        clusters = np.asarray(item_clusters)
        if clusters.ndim != 1 or clusters.dtype.kind not in "iu" or \
                len(clusters) != items.input_dim:
            raise ValueError(f"item_clusters must be int [num_items + 1 = {items.input_dim}] "
                             f"(one cluster per item row), got shape {clusters.shape} dtype "
                             f"{clusters.dtype}.")
        if isinstance(num_clusters, bool) or not isinstance(num_clusters, (int, np.integer)) \
                or num_clusters < 1:
            raise ValueError(f"num_clusters must be a positive int, got {num_clusters!r}.")
        if clusters[0] != -1 or clusters[1:].min() < 0 or clusters[1:].max() >= num_clusters:
            raise ValueError(f"item_clusters must be -1 for the padding row 0 and in [0, "
                             f"{num_clusters}) for every item; use ItemClusters.assignments.")
        if isinstance(temperature, bool) or not np.isscalar(temperature) or \
                not temperature > 0:
            raise ValueError(f"temperature must be a float > 0, got {temperature!r}.")
        if isinstance(intent_weight, bool) or not np.isscalar(intent_weight) or \
                not intent_weight >= 0:
            raise ValueError(f"intent_weight must be a float >= 0, got {intent_weight!r}.")
        self.query_tower = query_tower
        self.item_clusters = clusters.astype(np.int64)
        self.num_clusters = int(num_clusters)
        self.temperature = float(temperature)
        self.l2_normalize = bool(l2_normalize)
        self.intent_weight = float(intent_weight)
        dim = int(items.output_dim)
        self.dim = dim
        self._clusters = tf.constant(self.item_clusters)
        self.prompts = self.add_weight(name="task_prompts", shape=[self.num_clusters, dim],
                                       initializer="ones", trainable=True)
        self.intent_prompt = self.add_weight(name="intent_prompt", shape=[dim],
                                             initializer="ones", trainable=True)
        self.intent_head = tf.keras.layers.Dense(self.num_clusters, name="intent_head")
        self.intent_head.build([None, dim])

    @property
    def candidate_embedding(self) -> tf.keras.layers.Embedding:
        return self.query_tower.item_embedding

    def _normalize(self, x: tf.Tensor) -> tf.Tensor:
        return tf.math.l2_normalize(x, axis=-1) if self.l2_normalize else x

    def candidates(self) -> tf.Tensor:
        """`[num_items + 1, d]` candidate vectors (L2-normalised with `l2_normalize`)."""
        return self._normalize(self.candidate_embedding.embeddings)

    def task_query(self, features: Mapping[str, tf.Tensor], clusters: tf.Tensor,
                   training: bool = False) -> tf.Tensor:
        """`[batch, d]`: each row's query for task `clusters[row]` (int `[batch]`)."""
        scale = tf.gather(self.prompts, tf.cast(clusters, tf.int32))
        return self._normalize(self.query_tower(features, training=training, token_scale=scale))

    def cluster_queries(self, features: Mapping[str, tf.Tensor],
                        training: bool = False) -> tf.Tensor:
        """`[batch, K, d]`: the K task queries of every history (the encoder runs K times)."""
        history = tf.convert_to_tensor(features["history"])
        batch = tf.shape(history)[0]
        tiled = {"history": tf.repeat(history, self.num_clusters, axis=0)}
        clusters = tf.tile(tf.range(self.num_clusters), [batch])
        q = self.task_query(tiled, clusters, training=training)
        return tf.reshape(q, [batch, self.num_clusters, self.dim])

    def intent_logits(self, features: Mapping[str, tf.Tensor],
                      training: bool = False) -> tf.Tensor:
        """`[batch, K]` logits of the user-intent distribution."""
        history = tf.convert_to_tensor(features["history"])
        scale = tf.tile(self.intent_prompt[tf.newaxis, :], [tf.shape(history)[0], 1])
        h = self.query_tower({"history": history}, training=training, token_scale=scale)
        return self.intent_head(h)

    def query(self, features: Mapping[str, tf.Tensor], training: bool = False) -> dict:
        """`{"queries": [batch, K, d], "intent": [batch, K]}` (intent sums to 1 per row)."""
        return {QUERIES: self.cluster_queries(features, training=training),
                INTENT: tf.nn.softmax(self.intent_logits(features, training=training))}

    def retrieval_loss(self, features: Mapping[str, tf.Tensor],
                       training: bool = False) -> tf.Tensor:
        """Mean in-cluster softmax cross-entropy of the examples' task queries."""
        target = tf.cast(features["target"], tf.int64)
        cluster = tf.gather(self._clusters, target)
        q = self.task_query(features, cluster, training=training)
        logits = tf.matmul(q, self.candidates(), transpose_b=True) / self.temperature
        same = tf.equal(self._clusters[tf.newaxis, :], cluster[:, tf.newaxis])
        # A large finite negative, not -inf: exp underflows to exactly 0 and no NaN can arise.
        logits = tf.where(same, logits, tf.fill(tf.shape(logits), -1e9))
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(target, logits))

    def intent_loss(self, features: Mapping[str, tf.Tensor],
                    training: bool = False) -> tf.Tensor:
        """Mean cross-entropy of the intent head against the target's cluster."""
        cluster = tf.gather(self._clusters, tf.cast(features["target"], tf.int64))
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            cluster, self.intent_logits(features, training=training)))

    def compute_loss(self, features, training: bool = False) -> tf.Tensor:
        loss = self.retrieval_loss(features, training=training)
        if self.intent_weight > 0:
            loss = loss + self.intent_weight * self.intent_loss(features, training=training)
        return loss

    def call(self, features, training: bool = False) -> dict:
        return self.query(features, training=training)

    def get_config(self) -> dict:
        return {"name": self.name,
                "query_tower": tf.keras.layers.serialize(self.query_tower),
                "item_clusters": self.item_clusters.tolist(),
                "num_clusters": self.num_clusters, "temperature": self.temperature,
                "l2_normalize": self.l2_normalize, "intent_weight": self.intent_weight}

    @classmethod
    def from_config(cls, config: dict) -> "MultiTaskEBR":
        config = dict(config)
        tower = tf.keras.layers.deserialize(config.pop("query_tower"))
        return cls(tower, np.asarray(config.pop("item_clusters"), np.int64), **config)
