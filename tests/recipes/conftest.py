"""Shared fixtures of the recipe tests."""

import numpy as np
import pandas as pd
import pytest

from towerkit.data import load_columns


def _renamed(ids: np.ndarray, digit: bytes) -> np.ndarray:
    """Integer ids `digit + id`: a renaming that keeps both the numeric and the string order
    of the TFDS ids (so every vocabulary lists the same items in the same order)."""
    return np.array([int(digit + i) for i in ids], dtype=np.int64)


@pytest.fixture(scope="session")
def own_files(tmp_path_factory):
    """MovieLens 100K as a user would export it: events.csv (uid, sku, ts, stars, in TFDS row
    order), users.csv and items.parquet (genre lists need Parquet), keyed by the new ids."""
    out = tmp_path_factory.mktemp("own")
    c = load_columns("100k-ratings")
    uid, sku = _renamed(c["user_id"], b"9"), _renamed(c["movie_id"], b"8")
    pd.DataFrame({"uid": uid, "sku": sku, "ts": c["timestamp"],
                  "stars": c["user_rating"]}).to_csv(out / "events.csv", index=False)
    _, first = np.unique(uid, return_index=True)
    pd.DataFrame({"uid": uid[first], "age": c["raw_user_age"][first],
                  "age_bucket": c["bucketized_user_age"][first],
                  "gender": c["user_gender"][first],
                  "occupation": c["user_occupation_label"][first],
                  "zip_code": c["user_zip_code"][first].astype(str)}).to_csv(
                      out / "users.csv", index=False)
    _, first = np.unique(sku, return_index=True)
    pd.DataFrame({"sku": sku[first], "title": c["movie_title"][first].astype(str),
                  "genres": [g.tolist() for g in c["movie_genres"][first]]}).to_parquet(
                      out / "items.parquet")
    return out
