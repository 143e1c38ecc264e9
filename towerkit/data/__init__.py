"""towerkit.data: MovieLens through tfds, deterministic splits, vocabularies, and the
multi-task exposures."""

from towerkit.data.item_clusters import ItemClusters
from towerkit.data.exposures import MultiTaskExposures, build_exposures
from towerkit.data.movielens import MovieLensUnavailableError, feature_names, load, load_columns
from towerkit.data.splits import random_split, take_rows, temporal_split, tfrs_tutorial_split
from towerkit.data.vocabulary import Vocabulary

__all__ = [
    "ItemClusters",
    "MovieLensUnavailableError",
    "feature_names",
    "MultiTaskExposures",
    "Vocabulary",
    "build_exposures",
    "load",
    "load_columns",
    "random_split",
    "take_rows",
    "temporal_split",
    "tfrs_tutorial_split",
]
