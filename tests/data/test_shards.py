"""Training shards: the streamed path equals the in-memory path; writes are atomic."""

import os
import zlib

import numpy as np
import pandas as pd
import pytest

import towerkit  # noqa: F401
from towerkit.data import sources
from towerkit.data.columns import Columns
from towerkit.data.shards import load_shards, read_manifest, read_shards, shard_of, write_shards

COLS = Columns(user="uid", item="sku", time="ts", weight="w")


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    rng = np.random.default_rng(11)
    n = 3000
    path = tmp_path_factory.mktemp("shards") / "log.csv"
    pd.DataFrame({"uid": rng.integers(0, 200, n), "sku": [f"s{i}" for i in rng.zipf(1.5, n) % 500],
                  "ts": rng.integers(0, 10**6, n), "w": rng.random(n)}).to_csv(path, index=False)
    return path


def _sorted(log):
    return log.take(log.canonical_order())


def test_streamed_equals_in_memory(csv, tmp_path):
    memory = sources.read(csv, COLS)
    manifest = write_shards(csv, tmp_path / "s", num_shards=5, columns=COLS, chunk_rows=700,
                            block_rows=128)
    assert manifest["num_rows"] == len(memory) == sum(manifest["rows_per_shard"])
    assert manifest["fields"] == {"user": "int64", "item": "string", "timestamp": "int64",
                                  "weight": "float32"}
    streamed = load_shards(tmp_path / "s")
    a, b = _sorted(memory), _sorted(streamed)
    for f in memory.fields:
        assert a[f].dtype == b[f].dtype
        np.testing.assert_array_equal(a[f], b[f], f)
    # Batches of the streamed dataset hold exactly the in-memory rows (per user, in order:
    # a user's events stay in one shard, in source order).
    batches = list(read_shards(tmp_path / "s", batch_size=256).as_numpy_iterator())
    assert [len(x["user"]) for x in batches[:-1]] == [256] * (len(batches) - 1)
    users = np.concatenate([x["user"] for x in batches])
    items = np.concatenate([x["item"] for x in batches])
    for u in np.unique(memory["user"])[:20]:
        np.testing.assert_array_equal(items[users == u], memory["item"][memory["user"] == u])
    shards = shard_of(memory["user"], 5)
    np.testing.assert_array_equal(np.bincount(shards, minlength=5), manifest["rows_per_shard"])


def test_chunking_does_not_change_the_files(csv, tmp_path):
    write_shards(csv, tmp_path / "a", num_shards=3, columns=COLS, chunk_rows=97, block_rows=64)
    write_shards(sources.read(csv, COLS), tmp_path / "b", num_shards=3, block_rows=64)
    for name in read_manifest(tmp_path / "a")["files"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_shuffled_stream_covers_every_row_once(csv, tmp_path):
    write_shards(csv, tmp_path / "s", num_shards=4, columns=COLS, block_rows=100)
    ds = read_shards(tmp_path / "s", batch_size=100, shuffle_buffer=500, seed=0,
                     deterministic=False)
    batches = list(ds.as_numpy_iterator())
    pairs = sorted(zip(np.concatenate([b["weight"] for b in batches]),
                       np.concatenate([b["user"] for b in batches])))
    memory = sources.read(csv, COLS)
    assert pairs == sorted(zip(memory["weight"], memory["user"]))  # every row once, aligned
    plain = np.concatenate([b["weight"] for b in
                            read_shards(tmp_path / "s", batch_size=100).as_numpy_iterator()])
    shuffled = np.concatenate([b["weight"] for b in batches])
    assert np.mean(shuffled != plain) > 0.9


def test_failed_write_leaves_nothing(tmp_path):
    (tmp_path / "bad.csv").write_text("uid,sku,ts,w\n1,a,1,0.5\n2,b,2,0.5\n3,c,3,nan\n")
    with pytest.raises(ValueError, match="weight column 'w' has 1 non-finite"):
        write_shards(tmp_path / "bad.csv", tmp_path / "out", 2, COLS, chunk_rows=2)
    assert sorted(os.listdir(tmp_path)) == ["bad.csv"]  # no output, no temporary directory
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        write_shards(tmp_path / "bad.csv", tmp_path / "out", 2, COLS)
    with pytest.raises(ValueError, match="no manifest.json: not a towerkit shard directory"):
        read_shards(tmp_path / "out")
    with pytest.raises(ValueError, match="num_shards must be a positive int"):
        write_shards(tmp_path / "bad.csv", tmp_path / "new", 0, COLS)


def test_shard_of_is_stable():
    # CRC-32 (IEEE), the same in every process: crc32(b"a") = 0xE8B7BE43; an int64 id is
    # hashed as its 8 little-endian bytes (1 -> 01 00 00 00 00 00 00 00).
    np.testing.assert_array_equal(shard_of(np.array([b"a"], dtype=object), 7),
                                  [0xE8B7BE43 % 7])
    np.testing.assert_array_equal(shard_of(np.array([1], dtype=np.int64), 7),
                                  [zlib.crc32(b"\x01" + b"\x00" * 7) % 7])
