"""`ItemClusters`: the "divide" step, a catalogue split into K disjoint clusters.

Divide-and-conquer retrieval (Zhang et al., WWW 2023) splits the corpus into clusters and
treats retrieval inside each cluster as one task. Two ways to divide are offered:

* `ItemClusters.from_genres(item_genres)`: given categories. A MovieLens movie has one to six
  genres, which TFDS lists by label id; each movie goes to its *first* (smallest-id) genre,
  the choice `towerkit.recipes.dat` makes for its category loss ("Action|Comedy" -> Action).
  Genres no movie has first are dropped, so the K clusters are the genres in use (18 on
  MovieLens 100K), numbered by genre id.
* `ItemClusters.from_kmeans(embeddings, k)`: k-means over item embeddings. The paper clusters
  Word2Vec item embeddings; `cooccurrence_embeddings` computes their matrix-factorisation
  equivalent (SVD of the positive PMI matrix of items co-occurring within a window of the
  training sequences, Levy and Goldberg 2014), deterministic and with no training run.
  k-means is Lloyd's algorithm with k-means++ seeding from `numpy.random.RandomState(seed)`;
  a cluster that empties is re-seeded with the point farthest from its centroid, so every
  cluster keeps at least one item. Cold items (a zero embedding row: no co-occurrence in the
  training sequences) carry no signal and go to the largest cluster.

Row 0 of the item index is padding and belongs to no cluster (`assignments[0] == -1`).

Example:
  >>> clusters = ItemClusters.from_genres(protocol.sequences.item_genres)
  >>> clusters.assignments[1:5], clusters.sizes()

References:
  Zhang et al., "Divide and Conquer: Towards Better Embedding-based Retrieval for Recommender
  Systems From a Multi-task Perspective", WWW 2023, https://arxiv.org/abs/2302.02657.
  Levy and Goldberg, "Neural Word Embedding as Implicit Matrix Factorization", NIPS 2014.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["ItemClusters", "cooccurrence_embeddings", "kmeans"]


class ItemClusters:
    """Every item of the catalogue in exactly one of `num_clusters` clusters.

    Args:
      assignments: int `[num_items + 1]`; entry 0 (padding) is -1, every other entry a cluster
        id in `[0, num_clusters)`.
      num_clusters: int K. Every cluster must hold at least one item.
      names: optional K strings (e.g. genre names).

    Raises:
      ValueError: padding assigned, an item without a cluster or with an id outside
        `[0, K)`, or an empty cluster.
    """

    def __init__(self, assignments, num_clusters: int, names: Optional[Sequence[str]] = None):
        a = np.asarray(assignments)
        if a.ndim != 1 or len(a) < 2 or a.dtype.kind not in "iu":
            raise ValueError(f"assignments must be a 1-D int array [num_items + 1], got shape "
                             f"{a.shape} dtype {a.dtype}.")
        if isinstance(num_clusters, bool) or not isinstance(num_clusters, (int, np.integer)) \
                or num_clusters < 1:
            raise ValueError(f"num_clusters must be a positive int, got {num_clusters!r}.")
        if a[0] != -1:
            raise ValueError(f"assignments[0] is the padding row and must be -1, got {a[0]}.")
        bad = np.flatnonzero((a[1:] < 0) | (a[1:] >= num_clusters)) + 1
        if len(bad):
            raise ValueError(f"{len(bad)} items have no cluster in [0, {num_clusters}) (first: "
                             f"item {bad[0]} -> {a[bad[0]]}); every item needs exactly one.")
        sizes = np.bincount(a[1:], minlength=num_clusters)
        if (sizes == 0).any():
            raise ValueError(f"clusters {np.flatnonzero(sizes == 0).tolist()} hold no item; "
                             "renumber the clusters in use as 0..K-1 or choose a smaller K.")
        if names is not None and len(names) != num_clusters:
            raise ValueError(f"got {len(names)} names for {num_clusters} clusters.")
        self.assignments = a.astype(np.int64)
        self.num_clusters = int(num_clusters)
        self.names = [str(n) for n in names] if names is not None else [
            f"cluster_{k}" for k in range(num_clusters)]

    @property
    def num_items(self) -> int:
        return len(self.assignments) - 1

    def sizes(self) -> np.ndarray:
        """int64 `[K]`: items per cluster."""
        return np.bincount(self.assignments[1:], minlength=self.num_clusters)

    def members(self, k: int) -> np.ndarray:
        """Item indices (1-based) of cluster `k`, ascending."""
        return np.flatnonzero(self.assignments == k)

    @classmethod
    def from_genres(cls, item_genres: np.ndarray,
                    genre_names: Optional[Sequence[str]] = None) -> "ItemClusters":
        """One cluster per first genre in use.

        Args:
          item_genres: int `[num_items + 1, max_genres]`, genre id + 1 per item, 0 = padding
            (`UserSequences.item_genres`).
          genre_names: optional names indexed by genre id (TFDS label id).

        Raises:
          ValueError: no genres given, or an item (other than row 0) without a genre.
        """
        if item_genres is None:
            raise ValueError("Genre clusters need item genres (a MovieLens config with "
                             "item_genres); use k-means clusters instead.")
        g = np.asarray(item_genres)
        if g.ndim != 2:
            raise ValueError(f"item_genres must be [num_items + 1, max_genres], got {g.shape}.")
        masked = np.where(g[1:] > 0, g[1:], np.iinfo(np.int64).max)
        first = masked.min(axis=1)
        missing = np.flatnonzero(first == np.iinfo(np.int64).max)
        if len(missing):
            raise ValueError(f"{len(missing)} items have no genre (first: item "
                             f"{missing[0] + 1}); genre clusters need one per item.")
        used = np.unique(first)
        cluster = np.searchsorted(used, first)
        names = None
        if genre_names is not None:
            names = [str(genre_names[int(u) - 1]) for u in used]
        return cls(np.concatenate([[-1], cluster]), len(used), names)

    @classmethod
    def from_kmeans(cls, embeddings: np.ndarray, num_clusters: int, seed: int = 0,
                    iterations: int = 100) -> "ItemClusters":
        """k-means clusters of item embeddings `[num_items + 1, dim]` (row 0 = padding).

        Rows are L2-normalised first (cosine geometry); all-zero rows (cold items) go to the
        largest cluster.

        Raises:
          ValueError: fewer warm items than clusters.
        """
        x = np.asarray(embeddings, np.float64)[1:]
        norms = np.linalg.norm(x, axis=1)
        warm = norms > 0
        if warm.sum() < num_clusters:
            raise ValueError(f"{int(warm.sum())} items have embeddings, fewer than "
                             f"num_clusters={num_clusters}.")
        labels = kmeans(x[warm] / norms[warm, None], num_clusters, seed, iterations)
        out = np.full(len(x), -1, np.int64)
        out[warm] = labels
        out[~warm] = int(np.argmax(np.bincount(labels, minlength=num_clusters)))
        return cls(np.concatenate([[-1], out]), num_clusters)


def kmeans(x: np.ndarray, k: int, seed: int = 0, iterations: int = 100) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; returns int64 `[n]` labels, no empty cluster.

    Args:
      x: float `[n, dim]`.
      k: int, `1 <= k <= n`.
      seed: int. `numpy.random.RandomState` seed of the k-means++ draws.
      iterations: int. Maximum Lloyd iterations (stops earlier when labels stop changing).

    Raises:
      ValueError: `k` outside `[1, n]`.
    """
    x = np.asarray(x, np.float64)
    n = len(x)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in [1, {n}] (the number of points), got {k!r}.")
    rng = np.random.RandomState(seed)
    centers = [x[rng.randint(n)]]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        probs = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        centers.append(x[rng.choice(n, p=probs)])
        d2 = np.minimum(d2, ((x - centers[-1]) ** 2).sum(1))
    centers = np.array(centers)
    labels = np.full(n, -1, np.int64)
    for _ in range(iterations):
        dist = (x ** 2).sum(1)[:, None] - 2 * x @ centers.T + (centers ** 2).sum(1)[None, :]
        new = dist.argmin(axis=1)
        for c in range(k):  # re-seed an empty cluster with the worst-served point
            if not (new == c).any():
                far = int(np.argmax(dist[np.arange(n), new]))
                new[far] = c
                dist[far] = -np.inf
        if (new == labels).all():
            break
        labels = new
        centers = np.array([x[labels == c].mean(axis=0) for c in range(k)])
    return labels


def cooccurrence_embeddings(sequences: Sequence[np.ndarray], num_items: int, dim: int = 32,
                            window: int = 5) -> np.ndarray:
    """Word2Vec-like item embeddings: SVD of the positive PMI of windowed co-occurrences.

    Args:
      sequences: item index sequences (1-based, time order), e.g. the training users'.
      num_items: int. Catalogue size (rows `0..num_items`).
      dim: int. Embedding size (at most `num_items`).
      window: int. Items at most `window` positions apart co-occur (both directions).

    Returns:
      float64 `[num_items + 1, dim]` `U_d * sqrt(S_d)`; rows of items that never co-occur
      (and row 0) are zero.
    """
    counts = np.zeros((num_items + 1, num_items + 1), np.float64)
    for seq in sequences:
        seq = np.asarray(seq, np.int64)
        for offset in range(1, window + 1):
            if len(seq) <= offset:
                break
            np.add.at(counts, (seq[:-offset], seq[offset:]), 1.0)
    counts = counts + counts.T
    counts[0, :] = counts[:, 0] = 0.0
    np.fill_diagonal(counts, 0.0)
    row = counts.sum(1)
    total = row.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(counts * total / np.outer(row, row))
    ppmi = np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0.0)
    u, s, _ = np.linalg.svd(ppmi, hermitian=True)
    dim = min(int(dim), num_items)
    out = u[:, :dim] * np.sqrt(s[:dim])[None, :]
    out[row == 0] = 0.0
    return out
