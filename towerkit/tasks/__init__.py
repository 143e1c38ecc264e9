"""towerkit.tasks: retrieval and ranking losses."""

from towerkit.tasks.ranking import Ranking
from towerkit.tasks.retrieval import Retrieval

__all__ = ["Ranking", "Retrieval"]
