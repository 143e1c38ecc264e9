"""towerkit.serving: TensorFlow Serving exports, servability checks and clients.

- `export(index_or_model, model_base_path, version=None, ...)`: versioned, atomic SavedModel with
  warmup records; `clean_stale_exports(base)` removes what crashed exports left.
- `RankerServable(model, ...)`, `RetrieveThenRank(index, ..., ranker, ...)`: a multi-task ranker
  scoring `[batch, n]` candidate ids, or index + ranker + fusion as one SavedModel; both export
  with `export`.
- `check(path)`: can stock `tensorflow/serving` load and run it? (`towerkit check-export`).
- `Client(url, model_name)`: REST or gRPC client returning `Recommendations(ids, scores)`;
  `LocalModel(path)` gives the same result from an export loaded in this process.
"""

from towerkit.serving.check import CheckReport, check
from towerkit.serving.client import Client
from towerkit.serving.export import clean_stale_exports, export, versions
from towerkit.serving.local_model import LocalModel
from towerkit.serving.ranker import RankerServable, RetrieveThenRank
from towerkit.serving.recommendations import (InvalidRequestError, ModelNotFoundError,
                                              Recommendations, ServerUnavailableError,
                                              ServingError, ServingTimeoutError)

__all__ = [
    "CheckReport", "Client", "clean_stale_exports", "InvalidRequestError", "LocalModel",
    "ModelNotFoundError", "RankerServable", "Recommendations", "RetrieveThenRank",
    "ServerUnavailableError", "ServingError", "ServingTimeoutError", "check",
    "export", "versions",
]
