"""The Beam pipeline (DirectRunner) writes the same shards as the streaming writer."""

import os

import numpy as np
import pandas as pd
import pytest

import towerkit  # noqa: F401
from towerkit.data.columns import Columns
from towerkit.data.shards import read_manifest, write_shards

# apache-beam is in the test extra: this runs the real DirectRunner, never skips.
import apache_beam as beam  # noqa: E402,F401
from towerkit.data.beam_pipeline import prepare_shards  # noqa: E402

COLS = Columns(user="uid", item="sku", time="ts", rating="r")


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    d = tmp_path_factory.mktemp("beam")
    rng = np.random.default_rng(5)
    for i in range(3):  # one log split in three Parquet files, and the same as CSV
        n = 700 + 100 * i
        frame = pd.DataFrame({"uid": [f"user{u}" for u in rng.integers(0, 90, n)],
                              "sku": rng.integers(0, 300, n), "ts": rng.integers(0, 10**9, n),
                              "r": rng.integers(1, 6, n).astype(float)})
        frame.to_parquet(d / f"part-{i}.parquet")
        frame.to_csv(d / f"part-{i}.csv", index=False)
    return d


@pytest.mark.parametrize("pattern", ["part-*.parquet", "part-*.csv"])
def test_beam_equals_streaming_writer(logs, tmp_path, pattern):
    manifest = prepare_shards(str(logs / pattern), str(tmp_path / "beam"), num_shards=4,
                              columns=COLS, chunk_rows=250, block_rows=64)
    streamed = write_shards(str(logs / pattern), tmp_path / "stream", num_shards=4,
                            columns=COLS, chunk_rows=400, block_rows=64)
    assert manifest == streamed == read_manifest(tmp_path / "beam")
    assert manifest["num_rows"] == 700 + 800 + 900
    for name in manifest["files"]:
        assert (tmp_path / "beam" / name).read_bytes() == (tmp_path / "stream" / name).read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["beam", "stream"]  # no temporary directory left


def test_schema_errors_before_the_pipeline(logs, tmp_path):
    with pytest.raises(ValueError, match=r"has no column 'user'; available columns"):
        prepare_shards(str(logs / "part-*.csv"), str(tmp_path / "out"), 2,
                       Columns(user="user", item="sku"))
    with pytest.raises(ValueError, match="Unknown file format"):
        prepare_shards(str(logs / "part-*.json"), str(tmp_path / "out"), 2, COLS)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"is empty \(0 bytes\)"):
        prepare_shards(str(tmp_path / "empty.csv"), str(tmp_path / "out"), 2, COLS)
    assert not (tmp_path / "out").exists()
