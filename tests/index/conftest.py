"""Shared data for the index tests: clustered MIPS data with varied norms, and NumPy oracles."""

import numpy as np
import pytest

import towerkit  # noqa: F401  (legacy-Keras switch before TensorFlow is imported)


def make_clustered(n, dim, clusters, num_queries, seed=0):
    """A mixture of Gaussians with per-point norm scaling (the issue's benchmark data, small).

    Returns (candidates [n, dim], held-out queries [num_queries, dim]) float32.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 2.0
    labels = rng.integers(0, clusters, n)
    scale = rng.uniform(0.5, 1.5, size=(n, 1))
    candidates = ((centres[labels] + rng.normal(size=(n, dim))) * scale).astype(np.float32)
    q_labels = rng.integers(0, clusters, num_queries)
    queries = (centres[q_labels] + rng.normal(size=(num_queries, dim))).astype(np.float32)
    return candidates, queries


def exact_top_k(queries, candidates, k):
    """NumPy oracle: (scores, rows) of the k largest dot products, best first."""
    scores = queries.astype(np.float64) @ candidates.astype(np.float64).T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows


def recall(found_rows, true_rows):
    k = true_rows.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found_rows, true_rows)]))


@pytest.fixture(scope="session")
def clustered():
    """4,000 x 16 candidates from 40 Gaussians and 200 held-out queries."""
    return make_clustered(4000, 16, 40, 200)


@pytest.fixture(scope="session")
def oracle():
    """The helpers above, for test modules (importlib mode cannot import conftest)."""
    import types

    return types.SimpleNamespace(exact_top_k=exact_top_k, recall=recall,
                                 make_clustered=make_clustered)
