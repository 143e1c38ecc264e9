"""towerkit.evaluation: offline top-N metrics, baselines, exact AUC and gate diagnostics."""

from towerkit.evaluation.distinct_categories import distinct_categories
from towerkit.evaluation.gate_diagnostics import GateStatistics
from towerkit.evaluation.metrics import (evaluate_topn, hit_rate_at_n, hits_matrix, ndcg_at_n,
                                         recall_at_n)
from towerkit.evaluation.popularity import popularity_topn
from towerkit.evaluation.retrieval import top_n_items
from towerkit.evaluation.streaming_auc import StreamingAUC, roc_auc

__all__ = ["GateStatistics", "StreamingAUC", "distinct_categories", "evaluate_topn", "hit_rate_at_n", "hits_matrix",
           "ndcg_at_n", "popularity_topn", "recall_at_n", "roc_auc", "top_n_items"]
