"""Interactions and FeatureTable: canonical dtypes and one clear message per bad schema."""

import numpy as np
import pytest

import towerkit  # noqa: F401
from towerkit.data.columns import Columns
from towerkit.data.feature_table import FeatureTable
from towerkit.data.interactions import Interactions

COLS = Columns(user="uid", item="sku", time="ts", rating="stars", weight="w")


def _data(**overrides):
    data = {"uid": [3, 1, 3, 2], "sku": ["b", "a", "a", "c"], "ts": [30, 10, 20, 40],
            "stars": [4, 5, 3, 1], "w": [1.0, 0.5, 1.0, 2.0]}
    data.update(overrides)
    return data


def test_canonical_columns_and_dtypes():
    log = Interactions.from_columns(_data(), COLS)
    assert log.fields == ("user", "item", "timestamp", "rating", "weight")
    assert log["user"].dtype == np.int64 and log["timestamp"].dtype == np.int64
    assert log["item"].dtype == object and list(log["item"]) == [b"b", b"a", b"a", b"c"]
    assert log["rating"].dtype == np.float32 and log["weight"].dtype == np.float32
    np.testing.assert_array_equal(log["rating"], [4, 5, 3, 1])
    # Item counts: a=2, b=1, c=1 -> a first, then b, c by id.
    assert log.vocabulary("item").as_list() == ["a", "b", "c"]
    assert log.vocabulary("user", min_count=2).as_list() == [3]
    sub = log.take([3, 0])
    assert list(sub["user"]) == [2, 3] and list(sub["timestamp"]) == [40, 30]


def test_datetimes_become_unix_seconds():
    ts = np.array(["1970-01-01T00:00:10", "2001-09-09T01:46:40"], dtype="datetime64[s]")
    log = Interactions.from_columns({"u": ["x", "y"], "i": [1, 2], "t": ts},
                                    Columns(user="u", item="i", time="t"))
    np.testing.assert_array_equal(log["timestamp"], [10, 1_000_000_000])


@pytest.mark.parametrize("overrides, error, message", [
    ({"uid": [3.0, 1.0, 3.0, 2.0]}, TypeError, "ids in column 'uid' are floats.*cast them"),
    ({"sku": ["b", None, "a", "c"]}, ValueError, "id column 'sku' has missing values"),
    ({"sku": ["b", 2, "a", "c"]}, TypeError, "must all be strings or all be integers"),
    ({"sku": [True, False, True, True]}, TypeError, "dtype bool"),
    ({"stars": [4, np.nan, 3, 1]}, ValueError, "rating column 'stars' has 1 non-finite"),
    ({"w": [1.0, np.inf, -np.inf, 2.0]}, ValueError, "weight column 'w' has 2 non-finite"),
    ({"stars": ["good", "bad", "ok", "ok"]}, TypeError, "rating column 'stars' .* expected numbers"),
    ({"ts": [1.0, np.nan, 2.0, 3.0]}, ValueError, "timestamp column 'ts' has 1 non-finite"),
    ({"ts": [1.5, 2.0, 2.0, 3.0]}, ValueError, "fractional"),
    ({"ts": ["mon", "tue", "wed", "thu"]}, TypeError, "timestamp column 'ts' .* integers"),
    ({"uid": [], "sku": [], "ts": [], "stars": [], "w": []}, ValueError, "has no rows"),
])
def test_bad_columns(overrides, error, message):
    with pytest.raises(error, match=message):
        Interactions.from_columns(_data(**overrides), COLS)


def test_missing_column_names_it_and_lists_available():
    data = _data()
    del data["ts"]
    with pytest.raises(ValueError, match=r"no column 'ts'; available columns: \['uid', 'sku', "
                                         r"'stars', 'w'\]"):
        Interactions.from_columns(data, COLS)


def test_columns_mapping_checks():
    with pytest.raises(TypeError, match="Columns.user must be a non-empty column name"):
        Columns(user="")
    with pytest.raises(ValueError, match="same column"):
        Columns(user="id", item="id")
    with pytest.raises(TypeError, match="towerkit.data.Columns"):
        Interactions.from_columns(_data(), {"user": "uid"})


def test_feature_tables():
    items = {"sku": ["a", "b", "c"], "price": [1.5, 2.0, 3.0], "brand": ["x", "y", "x"]}
    log = Interactions.from_columns(_data(), COLS, item_features=items)
    rows = log.item_features.lookup(log["item"])
    np.testing.assert_array_equal(rows["price"], np.float32([2.0, 1.5, 1.5, 3.0]))
    assert list(rows["brand"]) == [b"y", b"x", b"x", b"x"]
    users = FeatureTable.from_columns({"user_id": [1, 2, 3], "age": [20, 30, 40]}, "user_id")
    log = Interactions.from_columns(_data(), COLS, user_features=users)
    assert log.user_features is users


@pytest.mark.parametrize("table, error, message", [
    ({"sku": ["a", "b", "b", "c"], "p": [1, 2, 3, 4]}, ValueError,
     r"key column 'sku' has 1 duplicate key\(s\), e.g. \[b'b'\]"),
    ({"sku": ["a", "b", "c", "zz"], "p": [1, 2, 3, 4]}, ValueError,
     r"1 key\(s\) of 'sku' are absent from the interactions' item ids, e.g. \[b'zz'\]"),
    ({"sku": ["a", "b"], "p": [1, 2]}, ValueError, r"1 item id\(s\) .* no row .* \[b'c'\]"),
    ({"sku": [1, 2, 3], "p": [1, 2, 3]}, TypeError, "keys of 'sku' are integers but"),
    ({"product": ["a", "b", "c"]}, ValueError, "no column 'sku'; available columns: "
                                               r"\['product'\]"),
    ({"sku": [1.0, 2.0, 3.0]}, TypeError, "are floats"),
])
def test_bad_feature_tables(table, error, message):
    with pytest.raises(error, match=message):
        Interactions.from_columns(_data(), COLS, item_features=table)


def test_concat_and_canonical_order():
    log = Interactions.from_columns(_data(), COLS)
    both = Interactions.concat([log.take([2, 3]), log.take([0, 1])])
    a, b = log.take(log.canonical_order()), both.take(both.canonical_order())
    for f in log.fields:
        np.testing.assert_array_equal(a[f], b[f])
    strings = Interactions.from_columns(_data(uid=["3", "1", "3", "2"]), COLS)
    with pytest.raises(TypeError, match="strings in one part and integers"):
        Interactions.concat([log, strings])


def test_to_dataset_batches_and_shuffles():
    log = Interactions.from_columns(_data(), COLS)
    rows = list(log.to_dataset().as_numpy_iterator())
    assert [r["user"] for r in rows] == [3, 1, 3, 2] and rows[0]["item"] == b"b"
    batches = list(log.to_dataset(batch_size=3).as_numpy_iterator())
    assert [list(b["timestamp"]) for b in batches] == [[30, 10, 20], [40]]
    shuffled = list(log.to_dataset(batch_size=2, shuffle=True, seed=1).as_numpy_iterator())
    stamps = np.concatenate([b["timestamp"] for b in shuffled])
    assert sorted(stamps) == [10, 20, 30, 40]
    for b in shuffled:  # rows stay aligned across fields
        for t, u in zip(b["timestamp"], b["user"]):
            assert {10: 1, 20: 3, 30: 3, 40: 2}[t] == u
