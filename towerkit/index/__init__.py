"""towerkit.index: retrieval indexes (drop-in TFRS `TopK` layers) and their SavedModel export."""

from towerkit.index.annoy import Annoy
from towerkit.index.annoy_forest import AnnoyForest, read_annoy_forest
from towerkit.index.base import Index
from towerkit.index.brute_force import BruteForce
from towerkit.index.saving import METADATA_FILE, save_index, saved_model_ops
from towerkit.index.scann import ScaNN, default_scann_settings
from towerkit.index.unique_top_k import unique_top_k

__all__ = ["Annoy", "AnnoyForest", "BruteForce", "Index", "METADATA_FILE", "ScaNN",
           "default_scann_settings", "read_annoy_forest", "save_index", "saved_model_ops",
           "unique_top_k"]
