"""towerkit.models: towers and `tfrs.Model` subclasses."""

from towerkit.models.augmented_tower import AugmentedTower
from towerkit.models.dual_augmented_two_tower import DualAugmentedTwoTowerModel
from towerkit.models.mlp import MLP
from towerkit.models.multitask import MultiTaskModel
from towerkit.models.ranking import RankingModel
from towerkit.models.tower import Tower
from towerkit.models.two_tower import TwoTowerModel

__all__ = ["AugmentedTower", "DualAugmentedTwoTowerModel", "MLP", "MultiTaskModel", "RankingModel",
           "Tower", "TwoTowerModel"]
