"""towerkit.serving."""
