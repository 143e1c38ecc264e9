"""towerkit.cli."""
