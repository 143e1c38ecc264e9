"""Tests for towerkit.data.sequences on small hand-made interaction logs."""

import numpy as np
import pytest

import towerkit  # noqa: F401  (legacy Keras switch)
from towerkit.data import sequences as seqlib


def _columns(rows):
    """rows: (user, movie, timestamp) tuples -> TFDS-like columns."""
    users, movies, times = zip(*rows)
    return {"user_id": np.array([str(u).encode() for u in users], dtype=object),
            "item_id": np.array([str(m).encode() for m in movies], dtype=object),
            "timestamp": np.array(times, dtype=np.int64)}


# Movie 10: 3 ratings, movie 2: 3 ratings, movie 7: 2, movies 99 and 98: 1 (dropped with min 2).
ROWS = [(5, 10, 300), (5, 2, 100), (5, 7, 100), (5, 99, 50),
        (12, 10, 10), (12, 2, 20),
        (3, 10, 7), (3, 2, 9), (3, 7, 8),
        (40, 98, 1)]  # user 40 only has a dropped movie


def test_filtering_reindexing_and_ordering():
    s = seqlib.build_user_sequences(_columns(ROWS), min_item_interactions=2,
                                    min_user_interactions=2)
    # Users sorted numerically (3 < 5 < 12); user 40 loses its only item and is dropped.
    assert list(s.user_ids) == [b"3", b"5", b"12"]
    # Frequencies: 10 -> 3, 2 -> 3, 7 -> 2. Ties by numeric id: 2 before 10.
    assert list(s.item_ids) == [b"", b"2", b"10", b"7"]
    assert list(s.item_counts) == [0, 3, 3, 2]
    # User 3: t=7 movie 10, t=8 movie 7, t=9 movie 2 -> items 2, 3, 1.
    np.testing.assert_array_equal(s.sequence(0), [2, 3, 1])
    # User 5: t=100 ties between movies 2 and 7 -> numeric order 2 then 7; then 10 at t=300.
    np.testing.assert_array_equal(s.sequence(1), [1, 3, 2])
    np.testing.assert_array_equal(s.sequence(2), [2, 1])
    np.testing.assert_array_equal(s.item_index([b"7", "10", 2]), [3, 2, 1])


def test_history_windows_are_left_aligned_and_bounded():
    s = seqlib.build_user_sequences(_columns(ROWS), 2, 2)
    history, length = seqlib.history_windows(s, np.array([1, 1, 1, 0]), np.array([0, 1, 3, 2]),
                                             max_history=2)
    np.testing.assert_array_equal(history, [[0, 0], [1, 0], [3, 2], [2, 3]])
    np.testing.assert_array_equal(length, [0, 1, 2, 2])


def test_training_examples_never_contain_the_future():
    rng = np.random.default_rng(0)
    rows = [(u, int(m), int(t)) for u in range(1, 30)
            for m, t in zip(rng.choice(50, size=rng.integers(5, 40), replace=False),
                            rng.integers(0, 1000, size=40))]
    s = seqlib.build_user_sequences(_columns(rows), 1, 1)
    ex = seqlib.make_training_examples(s, np.arange(s.num_users), max_history=5)
    assert len(ex["target"]) == int((s.lengths - 1).sum())
    for i in range(len(ex["target"])):
        seq = s.sequence(ex["user"][i])
        k = ex["position"][i]
        assert ex["target"][i] == seq[k]
        h = ex["history_length"][i]
        # Exactly the min(k, 5) items before k, oldest first, then padding.
        np.testing.assert_array_equal(ex["history"][i, :h], seq[max(0, k - 5):k])
        assert not ex["history"][i, h:].any()
    times = s.timestamps
    # Example age is 0 for the newest target and 1 for the oldest.
    assert ex["example_age"].min() == 0.0 and ex["example_age"].max() == 1.0
    assert times.dtype == np.int64


def test_eval_split_history_and_ground_truth():
    s = seqlib.build_user_sequences(_columns(ROWS), 2, 2)
    split = seqlib.make_eval_split(s, np.array([0, 2]), max_history=20, history_fraction=0.8)
    # User 3 has 3 items: floor(2.4) = 2 history items, 1 ground truth.
    np.testing.assert_array_equal(split.history[0, :3], [2, 3, 0])
    np.testing.assert_array_equal(split.ground_truth[0], [1])
    # User 12 has 2 items: floor(1.6) = 1.
    np.testing.assert_array_equal(split.ground_truth[1], [1])
    assert list(split.user_ids) == [b"3", b"12"]
    assert not split.features["example_age"].any()


@pytest.mark.parametrize("bad, match", [
    ({"user_id": np.array([b"1"], dtype=object)}, "lack"),
    ({"user_id": np.array([b"1"], dtype=object), "item_id": np.array([b"1", b"2"], dtype=object),
      "timestamp": np.array([1, 2])}, "same length"),
])
def test_bad_columns(bad, match):
    with pytest.raises(ValueError, match=match):
        seqlib.build_user_sequences(bad)


def test_decimal_ids_sort_numerically_other_ids_as_strings():
    # Users 12 < 100 numerically (b"100" < b"12" as strings); the same log with string ids.
    rows = [(12, 7, 1), (12, 30, 2), (100, 7, 3), (100, 30, 4)]
    numeric = seqlib.build_user_sequences(_columns(rows), 1, 1)
    assert list(numeric.user_ids) == [b"12", b"100"]
    # Equal counts: items tie-break by id, numerically (7 before 30).
    assert list(numeric.item_ids) == [b"", b"7", b"30"]
    named = seqlib.build_user_sequences(_columns([(f"u{u}", f"i{m}", t) for u, m, t in rows]),
                                        1, 1)
    assert list(named.user_ids) == [b"u100", b"u12"]
    assert list(named.item_ids) == [b"", b"i30", b"i7"]
    # Leading zeros are not numbers: b"007" stays itself (and sorts as a string).
    padded = seqlib.build_user_sequences(_columns([("007", 1, 1), ("7", 1, 2)]), 1, 1)
    assert list(padded.user_ids) == [b"007", b"7"]
    # Each user's time order is the same however the ids are spelled.
    assert list(numeric.item_ids[numeric.sequence(0)]) == [b"7", b"30"]
    assert list(named.item_ids[named.sequence(1)]) == [b"i7", b"i30"]


def test_bad_arguments():
    s = seqlib.build_user_sequences(_columns(ROWS), 2, 2)
    with pytest.raises(ValueError, match="not in the catalogue"):
        s.item_index([b"99"])
    with pytest.raises(ValueError, match="max_history"):
        seqlib.history_windows(s, np.array([0]), np.array([1]), max_history=0)
    with pytest.raises(ValueError, match="history_fraction"):
        seqlib.make_eval_split(s, np.array([0]), history_fraction=1.0)
    with pytest.raises(ValueError, match="survives"):
        seqlib.build_user_sequences(_columns(ROWS), min_item_interactions=100)
