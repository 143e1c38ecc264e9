"""The MovieLens multi-task ranking setting: exposures with click, like and ctcvr labels.

MovieLens records only what users rated. The multi-task setting (as in the ESMM and AITM papers'
impression -> click -> conversion funnel) needs exposures that were *not* acted on, so it adds
sampled unrated (user, movie) pairs:

- **exposures** = every rating plus `negatives_per_rating` sampled unrated pairs per rating. Each
  sampled pair keeps the user (and the user's profile and the timestamp) of the rating it is drawn
  for (a rating drawn uniformly), and takes a movie drawn in proportion to its rating count (an
  exposure policy that shows popular movies more, so that popularity alone does not separate
  clicks from non-clicks). A pair the user rated, or one already sampled, is never sampled; a
  rejected draw is redrawn (rating and movie) until the quota is met.
- **click** = 1 for a rated pair, 0 for a sampled one (over all exposures).
- **like** = rating >= 4; defined on clicks only (0 on non-clicked exposures, where it is not
  observed: use `click` as its sample weight).
- **ctcvr** = click and like, over all exposures.
- **rating** = the 1-5 rating on clicks (0 elsewhere; weight it by `click`).

The split is a uniformly random permutation of the exposures with NumPy's PCG64 generator seeded
by `seed`: the first `train_fraction` are `train`, the next `valid_fraction` are `valid`, the rest
`test`. The same arguments always give the same exposures and split, independent of any model seed.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from towerkit.data.movielens import recipe_columns

__all__ = ["MultiTaskExposures", "build_exposures", "LABELS", "SPLITS"]

LABELS = ("click", "like", "ctcvr", "rating")
SPLITS = ("train", "valid", "test")
_USER_COLUMNS = ("user_id", "user_age", "user_gender", "user_occupation",
                 "user_zip_code")


@dataclasses.dataclass(frozen=True)
class MultiTaskExposures:
    """Exposure columns, their split, and the movie catalogue.

    Attributes:
      columns: dict[str, np.ndarray], one row per exposure: `user_id`, `item_id` (bytes),
        `timestamp` (int64), `user_age` (float32), `user_gender` (bool),
        `user_occupation` (int64), `user_zip_code` (bytes), and the float32 labels
        `click`, `like`, `ctcvr`, `rating`.
      splits: dict[str, np.ndarray]. `train`, `valid`, `test` row indices (disjoint, sorted).
      item_ids: np.ndarray `[m]` bytes. Every movie of the dataset, sorted.
      item_genres: list of int64 arrays aligned with `item_ids`: each movie's genre codes.
    """

    columns: dict
    splits: dict
    item_ids: np.ndarray
    item_genres: list

    def split(self, name: str) -> dict:
        """Returns the columns of one split.

        Raises:
          ValueError: `name` is not one of `train`, `valid`, `test`.
        """
        if name not in self.splits:
            raise ValueError(f"Unknown split {name!r}; the multi-task setting has {list(SPLITS)}.")
        rows = self.splits[name]
        return {key: value[rows] for key, value in self.columns.items()}


def _check_fraction(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}.")
    return float(value)


def build_exposures(config: str = "100k-ratings", negatives_per_rating: float = 1.0,
                    seed: int = 0, train_fraction: float = 0.8, valid_fraction: float = 0.1,
                    data_dir: Optional[str] = None, columns: Optional[dict] = None
                    ) -> MultiTaskExposures:
    """Builds the multi-task exposures of a MovieLens ratings config.

    Args:
      config: str. A TFDS MovieLens ratings config (`100k-ratings`, `1m-ratings`, ...).
      negatives_per_rating: float. Sampled unrated exposures per rating (> 0); 1.0 gives as many
        non-clicks as clicks.
      seed: int. Seeds the sampling and the split.
      train_fraction: float. Share of exposures in `train`.
      valid_fraction: float. Share in `valid` (early stopping, model selection); the rest is
        `test`.
      data_dir: str or None. TFDS data dir (see `movielens.load`).
      columns: dict or None. Rating columns to use instead of loading `config` (tests).

    Returns:
      A `MultiTaskExposures`.

    Raises:
      ValueError: a ratio or fraction is out of range, or there are too few unrated pairs to
        sample from.
    """
    if not isinstance(negatives_per_rating, (int, float)) or negatives_per_rating <= 0:
        raise ValueError(f"negatives_per_rating must be a positive number, got "
                         f"{negatives_per_rating!r}.")
    train_fraction = _check_fraction("train_fraction", train_fraction)
    valid_fraction = _check_fraction("valid_fraction", valid_fraction)
    if train_fraction + valid_fraction >= 1.0:
        raise ValueError(f"train_fraction + valid_fraction must be < 1 to leave a test split, got "
                         f"{train_fraction} + {valid_fraction}.")
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}.")
    ratings = columns if columns is not None else recipe_columns(config, data_dir=data_dir)
    rng = np.random.default_rng(int(seed))

    user_ids = np.asarray(ratings["user_id"]).astype(bytes)
    item_ids = np.asarray(ratings["item_id"]).astype(bytes)
    users, user_rows = np.unique(user_ids, return_inverse=True)
    movies, movie_first, movie_rows, counts = np.unique(item_ids, return_index=True,
                                                        return_inverse=True, return_counts=True)
    num_ratings, num_movies = len(user_ids), len(movies)
    num_negatives = int(round(num_ratings * float(negatives_per_rating)))
    rated = set((user_rows.astype(np.int64) * num_movies + movie_rows).tolist())
    if num_negatives > len(users) * num_movies - len(rated):
        raise ValueError(f"negatives_per_rating={negatives_per_rating} asks for {num_negatives} "
                         "unrated pairs, more than exist; lower it.")

    # Each sampled exposure copies a rating's user, profile and timestamp (the rating it is
    # drawn for) and takes a movie drawn by popularity, rejecting rated or repeated pairs.
    source = rng.integers(0, num_ratings, size=num_negatives)
    popularity = counts / counts.sum()
    chosen = np.full(num_negatives, -1, dtype=np.int64)
    taken = set()
    pending = np.arange(num_negatives)
    while len(pending):
        draws = rng.choice(num_movies, size=len(pending), p=popularity)
        codes = user_rows[source[pending]].astype(np.int64) * num_movies + draws
        still = []
        for position, code, movie in zip(pending, codes.tolist(), draws):
            if code in rated or code in taken:
                still.append(position)
            else:
                taken.add(code)
                chosen[position] = movie
        pending = np.asarray(still, dtype=np.int64)
        # A rejected draw also redraws its source rating, so that a user whose unrated movies
        # are used up cannot stall the loop.
        source[pending] = rng.integers(0, num_ratings, size=len(pending))

    rating = np.asarray(ratings["rating"], dtype=np.float32)
    out = {name: np.concatenate([np.asarray(ratings[name])[:num_ratings],
                                 np.asarray(ratings[name])[source]])
           for name in _USER_COLUMNS + ("timestamp",)}
    out["user_id"] = np.concatenate([user_ids, user_ids[source]])
    out["user_zip_code"] = out["user_zip_code"].astype(bytes)
    out["item_id"] = np.concatenate([item_ids, movies[chosen]])
    click = np.concatenate([np.ones(num_ratings), np.zeros(num_negatives)]).astype(np.float32)
    out["click"] = click
    out["rating"] = np.concatenate([rating, np.zeros(num_negatives, np.float32)])
    out["like"] = (out["rating"] >= 4.0).astype(np.float32)
    out["ctcvr"] = click * out["like"]

    total = num_ratings + num_negatives
    permutation = rng.permutation(total)
    num_train = int(round(total * train_fraction))
    num_valid = int(round(total * valid_fraction))
    splits = {"train": np.sort(permutation[:num_train]),
              "valid": np.sort(permutation[num_train:num_train + num_valid]),
              "test": np.sort(permutation[num_train + num_valid:])}
    genres = [np.asarray(g, dtype=np.int64) for g in np.asarray(ratings["item_genres"],
                                                                dtype=object)[movie_first]]
    return MultiTaskExposures(columns=out, splits=splits, item_ids=movies, item_genres=genres)
