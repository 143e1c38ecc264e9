"""Per-user behaviour sequences from timestamped MovieLens interactions.

Every rating is an implicit interaction. Items and users are filtered by interaction counts,
items are re-indexed `1..num_items` by descending frequency (index 0 is padding), and each
user's interactions are ordered by `(timestamp, numeric item_id)`. Histories are padded,
left-aligned windows of the most recent items (`[i_1, ..., i_h, 0, ..., 0]`), so a mask is
simply `history != 0`.

Example:
  >>> seqs = load_user_sequences("100k-ratings")
  >>> seqs.num_items, seqs.num_users
  (1349, 943)
  >>> examples = make_training_examples(seqs, users=np.arange(10), max_history=20)
  >>> examples["history"].shape[1]
  20
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np

from towerkit.data import movielens

__all__ = [
    "UserSequences",
    "EvalSplit",
    "build_user_sequences",
    "load_user_sequences",
    "history_windows",
    "make_training_examples",
    "make_eval_split",
]

# User columns that become categorical profile features (when the data has them).
_PROFILE_COLUMNS = {
    "user_age": "user_age_bucket",
    "user_gender": "user_gender",
    "user_occupation": "user_occupation",
}


def _id_keys(values: np.ndarray, name: str) -> tuple:
    """Sortable int64 keys of ids and the id of each key.

    Decimal ids (TFDS MovieLens's, or integer columns) sort numerically, as integers; any
    other strings sort as bytes. Returns `(keys [n] int64, id_of: key -> bytes)`.
    """
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values.astype(np.int64), lambda k: str(int(k)).encode()
    as_bytes = values.astype(bytes)
    try:
        keys = np.array([int(v) for v in as_bytes], dtype=np.int64)
        if all(str(k).encode() == v for k, v in zip(keys.tolist(), as_bytes.tolist())):  # no '007'
            return keys, lambda k: str(int(k)).encode()
    except ValueError:
        pass
    if not len(as_bytes):
        raise ValueError(f"{name} is empty.")
    vocab, keys = np.unique(as_bytes, return_inverse=True)
    return keys.astype(np.int64), lambda k: vocab[int(k)]


@dataclasses.dataclass(frozen=True)
class UserSequences:
    """Time-ordered item sequences of every kept user, stored flat (CSR style).

    Attributes:
      user_ids: np.ndarray `[num_users]` bytes. User ids, sorted (decimal ids numerically); the user
        index used everywhere below is the position in this array.
      item_ids: np.ndarray `[num_items + 1]` bytes. The `item_id` of each item index;
        `item_ids[0] == b""` is padding.
      items: np.ndarray `[num_interactions]` int64. Item indices, user after user, each user's
        in `(timestamp, item_id)` order.
      timestamps: np.ndarray `[num_interactions]` int64. Unix seconds, aligned with `items`.
      offsets: np.ndarray `[num_users + 1]` int64. User `u` owns `items[offsets[u]:offsets[u+1]]`.
      item_counts: np.ndarray `[num_items + 1]` int64. Interactions per item over all kept
        users (0 for padding); items are indexed by descending count.
      user_features: dict str -> np.ndarray `[num_users]` int64. Categorical profile features
        (`user_age`, `user_gender`, `user_occupation` when the config has them), encoded
        `1..vocab` with 0 = unknown.
      user_feature_vocabularies: dict str -> np.ndarray. Raw TFDS value of code `i + 1`.
      item_genres: np.ndarray `[num_items + 1, max_genres]` int64 or None. TFDS genre id + 1,
        0-padded (row 0 is all padding).
      item_titles: np.ndarray `[num_items + 1]` bytes or None.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    offsets: np.ndarray
    item_counts: np.ndarray
    user_features: Mapping[str, np.ndarray]
    user_feature_vocabularies: Mapping[str, np.ndarray]
    item_genres: Optional[np.ndarray] = None
    item_titles: Optional[np.ndarray] = None

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        """Number of real items (the embedding table needs `num_items + 1` rows)."""
        return len(self.item_ids) - 1

    @property
    def lengths(self) -> np.ndarray:
        """`[num_users]` int64 sequence lengths."""
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        """Item indices of user index `user`, oldest first."""
        if not 0 <= user < self.num_users:
            raise ValueError(f"user index {user} out of range [0, {self.num_users}).")
        return self.items[self.offsets[user]:self.offsets[user + 1]]

    def item_index(self, item_ids: Sequence) -> np.ndarray:
        """Maps TFDS movie ids (bytes, str or int) to item indices.

        Raises:
          ValueError: an id is not in the catalogue (filtered out or unknown); names the ids.
        """
        lookup = self._item_lookup()
        keys = [m if isinstance(m, bytes) else str(m).encode() for m in np.asarray(item_ids).ravel()]
        missing = [k for k in keys if k not in lookup]
        if missing:
            raise ValueError(
                f"{len(missing)} movie id(s) are not in the catalogue, e.g. {missing[:5]}: they "
                "are unknown or were filtered out (fewer than the minimum interactions). "
                "Fix: use ids from `item_ids[1:]`.")
        return np.array([lookup[k] for k in keys], dtype=np.int64).reshape(np.shape(item_ids))

    def _item_lookup(self) -> dict:
        cached = self.__dict__.get("_lookup")
        if cached is None:
            cached = {m: i for i, m in enumerate(self.item_ids) if i > 0}
            object.__setattr__(self, "_lookup", cached)
        return cached


def build_user_sequences(columns: Mapping[str, np.ndarray], min_item_interactions: int = 5,
                         min_user_interactions: int = 5) -> UserSequences:
    """Builds `UserSequences` from rating columns (see `recipe_data.rating_columns`).

    Items with fewer than `min_item_interactions` ratings are dropped first, then users with
    fewer than `min_user_interactions` remaining ratings (one pass each, in that order).

    Args:
      columns: dict of NumPy columns with at least `user_id`, `item_id` (byte strings)
        and `timestamp`; profile columns, `item_genres` and `item_title` are used if present.
      min_item_interactions: int. Minimum ratings an item needs to be kept.
      min_user_interactions: int. Minimum remaining ratings a user needs to be kept.

    Returns:
      The `UserSequences`.

    Raises:
      ValueError: a required column is missing, columns have different lengths, or nothing
        survives the filters.
    """
    required = ("user_id", "item_id", "timestamp")
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"columns lack {missing}: pass rating columns "
                         "(recipe_data.rating_columns, movielens.recipe_columns of a *-ratings "
                         "config), not a *-movies config.")
    n = len(columns["user_id"])
    if any(len(columns[c]) != n for c in required):
        raise ValueError("columns user_id, item_id and timestamp must have the same length.")
    for name, value in (("min_item_interactions", min_item_interactions),
                        ("min_user_interactions", min_user_interactions)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")

    users, user_name = _id_keys(columns["user_id"], "user_id")
    movies, movie_name = _id_keys(columns["item_id"], "item_id")
    times = np.asarray(columns["timestamp"], dtype=np.int64)
    rows = np.arange(n)

    uniq, counts = np.unique(movies, return_counts=True)
    keep = np.isin(movies, uniq[counts >= min_item_interactions])
    uniq, counts = np.unique(users[keep], return_counts=True)
    keep &= np.isin(users, uniq[counts >= min_user_interactions])
    if not keep.any():
        raise ValueError("No interaction survives the minimum-interaction filters; lower them.")
    users, movies, times, rows = users[keep], movies[keep], times[keep], rows[keep]

    # Items 1..n by descending frequency, ties by numeric movie id.
    movie_uniq, movie_counts = np.unique(movies, return_counts=True)
    by_freq = np.lexsort((movie_uniq, -movie_counts))
    movie_uniq, movie_counts = movie_uniq[by_freq], movie_counts[by_freq]
    item_of_movie = np.empty(len(movie_uniq), dtype=np.int64)
    item_of_movie[by_freq] = np.arange(1, len(movie_uniq) + 1)
    items = item_of_movie[np.searchsorted(np.sort(movie_uniq), movies)]

    order = np.lexsort((movies, times, users))  # by user, then time, then numeric movie id
    users, items, times, rows = users[order], items[order], times[order], rows[order]
    user_uniq, first, user_counts = np.unique(users, return_index=True, return_counts=True)
    offsets = np.concatenate([[0], np.cumsum(user_counts)]).astype(np.int64)

    item_ids = np.empty(len(movie_uniq) + 1, dtype=object)
    item_ids[0] = b""
    item_ids[1:] = [movie_name(m) for m in movie_uniq]
    item_counts = np.concatenate([[0], movie_counts]).astype(np.int64)
    first_row_of_item = np.zeros(len(item_ids), dtype=np.int64)
    first_row_of_item[items[::-1]] = rows[::-1]  # any row of the item will do

    user_features, vocabularies = {}, {}
    for name, column in _PROFILE_COLUMNS.items():
        if column in columns:
            raw = np.asarray(columns[column])[rows[first]]
            vocab, codes = np.unique(raw, return_inverse=True)
            user_features[name] = codes.astype(np.int64) + 1
            vocabularies[name] = vocab

    item_genres = None
    if "item_genres" in columns:
        genres = [np.asarray(columns["item_genres"][r], dtype=np.int64) + 1
                  for r in first_row_of_item[1:]]
        width = max(len(g) for g in genres)
        item_genres = np.zeros((len(item_ids), width), dtype=np.int64)
        for i, g in enumerate(genres, start=1):
            item_genres[i, :len(g)] = g
    item_titles = None
    if "item_title" in columns:
        item_titles = np.asarray(columns["item_title"], dtype=object)[first_row_of_item]
        item_titles[0] = b""

    return UserSequences(
        user_ids=np.array([user_name(u) for u in user_uniq], dtype=object),
        item_ids=item_ids, items=items, timestamps=times, offsets=offsets,
        item_counts=item_counts, user_features=user_features,
        user_feature_vocabularies=vocabularies, item_genres=item_genres,
        item_titles=item_titles)


def load_user_sequences(config: str = "100k-ratings", data_dir: Optional[str] = None,
                        min_item_interactions: int = 5,
                        min_user_interactions: int = 5) -> UserSequences:
    """`build_user_sequences` over a TFDS MovieLens ratings config (loaded via tfds)."""
    return build_user_sequences(movielens.recipe_columns(config, data_dir=data_dir),
                                min_item_interactions, min_user_interactions)


def history_windows(sequences: UserSequences, users: np.ndarray, ends: np.ndarray,
                    max_history: int) -> tuple[np.ndarray, np.ndarray]:
    """Padded windows of the (up to) `max_history` items strictly before position `ends`.

    Args:
      sequences: UserSequences.
      users: np.ndarray `[batch]` int. User indices.
      ends: np.ndarray `[batch]` int. Exclusive end position inside each user's sequence.
      max_history: int. Window length `L`.

    Returns:
      `(history [batch, L] int64, history_length [batch] int32)`; row `b` is
      `[s[e-h], ..., s[e-1], 0, ..., 0]` with `h = min(e, L)`, oldest first.
    """
    if not isinstance(max_history, (int, np.integer)) or max_history < 1:
        raise ValueError(f"max_history must be a positive int, got {max_history!r}.")
    users = np.asarray(users, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    lengths = sequences.lengths[users]
    if np.any(ends < 0) or np.any(ends > lengths):
        raise ValueError("ends must lie in [0, sequence length] for every user.")
    h = np.minimum(ends, max_history)
    cols = np.arange(max_history)
    src = (sequences.offsets[users] + ends - h)[:, None] + cols[None, :]
    valid = cols[None, :] < h[:, None]
    history = np.where(valid, sequences.items[np.where(valid, src, 0)], 0)
    return history.astype(np.int64), h.astype(np.int32)


def make_training_examples(sequences: UserSequences, users: np.ndarray, max_history: int = 20,
                           min_position: int = 1) -> dict[str, np.ndarray]:
    """Training examples "history before position k -> item k" for every user and `k`.

    Only the past enters an example: its history is the `max_history` items at positions
    `< k` of the same user, never position `k` or later.

    Args:
      sequences: UserSequences.
      users: np.ndarray `[n]` int. User indices to draw examples from (the train users).
      max_history: int. History window length.
      min_position: int. First target position (1: every item but the first is a target).

    Returns:
      dict of aligned arrays, `num_examples` rows:
        `user` int64 (user index), `position` int64 (k), `target` int64 (item index),
        `history` int64 `[num_examples, max_history]`, `history_length` int32,
        `example_age` float32: `(t_max - t_target) / (t_max - t_min)` over these users'
        interactions, in `[0, 1]` (Covington et al.'s example age), `timestamp` int64 (the
        target's Unix seconds, from which the age is computed), and one int64 column per
        user profile feature.
    """
    if min_position < 1:
        raise ValueError(f"min_position must be >= 1 (an example needs a history), got {min_position}.")
    users = np.asarray(users, dtype=np.int64)
    counts = np.maximum(sequences.lengths[users] - min_position, 0)
    example_user = np.repeat(users, counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(counts.sum()) - np.repeat(starts, counts) + min_position
    history, history_length = history_windows(sequences, example_user, position, max_history)
    flat = sequences.offsets[example_user] + position
    times = sequences.timestamps[flat]
    if len(times):
        span = max(int(times.max() - times.min()), 1)
        age = ((times.max() - times) / span).astype(np.float32)
    else:
        age = np.zeros(0, np.float32)
    examples = {"user": example_user, "position": position.astype(np.int64),
                "target": sequences.items[flat], "history": history,
                "history_length": history_length, "example_age": age,
                "timestamp": times.astype(np.int64)}
    for name, values in sequences.user_features.items():
        examples[name] = values[example_user]
    return examples


@dataclasses.dataclass(frozen=True)
class EvalSplit:
    """Query inputs and ground truth of held-out users.

    Attributes:
      users: np.ndarray `[num_users]` int64. User indices.
      user_ids: np.ndarray `[num_users]` bytes. TFDS user ids.
      history: np.ndarray `[num_users, max_history]` int64. The most recent history items.
      history_length: np.ndarray `[num_users]` int32.
      ground_truth: list of `num_users` int64 arrays: the items after the history, in order.
      features: dict str -> np.ndarray. User profile features, `example_age` (zeros),
        `query_timestamp` (int64 Unix seconds of the last history item: the time of the
        query), and `history`/`history_length` again: the query model's input dict.
    """

    users: np.ndarray
    user_ids: np.ndarray
    history: np.ndarray
    history_length: np.ndarray
    ground_truth: list
    features: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.users)


def make_eval_split(sequences: UserSequences, users: np.ndarray, max_history: int = 20,
                    history_fraction: float = 0.8) -> EvalSplit:
    """Splits each user's sequence into a history and the ground truth that follows it.

    The first `max(1, floor(history_fraction * length))` items are the history (its last
    `max_history` are fed to the model); the rest is the ground truth.

    Raises:
      ValueError: `history_fraction` outside `(0, 1)`, or a user with fewer than 2 items
        (nothing would be left to predict).
    """
    if not 0.0 < history_fraction < 1.0:
        raise ValueError(f"history_fraction must be in (0, 1), got {history_fraction!r}.")
    users = np.asarray(users, dtype=np.int64)
    lengths = sequences.lengths[users]
    if np.any(lengths < 2):
        raise ValueError("every evaluation user needs at least 2 interactions; raise "
                         "min_user_interactions.")
    cut = np.maximum(1, np.floor(history_fraction * lengths + 1e-9).astype(np.int64))
    history, history_length = history_windows(sequences, users, cut, max_history)
    truth = [sequences.items[sequences.offsets[u] + c:sequences.offsets[u + 1]]
             for u, c in zip(users, cut)]
    last = sequences.timestamps[sequences.offsets[users] + cut - 1]
    features = {"history": history, "history_length": history_length,
                "example_age": np.zeros(len(users), np.float32),
                "query_timestamp": last.astype(np.int64)}
    for name, values in sequences.user_features.items():
        features[name] = values[users]
    return EvalSplit(users=users, user_ids=sequences.user_ids[users], history=history,
                     history_length=history_length, ground_truth=truth, features=features)
