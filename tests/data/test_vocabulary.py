"""Vocabularies: deterministic order, counts, frequencies, save/load, bad input."""

import numpy as np
import pytest

import towerkit  # noqa: F401

from towerkit.data import Vocabulary


def test_order_is_count_desc_then_value():
    vocab = Vocabulary.from_values(np.array([b"b", b"a", b"c", b"b", b"c", b"d"], dtype=object))
    assert vocab.as_list() == ["b", "c", "a", "d"]  # b:2, c:2 (b < c), a:1, d:1 (a < d)
    np.testing.assert_array_equal(vocab.counts, [2, 2, 1, 1])
    np.testing.assert_allclose(vocab.frequencies(), [2 / 6, 2 / 6, 1 / 6, 1 / 6])


def test_integer_column_and_min_count():
    vocab = Vocabulary.from_values(np.array([3, 3, 1, 2, 2, 2]), min_count=2)
    assert vocab.as_list() == [2, 3]
    assert not vocab.is_string


def test_save_load_round_trip(tmp_path):
    vocab = Vocabulary.from_values(np.array(["é", "x", "x"]))
    vocab.save(tmp_path / "v.json")
    loaded = Vocabulary.load(tmp_path / "v.json")
    np.testing.assert_array_equal(loaded.values, vocab.values)
    np.testing.assert_array_equal(loaded.counts, vocab.counts)


def test_corrupt_file_raises_value_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a saved towerkit Vocabulary"):
        Vocabulary.load(path)


@pytest.mark.parametrize("column, error", [
    (np.array([]), ValueError),
    (np.array([0.5, 1.5]), TypeError),
    (np.array([[1, 2]]), ValueError),
])
def test_bad_columns(column, error):
    with pytest.raises(error):
        Vocabulary.from_values(column)
