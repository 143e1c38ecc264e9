"""towerkit.tasks."""
