"""Deterministic splits: the TFRS tutorial split is reproduced exactly; others are stable."""

import numpy as np
import pytest

import towerkit  # noqa: F401  (legacy Keras before TF)
import tensorflow as tf

from towerkit.data import random_split, take_rows, temporal_split, tfrs_tutorial_split


def test_tfrs_tutorial_split_matches_tf_data_shuffle():
    # Oracle: exactly what the TFRS tutorials do, on a dataset whose values are not its indices.
    n, train_size, seed = 1_000, 800, 42
    values = np.arange(n) * 7 + 3
    tf.random.set_seed(seed)
    shuffled = tf.data.Dataset.from_tensor_slices(values).shuffle(
        100_000, seed=seed, reshuffle_each_iteration=False)
    expected = np.array(list(shuffled.as_numpy_iterator()))
    train_idx, test_idx = tfrs_tutorial_split(n, train_size, seed=seed)
    np.testing.assert_array_equal(values[train_idx], expected[:train_size])
    np.testing.assert_array_equal(values[test_idx], expected[train_size:])


def test_tfrs_tutorial_split_is_a_deterministic_partition():
    a_train, a_test = tfrs_tutorial_split(500, 400, seed=1)
    b_train, b_test = tfrs_tutorial_split(500, 400, seed=1)
    np.testing.assert_array_equal(a_train, b_train)
    np.testing.assert_array_equal(np.sort(np.concatenate([a_train, a_test])), np.arange(500))
    c_train, _ = tfrs_tutorial_split(500, 400, seed=2)
    assert not np.array_equal(a_train, c_train)


def test_random_split_partition_and_determinism():
    train, test = random_split(1000, test_fraction=0.25, seed=3)
    assert len(test) == 250 and len(train) == 750
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(1000))
    np.testing.assert_array_equal(random_split(1000, 0.25, seed=3)[1], test)


def test_temporal_split_puts_latest_events_in_test():
    timestamps = np.array([50, 10, 40, 20, 30, 30])
    train, test = temporal_split(timestamps, test_fraction=1 / 3)
    # Sorted (stable): 10(i1) 20(i3) 30(i4) 30(i5) 40(i2) 50(i0); last two are the test split.
    np.testing.assert_array_equal(test, [2, 0])
    np.testing.assert_array_equal(train, [1, 3, 4, 5])


def test_take_rows_slices_every_column():
    rows = take_rows({"a": np.arange(5), "b": np.array([b"v", b"w", b"x", b"y", b"z"])}, [4, 0])
    np.testing.assert_array_equal(rows["a"], [4, 0])
    np.testing.assert_array_equal(rows["b"], [b"z", b"v"])


@pytest.mark.parametrize("call, error", [
    (lambda: tfrs_tutorial_split(10, 10), ValueError),
    (lambda: tfrs_tutorial_split(10, 0), ValueError),
    (lambda: random_split(10, test_fraction=1.5), ValueError),
    (lambda: temporal_split(np.zeros((2, 2))), ValueError),
    (lambda: take_rows({"a": np.arange(3)}, np.array([0.5])), TypeError),
])
def test_bad_arguments_raise(call, error):
    with pytest.raises(error):
        call()
