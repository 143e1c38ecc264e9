"""towerkit.metrics: Keras metrics over a candidate corpus (drop-ins for TFRS's)."""

from towerkit.metrics.factorized_top_k import FactorizedTopK

__all__ = ["FactorizedTopK"]
