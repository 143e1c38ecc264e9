"""towerkit.evaluation: offline top-N metrics and baselines over NumPy arrays."""

from towerkit.evaluation.metrics import (evaluate_topn, hit_rate_at_n, hits_matrix, ndcg_at_n,
                                         recall_at_n)
from towerkit.evaluation.popularity import popularity_topn
from towerkit.evaluation.retrieval import top_n_items

__all__ = ["evaluate_topn", "hit_rate_at_n", "hits_matrix", "ndcg_at_n", "recall_at_n",
           "popularity_topn", "top_n_items"]
