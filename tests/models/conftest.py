"""Shared pieces of the multi-task ranker tests: a small feature encoder and a labelled batch."""

import numpy as np
import pytest

import towerkit  # noqa: F401
from towerkit.features import AttributeEmbedding, FeatureSet

BATCH = 64


def make_features():
    users = [str(i) for i in range(20)]
    movies = [str(i) for i in range(30)]
    return FeatureSet({
        "user_id": AttributeEmbedding(users, [[1 + i % 3] for i in range(20)], 4, dim=4,
                                      id_dim=4),
        "item_id": AttributeEmbedding(movies, [[1 + i % 5, 6] for i in range(30)], 7, dim=4,
                                       id_dim=4),
    })


def make_batch(seed=0):
    rng = np.random.default_rng(seed)
    click = (rng.random(BATCH) < 0.5).astype(np.float32)
    like = click * (rng.random(BATCH) < 0.5)
    return {"user_id": rng.integers(0, 20, BATCH).astype(str).astype(bytes),
            "item_id": rng.integers(0, 30, BATCH).astype(str).astype(bytes),
            "click": click, "like": like.astype(np.float32), "ctcvr": (click * like).astype(
                np.float32), "rating": (click * rng.integers(1, 6, BATCH)).astype(np.float32)}




@pytest.fixture
def features():
    """A factory of fresh feature encoders (each model needs its own)."""
    return make_features


@pytest.fixture
def batch():
    return make_batch()
