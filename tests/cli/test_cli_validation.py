"""Bad input refused at the door (issue 17, defects 5, 6 and 7): one line naming the input and
the fix, before any work, no traceback unless `--debug`.

Each case runs before training or exporting starts, so these tests are fast; the export cases
need a run directory, for which a toy recipe with a hand-made complete run is used.
"""

import os
import time

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf
from towerkit.cli import main as cli
from towerkit.data import MovieLensUnavailableError, load_columns
from towerkit.recipes import (IndexInputs, Recipe, make_run_config, mark_run_complete,
                              register_recipe, write_run_config)

TRAIN = ["train", "--model", "two_tower"]


@pytest.mark.parametrize("argv, message", [
    # Defect 5: accepted and wrong before.
    ([*TRAIN, "--learning-rate", "-1"], "argument --learning-rate: must be a finite number > 0"),
    ([*TRAIN, "--learning-rate", "nan"], "argument --learning-rate: must be a finite number > 0"),
    # Defect 6: tracebacks before.
    ([*TRAIN, "--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
    ([*TRAIN, "--train-fraction", "1.5"], "argument --train-fraction: must be in (0, 1)"),
    (["train", "--model", "gru", "--max-history", "0"],
     "argument --max-history: must be an integer >= 1, got 0"),
    (["quickstart", "--users", "0"], "argument --users: must be an integer >= 1, got 0"),
    (["quickstart", "--epochs", "-2"], "argument --epochs: must be an integer >= 1, got -2"),
    (["export", "RUN", "--model-base-path", "m", "--k", "0"],
     "argument --k: must be an integer >= 1, got 0"),
    (["export", "RUN", "--model-base-path", "m", "--k", "-5"],
     "argument --k: must be an integer >= 1, got -5"),
    (["export", "RUN", "--model-base-path", "m", "--target-recall", "1.5"],
     "argument --target-recall: must be in (0, 1], got 1.5"),
    (["train", "--model", "two_tower", "--out", "x", "--checkpoint-every", "-1"],
     "argument --checkpoint-every: must be an integer >= 0, got -1"),
])
def test_flag_ranges_are_checked_by_the_parser(argv, message, capsys, tmp_path):
    if argv[0] == "train" and "--out" not in argv:
        argv = [*argv, "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_rich_features_on_a_config_without_profile_columns(tmp_path, capsys):
    # movielens/1m-ratings has no user_age: refused from TFDS metadata, before loading.
    argv = [*TRAIN, "--out", str(tmp_path / "run"), "--dataset", "movielens/1m-ratings",
            "--features", "rich"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--features rich needs the columns ['user_age']" in err
    assert "use --features basic" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_quickstart_users_above_the_sample(tmp_path, capsys):
    assert cli.main(["quickstart", "--users", "9", "--out", str(tmp_path / "q")]) == 2
    assert "--users must be between 1 and 8" in capsys.readouterr().err


def test_missing_data_offline_fails_fast_without_writing(tmp_path, monkeypatch, capsys):
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    monkeypatch.setenv("TOWERKIT_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(MovieLensUnavailableError, match=r"not prepared in .* TOWERKIT_OFFLINE"):
        load_columns("1m-ratings", data_dir=str(data_dir))
    argv = [*TRAIN, "--out", str(tmp_path / "run"), "--dataset", "movielens/1m-ratings",
            "--data-dir", str(data_dir)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "not prepared in" in err and "--data-dir DIR" in err
    assert time.perf_counter() - start < 30
    assert list(data_dir.rglob("*")) == []  # nothing written into the data dir
    assert not (tmp_path / "run").exists()


def test_unexpected_errors_are_one_line_unless_debug(tmp_path, capsys):
    run = tmp_path / "notarun"
    run.write_text("x")
    assert cli.main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a run directory" in err
    with pytest.raises(ValueError, match="is a file, not a run directory"):
        cli.main(["--debug", "evaluate", str(run)])
    with pytest.raises(ValueError):
        cli.main(["evaluate", str(run), "--debug"])


# ---- export: Python argument checks and --target-recall with brute force ------------------

RECIPE = "test_cli_validation_toy"


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    rng = np.random.default_rng(0)
    inputs = IndexInputs(query_model=None, query_signature={
        "queries": tf.TensorSpec([None, 4], tf.float32)},
        candidate_ids=np.arange(50, dtype=np.int64),
        candidate_embeddings=rng.normal(size=(50, 4)).astype(np.float32),
        sample_queries={"queries": rng.normal(size=(4, 4)).astype(np.float32)})

    @register_recipe
    class Toy(Recipe):
        name = RECIPE

        def train(self, config, run_dir):
            return {}

        def evaluate(self, run_dir, split="test", dump_topn=None):
            return {}

        def index_inputs(self, run_dir):
            return inputs

    path = tmp_path_factory.mktemp("toy") / "run"
    write_run_config(path, make_run_config(RECIPE, "synthetic"))
    mark_run_complete(path)
    return path, inputs


def test_target_recall_with_brute_force_is_refused(toy_run, tmp_path, capsys):
    run, _ = toy_run
    argv = ["export", str(run), "--model-base-path", str(tmp_path / "m"), "--target-recall",
            "0.9"]
    assert cli.main(argv) == 2
    assert "--target-recall does not apply to --index brute-force" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("kwargs, error, message", [
    ({"k": 0}, ValueError, "k must be >= 1, got 0"),
    ({"k": 2.5}, TypeError, "k must be an integer, got 2.5"),
    ({"kind": "annoy", "target_recall": 1.5}, ValueError, r"target_recall must be in \(0, 1\]"),
    ({"target_recall": 0.9}, ValueError, "does not apply to the brute-force index"),
    ({"kind": "faiss"}, ValueError, "Unknown index kind 'faiss'"),
])
def test_build_index_checks_its_arguments(toy_run, kwargs, error, message):
    from towerkit.cli.export import build_index

    _, inputs = toy_run
    kwargs = {"kind": "brute-force", **kwargs}
    with pytest.raises(error, match=message):
        build_index(inputs, **kwargs)


def test_truncated_tower_config_names_the_file(tmp_path):
    from towerkit.recipes.two_tower import _deserialize

    path = tmp_path / "query_tower.json"
    path.write_text('{"class_name": "Tower", "config": {')
    with pytest.raises(ValueError, match=r"Cannot read the tower config .*query_tower.json"):
        _deserialize(path)
    assert os.path.exists(path)
