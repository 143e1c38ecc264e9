"""Every source gives the same Interactions; each bad file gets its one-line message."""

import ast
import pathlib
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.data import sources
from towerkit.data.columns import Columns

COLS = Columns(user="uid", item="sku", time="ts", rating="stars")


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(7)
    n = 500
    return pd.DataFrame({
        "uid": [f"u{u:03d}" for u in rng.integers(0, 40, n)],
        "sku": rng.integers(0, 60, n).astype(np.int64),
        "ts": rng.integers(1_600_000_000, 1_700_000_000, n).astype(np.int64),
        "stars": rng.integers(1, 6, n).astype(np.float64),
        "extra": rng.random(n),  # an unmapped column is ignored
    })


def _write_tfrecord(frame, path):
    with tf.io.TFRecordWriter(str(path)) as w:
        for row in frame.itertuples(index=False):
            w.write(tf.train.Example(features=tf.train.Features(feature={
                "uid": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.uid.encode()])),
                "sku": tf.train.Feature(int64_list=tf.train.Int64List(value=[row.sku])),
                "ts": tf.train.Feature(int64_list=tf.train.Int64List(value=[row.ts])),
                "stars": tf.train.Feature(float_list=tf.train.FloatList(value=[row.stars])),
            })).SerializeToString())


@pytest.fixture(scope="module")
def files(frame, tmp_path_factory):
    d = tmp_path_factory.mktemp("sources")
    frame.to_csv(d / "log.csv", index=False)
    frame.to_parquet(d / "log.parquet")
    _write_tfrecord(frame, d / "log.tfrecord")
    return d


def _assert_same(a, b):
    assert a.fields == b.fields
    for f in a.fields:
        assert a[f].dtype == b[f].dtype, f
        np.testing.assert_array_equal(a[f], b[f])


def test_every_source_gives_the_same_interactions(frame, files):
    reference = sources.from_dataframe(frame, COLS)
    assert reference.fields == ("user", "item", "timestamp", "rating")
    assert reference["user"][0] == frame["uid"][0].encode() and reference["item"].dtype == np.int64
    ds = tf.data.Dataset.from_tensor_slices(dict(frame[["uid", "sku", "ts", "stars"]]))
    for log in (sources.read(files / "log.csv", COLS), sources.read(files / "log.parquet", COLS),
                sources.read(files / "log.tfrecord", COLS), sources.from_tf_dataset(ds, COLS),
                sources.from_tf_dataset(ds.batch(64), COLS)):
        _assert_same(reference, log)


@pytest.mark.parametrize("name", ["log.csv", "log.parquet", "log.tfrecord"])
def test_chunks_cover_the_log_in_order(frame, files, name):
    chunks = list(sources.iter_chunks(files / name, COLS, chunk_rows=128))
    assert [len(c) for c in chunks] == [128, 128, 128, 116]
    whole = sources.read(files / name, COLS)
    np.testing.assert_array_equal(np.concatenate([c["item"] for c in chunks]), whole["item"])


def test_feature_tables_from_files(frame, files):
    items = pd.DataFrame({"product": np.arange(60), "price": np.linspace(1, 2, 60)})
    items = items[items["product"].isin(frame["sku"])]
    items.to_csv(files / "items.csv", index=False)
    items.to_parquet(files / "items.parquet")
    for path in ("items.csv", "items.parquet"):
        log = sources.read(files / "log.csv", COLS, item_features=files / path,
                           item_key="product")
        price = log.item_features.lookup(log["item"])["price"]
        np.testing.assert_allclose(price, 1 + log["item"] / 59, rtol=1e-6)


def test_csv_dates_and_tsv(tmp_path):
    (tmp_path / "log.tsv").write_text("u\ti\tt\nalice\t7\t1970-01-01 00:01:00\n"
                                      "bob\t8\t1970-01-01T00:00:05Z\n")
    log = sources.read(tmp_path / "log.tsv", Columns(user="u", item="i", time="t"))
    np.testing.assert_array_equal(log["timestamp"], [60, 5])
    assert list(log["user"]) == [b"alice", b"bob"] and list(log["item"]) == [7, 8]


def test_bad_files(frame, files, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"empty.csv is empty \(0 bytes\)"):
        sources.read(tmp_path / "empty.csv", COLS)
    (tmp_path / "header.csv").write_text("uid,sku,ts,stars\n")
    with pytest.raises(ValueError, match="has no rows"):
        sources.read(tmp_path / "header.csv", COLS)
    with pytest.raises(ValueError, match=r"Unknown file format of '.*log.json'"):
        sources.read(tmp_path / "log.json", COLS)
    with pytest.raises(ValueError, match="No file matches"):
        sources.read(tmp_path / "nothing-*.csv", COLS)
    (tmp_path / "float_ids.csv").write_text("uid,sku,ts,stars\n1.0,2,3,4\n2.0,3,4,5\n")
    with pytest.raises(TypeError, match="ids in column 'uid' are floats"):
        sources.read(tmp_path / "float_ids.csv", COLS)
    (tmp_path / "late.csv").write_text("uid,sku,ts,stars\n1,2,3,4\n2,x3,4,5\n")
    with pytest.raises(TypeError, match="holds integers in its first rows but not later"):
        list(sources.iter_chunks(tmp_path / "late.csv", COLS, chunk_rows=1))
    wrong = Columns(user="user", item="sku", time="ts")
    for name in ("log.csv", "log.parquet", "log.tfrecord"):
        with pytest.raises(ValueError, match=r"has no column 'user'; available columns: .*'uid'"):
            sources.read(files / name, wrong)
    with pytest.raises(ValueError, match="has no column 'user'"):
        sources.from_dataframe(frame, wrong)
    with pytest.raises(ValueError, match="has no column 'user'"):
        sources.from_tf_dataset(tf.data.Dataset.from_tensor_slices(dict(frame[["uid"]])), wrong)
    with pytest.raises(TypeError, match="must yield dicts"):
        sources.from_tf_dataset(tf.data.Dataset.range(3), COLS)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        sources.read(tmp_path / "junk.parquet", COLS)
    with pytest.raises(TypeError, match="must be a path, a DataFrame or a tf.data.Dataset"):
        sources.read(42, COLS)


def test_core_import_needs_no_pandas(monkeypatch):
    """No towerkit module imports pandas, pyarrow or apache_beam at import time (only inside
    the functions that read CSV/Parquet or run Beam); without them, reading names the extra."""
    package = pathlib.Path(towerkit.__file__).parent
    optional = {"pandas", "pyarrow", "apache_beam"}
    top_level = []
    for path in package.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module level only
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            top_level += [f"{path.name}: {n}" for n in names if n.split(".")[0] in optional]
    assert top_level == []
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed
    with pytest.raises(ImportError, match=r"^Reading CSV or Parquet needs pandas and pyarrow: "
                                          r"pip install 'towerkit\[data\]'.$"):
        sources.read("log.csv", COLS)
