"""towerkit.index: retrieval indexes (drop-in TFRS `TopK` layers) and their SavedModel export."""

from towerkit.index.base import Index
from towerkit.index.brute_force import BruteForce
from towerkit.index.saving import save_index
from towerkit.index.unique_top_k import unique_top_k

__all__ = ["Index", "BruteForce", "save_index", "unique_top_k"]
