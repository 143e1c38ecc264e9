"""The sequential protocol on any source equals the MovieLens path, with every name renamed."""

import numpy as np
import pandas as pd
import pytest

import towerkit  # noqa: F401
from towerkit.data import movielens, sources
from towerkit.data.columns import Columns
from towerkit.data.interaction_sequences import build_sequences, sequential_protocol
from towerkit.data.interactions import Interactions
from towerkit.data.sequential_protocol import SequentialProtocol

# MovieLens profile feature -> its renamed column in the CSV copy.
RENAMED = {"user_age": "age_bucket", "user_gender": "sex", "user_occupation": "job"}


@pytest.fixture(scope="module")
def reference():
    return SequentialProtocol.from_tfds("100k-ratings")


@pytest.fixture(scope="module")
def renamed(tmp_path_factory):
    """MovieLens 100K as CSV files with other column names and other (prefixed) ids.

    The prefix is zero-padded, so the ids' bytewise order is MovieLens' numeric order: the
    protocol must come out identical up to the renaming.
    """
    log = movielens.interactions("100k-ratings")
    d = tmp_path_factory.mktemp("renamed")
    pd.DataFrame({"who": [f"person-{u:04d}" for u in log["user"]],
                  "what": [f"film-{i:05d}" for i in log["item"]],
                  "when": log["timestamp"], "stars": log["rating"]}).to_csv(d / "log.csv",
                                                                           index=False)
    table = log.user_features
    pd.DataFrame({"who": [f"person-{u:04d}" for u in table.keys],
                  **{RENAMED[c]: v for c, v in table.columns.items()}}).to_csv(
        d / "users.csv", index=False)
    return sources.read(d / "log.csv", Columns(user="who", item="what", time="when",
                                               rating="stars"),
                        user_features=d / "users.csv")


def _plain(ids, prefix):
    return np.array([b"" if v == b"" else str(int(v.decode().removeprefix(prefix))).encode()
                     for v in ids], dtype=object)


def test_renamed_csv_gives_the_identical_protocol(reference, renamed):
    protocol = sequential_protocol(renamed)
    assert protocol.num_items == reference.num_items == 1349
    assert len(protocol.train_examples["target"]) == 77377
    np.testing.assert_array_equal(_plain(protocol.item_ids, "film-"), reference.item_ids)
    np.testing.assert_array_equal(_plain(protocol.sequences.user_ids, "person-"),
                                  reference.sequences.user_ids)
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(protocol.users(split), reference.users(split))
    for name, ref in reference.train_examples.items():
        np.testing.assert_array_equal(protocol.train_examples[RENAMED.get(name, name)], ref, name)
    test, ref_test = protocol.split("test"), reference.split("test")
    np.testing.assert_array_equal(test.history, ref_test.history)
    for a, b in zip(test.ground_truth, ref_test.ground_truth):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(protocol.target_probability, reference.target_probability)
    assert protocol.user_feature_sizes == {RENAMED[k]: v
                                           for k, v in reference.user_feature_sizes.items()}


def test_csv_copy_is_the_tfds_source_renamed(renamed):
    """The CSV source reads back exactly the tfds source's interactions (ids renamed)."""
    log = movielens.interactions("100k-ratings")
    assert renamed.fields == log.fields == ("user", "item", "timestamp", "rating")
    np.testing.assert_array_equal(_plain(renamed["user"], "person-").astype(int), log["user"])
    np.testing.assert_array_equal(_plain(renamed["item"], "film-").astype(int), log["item"])
    for field in ("timestamp", "rating"):
        assert renamed[field].dtype == log[field].dtype
        np.testing.assert_array_equal(renamed[field], log[field])


def test_tfds_source_gives_the_identical_protocol(reference):
    protocol = sequential_protocol(movielens.interactions("100k-ratings"))
    np.testing.assert_array_equal(protocol.item_ids, reference.item_ids)
    for name, ref in reference.train_examples.items():
        np.testing.assert_array_equal(protocol.train_examples[name], ref, name)


def test_hand_built_sequences():
    # Item counts a=b=c=2, d=1: d is dropped (min_item_interactions=2); the equal counts tie,
    # so ids order them: a=1, b=2, c=3. Users by id 1, 2, 3; user 1 keeps one event (b) and
    # stays (min_user_interactions=1); user 2 is c(t=1), a(t=2), a(t=2) -> 3, 1, 1;
    # user 3 is b(t=8), c(t=9) -> 2, 3.
    log = Interactions.from_columns(
        {"u": [2, 2, 1, 2, 3, 3, 1], "i": ["c", "a", "b", "a", "c", "b", "d"],
         "t": [1, 2, 5, 2, 9, 8, 1]}, Columns(user="u", item="i", time="t"))
    seqs = build_sequences(log, min_item_interactions=2, min_user_interactions=1)
    assert list(seqs.item_ids) == [b"", b"a", b"b", b"c"]
    assert list(seqs.user_ids) == [b"1", b"2", b"3"]
    np.testing.assert_array_equal(seqs.items, [2, 3, 1, 1, 2, 3])  # 1: b; 2: c a a; 3: b c
    np.testing.assert_array_equal(seqs.offsets, [0, 1, 4, 6])
    np.testing.assert_array_equal(seqs.item_counts, [0, 2, 2, 2])
    with pytest.raises(ValueError, match="no timestamp; map one with Columns"):
        build_sequences(Interactions.from_columns({"u": [1], "i": [2]}, Columns("u", "i")))
    with pytest.raises(ValueError, match="No interaction survives"):
        build_sequences(log, min_item_interactions=10)
