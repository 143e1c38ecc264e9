"""towerkit.index: retrieval indexes (drop-in TFRS `TopK` layers) and their SavedModel export."""

from towerkit.index.annoy import Annoy
from towerkit.index.annoy_forest import AnnoyForest, read_annoy_forest
from towerkit.index.base import Index
from towerkit.index.brute_force import BruteForce
from towerkit.index.cluster_quotas import cluster_quotas, cluster_quotas_tf
from towerkit.index.clustered_index import ClusteredIndex
from towerkit.index.controllable_aggregation import (ControllableAggregation,
                                                     per_interest_candidates)
from towerkit.index.portable import PortableIndex, default_portable_settings
from towerkit.index.recall import exact_reference, recall_at_k, tune_for_recall
from towerkit.index.saving import METADATA_FILE, save_index, saved_model_ops
from towerkit.index.scann import ScaNN, default_scann_settings
from towerkit.index.unique_top_k import unique_top_k

__all__ = [
    "Annoy",
    "AnnoyForest",
    "BruteForce",
    "ClusteredIndex",
    "ControllableAggregation",
    "Index",
    "METADATA_FILE",
    "PortableIndex",
    "ScaNN",
    "cluster_quotas",
    "cluster_quotas_tf",
    "default_portable_settings",
    "default_scann_settings",
    "exact_reference",
    "per_interest_candidates",
    "read_annoy_forest",
    "recall_at_k",
    "save_index",
    "saved_model_ops",
    "tune_for_recall",
    "unique_top_k",
]
