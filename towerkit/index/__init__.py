"""towerkit.index."""
