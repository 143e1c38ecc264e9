"""towerkit.tasks: retrieval and ranking losses."""

from towerkit.tasks.label_constraint import label_constraint
from towerkit.tasks.ranking import Ranking
from towerkit.tasks.retrieval import Retrieval
from towerkit.tasks.sampled_softmax import SampledSoftmax

__all__ = ["Ranking", "Retrieval", "SampledSoftmax", "label_constraint"]
