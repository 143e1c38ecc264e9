"""towerkit.towers."""
