"""Clustered MIPS benchmark data: a mixture of Gaussians with varied norms, plus exact top-k truth.

Used by `benchmarks/index/run_benchmark.py`; deterministic for a given seed. NumPy only.
"""

from __future__ import annotations

import numpy as np


def clustered_dataset(
    num_points: int,
    num_queries: int,
    dim: int = 64,
    num_clusters: int = 1000,
    seed: int = 0,
    spread_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns `(candidates [num_points, dim], queries [num_queries, dim])` float32 from one mixture.

    Queries are held-out draws from the same distribution as the candidates.
    """
    both = clustered_vectors(num_points + num_queries, dim, num_clusters, seed, spread_scale)
    return both[:num_points], both[num_points:]


def clustered_vectors(
    num_points: int,
    dim: int = 64,
    num_clusters: int = 1000,
    seed: int = 0,
    spread_scale: float = 1.0,
) -> np.ndarray:
    """Draws `[num_points, dim]` float32 vectors from a mixture of `num_clusters` Gaussians.

    Cluster centres are random directions; each cluster has its own spread (noise norm 0.45-1.15
    times the centre norm, times `spread_scale`: below 1 the clusters are tighter) and every
    point is scaled by a log-normal norm factor (sigma 0.45), so norms vary and
    maximum inner product search differs from nearest-neighbour search. Rows are in random order.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_clusters, dim)).astype(np.float32) / np.sqrt(dim)
    spreads = ((rng.uniform(0.45, 1.15, size=num_clusters) * spread_scale).astype(np.float32)
               / np.sqrt(dim))
    weights = rng.dirichlet(np.full(num_clusters, 2.0))
    labels = rng.choice(num_clusters, size=num_points, p=weights)
    out = np.empty((num_points, dim), np.float32)
    step = 200_000
    for start in range(0, num_points, step):
        sl = slice(start, min(start + step, num_points))
        noise = rng.standard_normal(size=(sl.stop - sl.start, dim), dtype=np.float32)
        out[sl] = centres[labels[sl]] + noise * spreads[labels[sl], None]
    norms = rng.lognormal(mean=0.0, sigma=0.45, size=num_points).astype(np.float32)
    out *= norms[:, None]
    return out


def exact_top_k(queries: np.ndarray, candidates: np.ndarray, k: int, block: int = 256) -> np.ndarray:
    """Exact maximum-inner-product top-k row indices `[num_queries, k]`, best first."""
    result = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), block):
        scores = queries[start:start + block] @ candidates.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        result[start:start + block] = np.take_along_axis(part, order, axis=1)
    return result


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k rows present in `found` (both `[num_queries, k]`)."""
    k = truth.shape[1]
    hits = sum(len(np.intersect1d(f[:k], t)) for f, t in zip(found, truth))
    return hits / (truth.shape[0] * k)
