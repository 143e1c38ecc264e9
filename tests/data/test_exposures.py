"""The multi-task exposures: labels, sampling without rated pairs, deterministic split."""

import numpy as np
import pytest

import towerkit  # noqa: F401
from towerkit.data import build_exposures
from towerkit.data.movielens import recipe_columns


def _tiny_ratings():
    users = np.array([b"1", b"1", b"2", b"3", b"3", b"3"])
    movies = np.array([b"10", b"11", b"10", b"12", b"10", b"13"])
    genres = np.empty(6, dtype=object)
    genres[:] = [np.array([0]), np.array([1, 2]), np.array([0]), np.array([3]), np.array([0]),
                 np.array([4])]
    return {"user_id": users, "item_id": movies, "rating": np.array([5, 2, 4, 3, 1, 4.0]),
            "timestamp": np.arange(6) * 10, "user_age": np.full(6, 30.0),
            "user_gender": np.ones(6, bool), "user_occupation": np.zeros(6, np.int64),
            "user_zip_code": np.array([b"1"] * 6), "item_genres": genres}


def test_labels_on_a_hand_table():
    data = build_exposures(columns=_tiny_ratings(), negatives_per_rating=0.5, seed=3)
    c = data.columns
    assert len(c["click"]) == 9  # 6 ratings + 3 sampled
    np.testing.assert_array_equal(c["click"], [1] * 6 + [0] * 3)
    # like = rating >= 4 on clicks: ratings 5, 2, 4, 3, 1, 4 -> 1, 0, 1, 0, 0, 1.
    np.testing.assert_array_equal(c["like"], [1, 0, 1, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(c["ctcvr"], c["click"] * c["like"])
    rated = {(u, m) for u, m in zip(c["user_id"][:6], c["item_id"][:6])}
    sampled = list(zip(c["user_id"][6:], c["item_id"][6:]))
    assert not rated & set(sampled) and len(set(sampled)) == 3
    assert sorted(data.item_ids.tolist()) == [b"10", b"11", b"12", b"13"]
    np.testing.assert_array_equal(data.item_genres[1], [1, 2])
    # A sampled exposure copies its source rating's user and timestamp.
    source = {(u, t) for u, t in zip(c["user_id"][:6], c["timestamp"][:6])}
    assert all((u, t) in source for u, t in zip(c["user_id"][6:], c["timestamp"][6:]))


def test_split_is_deterministic_disjoint_and_covers_everything():
    a = build_exposures(columns=_tiny_ratings(), negatives_per_rating=0.5, seed=3,
                        train_fraction=0.6, valid_fraction=0.2)
    b = build_exposures(columns=_tiny_ratings(), negatives_per_rating=0.5, seed=3,
                        train_fraction=0.6, valid_fraction=0.2)
    for name in ("train", "valid", "test"):
        np.testing.assert_array_equal(a.splits[name], b.splits[name])
        np.testing.assert_array_equal(a.split(name)["item_id"], b.split(name)["item_id"])
    joined = np.concatenate([a.splits[n] for n in ("train", "valid", "test")])
    np.testing.assert_array_equal(np.sort(joined), np.arange(9))


def test_too_many_negatives_and_bad_fractions_raise():
    with pytest.raises(ValueError, match="more than exist"):
        build_exposures(columns=_tiny_ratings(), negatives_per_rating=5)
    with pytest.raises(ValueError, match="leave a test split"):
        build_exposures(columns=_tiny_ratings(), train_fraction=0.8, valid_fraction=0.2)
    with pytest.raises(ValueError, match="negatives_per_rating"):
        build_exposures(columns=_tiny_ratings(), negatives_per_rating=0)
    with pytest.raises(ValueError, match="Unknown split"):
        build_exposures(columns=_tiny_ratings(), negatives_per_rating=0.5).split("dev")


def test_movielens_100k_defaults():
    ratings = recipe_columns("100k-ratings")
    data = build_exposures("100k-ratings", columns=ratings)
    c = data.columns
    assert len(c["click"]) == 200_000 and c["click"].sum() == 100_000
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 160_000, "valid": 20_000,
                                                           "test": 20_000}
    # like on clicks = share of ratings >= 4 in MovieLens 100K (55,375 of 100,000).
    assert c["like"].sum() == 55_375 and c["ctcvr"].sum() == 55_375
    codes = np.char.add(np.char.add(c["user_id"], b":"), c["item_id"])
    assert len(np.unique(codes)) == 200_000  # no sampled pair is rated or repeated
