"""towerkit.models: towers and `tfrs.Model` subclasses."""

from towerkit.models.mlp import MLP
from towerkit.models.multitask import MultiTaskModel
from towerkit.models.ranking import RankingModel
from towerkit.models.tower import Tower
from towerkit.models.two_tower import TwoTowerModel

__all__ = ["MLP", "MultiTaskModel", "RankingModel", "Tower", "TwoTowerModel"]
