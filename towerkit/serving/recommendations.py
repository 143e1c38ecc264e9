"""The typed result every towerkit serving path returns, and the errors it raises."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Recommendations:
    """Top-k candidates per query, identical whether from REST, gRPC or a local export.

    Attributes:
      ids: np.ndarray [batch, k]. Candidate ids: `str` for string ids, int64 for integer ids.
      scores: np.ndarray [batch, k] float32. Scores, best first.
      known_query: Optional np.ndarray [batch] bool, when the export reports it: False marks a
        query the model does not know (e.g. an unknown or empty user id), whose results are
        generic fallbacks rather than personal recommendations.
    """

    ids: np.ndarray
    scores: np.ndarray
    known_query: "np.ndarray | None" = None

    @classmethod
    def from_outputs(cls, outputs: dict) -> "Recommendations":
        """Builds the result from signature outputs `{"ids": ..., "scores": ...}`.

        Raises:
          ValueError: an output is missing, or ids and scores disagree in shape.
        """
        missing = {"ids", "scores"} - set(outputs)
        if missing:
            raise ValueError(f"the model returned outputs {sorted(outputs)}, without "
                             f"{sorted(missing)}: it is not a towerkit retrieval export (see "
                             "towerkit.serving.export).")
        ids = np.asarray(outputs["ids"])
        if ids.dtype.kind in "SO":
            ids = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in ids.ravel()],
                           dtype=str).reshape(ids.shape)
        elif ids.dtype.kind in "iu":
            ids = ids.astype(np.int64)
        scores = np.asarray(outputs["scores"], dtype=np.float32)
        if ids.shape != scores.shape:
            raise ValueError(f"ids {ids.shape} and scores {scores.shape} differ in shape.")
        known = outputs.get("known_query")
        known = None if known is None else np.asarray(known, dtype=bool).reshape(-1)
        return cls(ids=ids, scores=scores, known_query=known)

    def rows(self, index: int = 0) -> list:
        """Returns `[(rank, id, score), ...]` for one query, rank starting at 1."""
        return [(rank + 1, self.ids[index, rank], float(self.scores[index, rank]))
                for rank in range(self.ids.shape[1])]


class ServingError(RuntimeError):
    """A request to a model failed."""


class InvalidRequestError(ServingError, ValueError):
    """The model rejected the request (INVALID_ARGUMENT / HTTP 400): wrong input names, dtypes,
    shapes, or a k above the export's max_k."""


class ModelNotFoundError(ServingError, LookupError):
    """The server does not serve that model name or version (NOT_FOUND / HTTP 404)."""


class ServerUnavailableError(ServingError):
    """The server stayed unavailable (UNAVAILABLE / HTTP 503, connection refused) after retries."""


class ServingTimeoutError(ServingError, TimeoutError):
    """The server did not answer within the timeout."""
