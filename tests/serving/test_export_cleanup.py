"""Export reliability (issue 17, defects 8 and 9): stale temporary directories, unknown users,
wrong-rank inputs to the raw SavedModel."""

import os
import subprocess
import sys

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf
from towerkit import serving
from towerkit.cli import main as cli
from towerkit.features import FeatureSet, IdEmbedding
from towerkit.index import BruteForce
from towerkit.models import Tower

USERS = ["1", "2", "3", "ünï"]


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def _index():
    tower = Tower(FeatureSet({"user_id": IdEmbedding(USERS, 4, name="user_id")},
                             name="query_features"), None, name="query_tower")
    tower({"user_id": tf.constant(["1"])})
    rng = np.random.default_rng(0)
    return BruteForce(tower, k=3).index(rng.normal(size=(10, 4)).astype(np.float32),
                                        [f"m{i}" for i in range(10)])


SIGNATURE = {"user_id": tf.TensorSpec([None], tf.string, name="user_id")}


def test_stale_temporary_dirs_are_removed_and_running_ones_kept(tmp_path):
    base = tmp_path / "model"
    base.mkdir()
    crashed = base / f".towerkit-tmp-1-p{_dead_pid()}-abc"
    (crashed / "variables").mkdir(parents=True)
    (crashed / "variables" / "variables.data-00000-of-00001").write_bytes(b"x" * 5000)
    running = base / f".towerkit-tmp-2-p{os.getppid()}-def"   # a live process
    running.mkdir()
    old_style = base / ".towerkit-tmp-3-0123abcd"             # no pid: judged by age
    old_style.mkdir()
    os.utime(old_style, (0, 0))
    report = serving.clean_stale_exports(base)
    assert sorted(report["removed"]) == sorted([str(crashed), str(old_style)])
    assert report["removed_bytes"] == 5000 and report["in_progress"] == [str(running)]
    assert not crashed.exists() and running.exists()
    # export() cleans up too, and its own temporary directory never stays.
    crashed.mkdir()
    version = serving.export(_index(), base, query_signature=SIGNATURE)
    assert not crashed.exists() and version.name == "1"
    assert sorted(p.name for p in base.iterdir()) == sorted(["1", running.name])


def test_cli_export_reports_what_it_removed(tmp_path, capsys):
    from towerkit.cli.export import export_inputs
    from towerkit.recipes import IndexInputs

    index = _index()
    base = tmp_path / "m"
    (base / f".towerkit-tmp-1-p{_dead_pid()}-x").mkdir(parents=True)
    inputs = IndexInputs(query_model=index.query_model, query_signature=SIGNATURE,
                         candidate_ids=index.identifiers.numpy(),
                         candidate_embeddings=index.candidate_embeddings,
                         sample_queries={"user_id": np.array([b"1", b"2"])})
    summary = export_inputs(inputs, "brute-force", base, k=3)
    assert summary["stale_temporary_dirs"].startswith(
        "removed 1 temporary directory (0.0 MB) left by exports that did not finish")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("known") / "model"
    return serving.export(_index(), base, query_signature=SIGNATURE)


def test_unknown_empty_and_non_utf8_users_are_flagged(exported):
    serve = tf.saved_model.load(str(exported)).signatures
    users = tf.constant([b"1", b"42", b"", b"\xff\xfe", "ünï".encode()])
    for name, extra in (("serving_default", {}), ("top_k", {"k": tf.constant(2)})):
        out = serve[name](user_id=users, **extra)
        np.testing.assert_array_equal(out["known_query"].numpy(),
                                      [True, False, False, False, True])
    # The unknown users get the out-of-vocabulary fallback list: flagged, not silent.
    ids = serve["serving_default"](user_id=users)["ids"].numpy()
    np.testing.assert_array_equal(ids[1], ids[2])
    result = serving.LocalModel(str(exported)).predict({"user_id": np.array(["42"])})
    assert result.known_query.tolist() == [False]


def test_recommend_cli_says_when_a_user_is_unknown(exported, capsys):
    assert cli.main(["recommend", str(exported), "--user", "42"]) == 0
    captured = capsys.readouterr()
    assert "does not know user '42' (known_query is false): these are fallback" in captured.err
    assert cli.main(["recommend", str(exported), "--user", "1"]) == 0
    assert "does not know" not in capsys.readouterr().err


@pytest.mark.parametrize("value", [tf.constant("1"), tf.constant([["1"]])])
def test_wrong_rank_raw_input_names_the_input(exported, value):
    serve = tf.saved_model.load(str(exported)).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"Shape of tensor user_id \[.*\] is not compatible with expected "
                             r"shape \[\?\]"):
        serve(user_id=value)


def test_known_query_reaches_rest_and_grpc_clients(exported, toy):
    servers = [toy.RestModelServer(exported), toy.GrpcModelServer(exported)]
    try:
        for server in servers:
            client = serving.Client(server.url, toy.MODEL_NAME)
            result = client.predict({"user_id": np.array(["2", "nobody"])})
            assert result.known_query.tolist() == [True, False], server.url
    finally:
        for server in servers:
            server.stop()
