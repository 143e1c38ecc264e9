"""towerkit.data: interaction logs from any source (CSV, Parquet, TFRecord, DataFrame,
tf.data, MovieLens through tfds), splits, vocabularies, the sequential protocol, training
shards, and the multi-task exposures."""

from towerkit.data import recipe_data, sources
from towerkit.data.columns import Columns
from towerkit.data.item_clusters import ItemClusters
from towerkit.data.exposures import MultiTaskExposures, build_exposures
from towerkit.data.movielens import (MovieLensUnavailableError, feature_names, load, load_columns,
                                     recipe_columns)
from towerkit.data.feature_table import FeatureTable
from towerkit.data.interaction_sequences import build_sequences, sequential_protocol
from towerkit.data.interaction_splits import split_by_time, split_random, split_users
from towerkit.data.interactions import Interactions
from towerkit.data.shards import load_shards, read_shards, write_shards
from towerkit.data.splits import random_split, take_rows, temporal_split, tfrs_tutorial_split
from towerkit.data.vocabulary import Vocabulary

__all__ = [
    "Columns",
    "FeatureTable",
    "Interactions",
    "build_sequences",
    "load_shards",
    "read_shards",
    "sequential_protocol",
    "sources",
    "split_by_time",
    "split_random",
    "split_users",
    "write_shards",
    "ItemClusters",
    "MovieLensUnavailableError",
    "feature_names",
    "MultiTaskExposures",
    "Vocabulary",
    "build_exposures",
    "load",
    "load_columns",
    "recipe_columns",
    "recipe_data",
    "random_split",
    "take_rows",
    "temporal_split",
    "tfrs_tutorial_split",
]
