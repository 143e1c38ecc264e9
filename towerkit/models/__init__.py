"""towerkit.models."""
