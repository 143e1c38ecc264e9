"""towerkit.data: MovieLens through tfds, deterministic splits, vocabularies."""

from towerkit.data.movielens import MovieLensUnavailableError, feature_names, load, load_columns
from towerkit.data.splits import random_split, take_rows, temporal_split, tfrs_tutorial_split
from towerkit.data.vocabulary import Vocabulary

__all__ = [
    "MovieLensUnavailableError",
    "feature_names",
    "Vocabulary",
    "load",
    "load_columns",
    "random_split",
    "take_rows",
    "temporal_split",
    "tfrs_tutorial_split",
]
