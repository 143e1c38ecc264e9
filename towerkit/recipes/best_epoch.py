"""Early stopping on a validation score that keeps the best epoch (every sequence recipe)."""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

__all__ = ["BestEpoch"]


class BestEpoch(tf.keras.callbacks.Callback):
    """Early stopping on a validation score that keeps the best epoch's weights.

    After each epoch `score()` (higher is better, e.g. recall@50 of the valid users) is
    computed; the weights of the best epoch so far are kept in memory. Training stops once
    `patience` epochs in a row have not improved on the best, and the best weights are restored
    when training ends (also when it ran all its epochs). Ties keep the earlier epoch.

    Args:
      score: callable `() -> float`, evaluated on `self.model` as it stands.
      patience: int >= 1. Epochs without improvement before stopping.

    Attributes:
      best_epoch: int. 1-based epoch whose weights were restored (0 before training).
      best_score: float. Its score.
      scores: list of float. The score after each epoch.
    """

    def __init__(self, score: Callable[[], float], patience: int):
        super().__init__()
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive int, got {patience!r}.")
        self.score = score
        self.patience = patience
        self.best_epoch, self.best_score, self.scores = 0, float("-inf"), []
        self._best_weights = None

    def on_train_begin(self, logs=None):
        self.best_epoch, self.best_score, self.scores = 0, float("-inf"), []
        self._best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = float(self.score())
        self.scores.append(value)
        if logs is not None:
            logs["valid_score"] = value
        if value > self.best_score:
            self.best_epoch, self.best_score = epoch + 1, value
            self._best_weights = self.model.get_weights()
        elif epoch + 1 - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)

    def get_state(self) -> dict:
        """The state a resumed run needs (`towerkit.recipes.run_state.fit_resumable`)."""
        state = {"best_epoch": self.best_epoch, "best_score": self.best_score,
                 "scores": list(self.scores)}
        if self._best_weights is not None:
            state["array:best_weights"] = list(self._best_weights)
        return state

    def set_state(self, state: dict) -> None:
        """Restores `get_state()` (instead of `on_train_begin`'s reset) on resume."""
        self.best_epoch, self.best_score = int(state["best_epoch"]), float(state["best_score"])
        self.scores = [float(s) for s in state["scores"]]
        self._best_weights = state.get("array:best_weights")
