"""towerkit.tasks: retrieval and ranking losses."""

from towerkit.tasks.adaptive_mimic import AdaptiveMimicLoss
from towerkit.tasks.category_alignment import CategoryAlignmentLoss
from towerkit.tasks.global_batch import GlobalBatchLoss, global_mean
from towerkit.tasks.label_constraint import label_constraint
from towerkit.tasks.ranking import Ranking
from towerkit.tasks.retrieval import Retrieval
from towerkit.tasks.sampled_softmax import SampledSoftmax

__all__ = ["AdaptiveMimicLoss", "CategoryAlignmentLoss", "GlobalBatchLoss", "Ranking", "Retrieval",
           "SampledSoftmax", "global_mean", "label_constraint"]
