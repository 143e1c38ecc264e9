"""distinct_categories: list diversity as the number of different categories in a top-N."""

import numpy as np
import pytest

from towerkit.evaluation import distinct_categories


def test_single_and_multi_category_counts_by_hand():
    single = np.array([-1, 0, 0, 3, 5])           # row 0: padding
    # user 0: items 1, 2, 3 -> categories {0, 3} = 2; user 1: items 3, 4, 4 -> {3, 5} = 2;
    # user 2: items 1, 2, 2 -> {0} = 1; mean 5 / 3.
    topn = np.array([[1, 2, 3], [3, 4, 4], [1, 2, 2]])
    assert distinct_categories(topn, single) == pytest.approx(5 / 3)
    multi = np.array([[0, 0], [1, 2], [2, 0], [3, 4], [1, 0]])   # 0 = padding
    # user 0: {1, 2} | {2} | {3, 4} = 4; user 1: {3, 4} | {1} = 3; user 2: {1, 2} | {2} = 2.
    assert distinct_categories(topn, multi) == pytest.approx(3.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[users, N\]"):
        distinct_categories(np.array([1, 2]), np.array([-1, 0, 1]))
    with pytest.raises(ValueError, match="outside"):
        distinct_categories(np.array([[1, 7]]), np.array([-1, 0, 1]))
