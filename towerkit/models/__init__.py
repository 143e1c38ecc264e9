"""towerkit.models: towers and `tfrs.Model` subclasses (retrieval, ranking, multi-task ranking)."""

from towerkit.models.aitm import AITM
from towerkit.models.augmented_tower import AugmentedTower
from towerkit.models.cgc import CGC
from towerkit.models.dual_augmented_two_tower import DualAugmentedTwoTowerModel
from towerkit.models.esmm import ESMM
from towerkit.models.mlp import MLP
from towerkit.models.mmoe import MMoE
from towerkit.models.model import Model
from towerkit.models.multi_task_ranker import TASK_LABELS, TASKS, MultiTaskRanker
from towerkit.models.multi_task_ebr import MultiTaskEBR
from towerkit.models.multitask import MultiTaskModel
from towerkit.models.ple import PLE
from towerkit.models.ranking import RankingModel
from towerkit.models.sequential_retrieval import (MultiInterestRetrievalModel,
                                                 SequentialRetrievalModel, ServingQueryModel)
from towerkit.models.shared_bottom import SharedBottom
from towerkit.models.tower import Tower
from towerkit.models.two_tower import TwoTowerModel

__all__ = ["AITM", "AugmentedTower", "CGC", "DualAugmentedTwoTowerModel", "ESMM", "MLP", "MMoE",
           "Model", "MultiInterestRetrievalModel", "MultiTaskEBR", "MultiTaskModel",
           "MultiTaskRanker", "PLE", "RankingModel", "SequentialRetrievalModel",
           "ServingQueryModel", "SharedBottom", "TASKS", "TASK_LABELS", "Tower", "TwoTowerModel"]
