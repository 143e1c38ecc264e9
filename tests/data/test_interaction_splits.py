"""Random, time and held-out-user splits of any log."""

import numpy as np
import pytest

import towerkit  # noqa: F401
from towerkit.data.columns import Columns
from towerkit.data.interaction_splits import split_by_time, split_random, split_users
from towerkit.data.interactions import Interactions


@pytest.fixture(scope="module")
def log():
    rng = np.random.default_rng(3)
    n = 1000
    return Interactions.from_columns(
        {"u": [f"u{i}" for i in rng.integers(0, 50, n)], "i": rng.integers(0, 80, n),
         "t": rng.integers(0, 10_000, n)}, Columns(user="u", item="i", time="t"))


def _rows(part):
    return {tuple(r) for r in zip(part["user"], part["item"], part["timestamp"])}


def test_split_random(log):
    train, test = split_random(log, test_fraction=0.25, seed=1)
    assert (len(train), len(test)) == (750, 250)
    again_train, _ = split_random(log, test_fraction=0.25, seed=1)
    np.testing.assert_array_equal(train["item"], again_train["item"])
    other, _ = split_random(log, test_fraction=0.25, seed=2)
    assert not np.array_equal(train["item"], other["item"])
    assert sorted(_rows(train) | _rows(test)) == sorted(_rows(log))


def test_split_by_time(log):
    train, test = split_by_time(log, cutoff=7000)
    assert train["timestamp"].max() < 7000 <= test["timestamp"].min()
    assert len(train) + len(test) == len(log) == len(train) + int((log["timestamp"] >= 7000).sum())
    train, test = split_by_time(log, test_fraction=0.1)
    assert len(test) == 100 and train["timestamp"].max() <= test["timestamp"].min()
    with pytest.raises(ValueError, match="exactly one of cutoff= and test_fraction="):
        split_by_time(log, cutoff=5, test_fraction=0.1)
    with pytest.raises(ValueError, match="leaves one side empty"):
        split_by_time(log, cutoff=10**9)
    no_time = Interactions.from_columns({"u": [1, 2], "i": [1, 2]}, Columns("u", "i"))
    with pytest.raises(ValueError, match="needs a timestamp"):
        split_by_time(no_time, test_fraction=0.5)


def test_split_users(log):
    train, test = split_users(log, test_fraction=0.2, seed=0)
    train_users, test_users = set(train["user"]), set(test["user"])
    assert not train_users & test_users
    assert len(test_users) == 10 and len(train_users | test_users) == 50
    assert len(train) + len(test) == len(log)
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        split_users(log, test_fraction=1.0)
