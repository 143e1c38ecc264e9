"""towerkit.data."""
