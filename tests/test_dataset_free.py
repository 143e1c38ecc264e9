"""Only `towerkit/data/movielens.py` may name tfds MovieLens columns: everything else reads the
dataset-free names (`towerkit.data.recipe_data`), so any interaction log works the same."""

import pathlib
import re

import pytest

from towerkit.data import movielens

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "towerkit"
# The renamed tfds features, plus the one tfds-only column no recipe reads.
TFDS_ONLY = sorted(set(movielens.RECIPE_NAMES) | {"user_occupation_text"})


def test_the_renamed_names_are_dataset_free():
    assert set(movielens.RECIPE_NAMES.values()).isdisjoint(TFDS_ONLY)
    assert all(not name.startswith("movie") for name in movielens.RECIPE_NAMES.values())


@pytest.mark.parametrize("path", sorted(p.relative_to(PACKAGE).as_posix()
                                        for p in PACKAGE.rglob("*.py")
                                        if p.name != "movielens.py"))
def test_no_module_outside_movielens_names_tfds_columns(path):
    text = (PACKAGE / path).read_text()
    found = sorted({name for name in TFDS_ONLY if re.search(rf"\b{name}\b", text)})
    assert not found, f"towerkit/{path} names tfds MovieLens columns {found}"
