"""towerkit.features."""
