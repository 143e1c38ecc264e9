"""Every recipe on your own files: a CSV/Parquet copy of MovieLens 100K with renamed columns and
renamed ids trains to the same metrics as the tfds path for the same seed, through the Python
API and `towerkit train --data`; bad own-data flags fail before any work."""

import json

import numpy as np
import pandas as pd
import pytest

import towerkit  # noqa: F401
from towerkit.cli.main import main
from towerkit.data import recipe_data
from towerkit.recipes import available_recipes, get_recipe, load_run, make_run_config


# Small, fast settings per recipe family (the same on both paths).
SEQUENTIAL = {"embedding_dim": 16, "batch_size": 2048, "max_history": 10}
RANKER = {"embedding_dim": 8, "tower_sizes": "16"}
PARAMS = {
    "two_tower": {"features": "rich", "embedding_dim": 16},
    "dat": {"embedding_dim": 16, "validation_fraction": 0.1},
    "popularity": {},
    **{name: SEQUENTIAL for name in ("youtube_dnn", "gru", "sasrec", "mt_ebr")},
    **{name: {**SEQUENTIAL, "num_interests": 2}
       for name in ("mind", "comirec_dr", "comirec_sa")},
    **{name: RANKER for name in ("shared_bottom", "single_task", "mmoe", "cgc", "ple", "esmm",
                                 "aitm")},
}
SEED = 5


@pytest.fixture(scope="module")
def spec(own_files):
    return recipe_data.file_data(own_files / "events.csv", user="uid", item="sku", time="ts",
                                 rating="stars", user_features=own_files / "users.csv",
                                 item_features=own_files / "items.parquet")


def test_every_recipe_has_settings():
    # towerkit's own recipes (other tests register recipes of their own).
    built_in = [n for n in available_recipes()
                if get_recipe(n).__module__.startswith("towerkit.recipes.")]
    assert sorted(PARAMS) == built_in


def test_file_columns_equal_tfds_columns(spec):
    """Both paths give the recipes the same dataset-free columns (tfds MovieLens renamed)."""
    got = recipe_data.rating_columns({"data": spec})
    want = recipe_data.rating_columns(make_run_config("sasrec", "movielens/100k-ratings"))
    assert sorted(got) == ["item_genres", "item_id", "item_title", "rating", "timestamp",
                           "user_age", "user_age_bucket", "user_gender", "user_id",
                           "user_occupation", "user_zip_code"]
    assert set(got) <= set(want)
    assert [u[1:] for u in got["user_id"]] == list(want["user_id"])
    assert [m[1:] for m in got["item_id"]] == list(want["item_id"])
    for name in sorted(set(got) - {"user_id", "item_id", "item_genres"}):
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert all(np.array_equal(a, b) for a, b in zip(got["item_genres"], want["item_genres"]))


def _train_and_score(name, tmp_path, **data):
    recipe = get_recipe(name)()
    run = tmp_path / ("files" if "data" in data else "tfds")
    config = make_run_config(name, seed=SEED, epochs=1, params=dict(PARAMS[name]), **data)
    recipe.train(config, run)
    return recipe.evaluate(run)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_recipe_on_files_matches_tfds(name, spec, tmp_path):
    want = _train_and_score(name, tmp_path, dataset="movielens/100k-ratings")
    got = _train_and_score(name, tmp_path, data=spec)
    numbers = {k for k, v in want.items() if isinstance(v, (int, float))}
    assert numbers and set(got) == set(want)
    assert {k: got[k] for k in numbers} == pytest.approx({k: want[k] for k in numbers},
                                                          rel=1e-5, abs=1e-6)


def test_cli_trains_evaluates_and_exports_a_file_run(own_files, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "sasrec", "--data", str(own_files / "events.csv"),
                 "--user-column", "uid", "--item-column", "sku", "--time-column", "ts",
                 "--item-features", str(own_files / "items.parquet"), "--epochs", "1",
                 "--seed", "2", "--out", str(run), "--embedding-dim", "16",
                 "--batch-size", "2048"]) == 0
    config = json.loads((run / "run.json").read_text())
    assert config["dataset"] is None and config["data"]["columns"] == {
        "user": "uid", "item": "sku", "time": "ts"}
    recipe, _ = load_run(run)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "test"]) == 0
    assert "events.csv" in capsys.readouterr().out
    # Export: the served candidates are the log's own (renamed) item ids.
    export = tmp_path / "export"
    assert main(["export", str(run), "--model-base-path", str(export), "--k", "10"]) == 0
    assert (export / "1" / "saved_model.pb").is_file()
    inputs = recipe.index_inputs(run)
    assert all(i.startswith(b"8") for i in inputs.candidate_ids)


def test_string_ids_train(own_files, tmp_path):
    """Ids that are not numbers (and a TSV) train and evaluate like any other log."""
    frame = pd.read_csv(own_files / "events.csv")
    frame["uid"] = "user-" + frame["uid"].astype(str)
    frame["sku"] = "sku-" + frame["sku"].astype(str)
    frame.to_csv(tmp_path / "events.tsv", sep="\t", index=False)
    data = recipe_data.file_data(tmp_path / "events.tsv", user="uid", item="sku", time="ts")
    recipe = get_recipe("sasrec")()
    recipe.train(make_run_config("sasrec", data=data, epochs=1, params=dict(SEQUENTIAL)),
                 tmp_path / "run")
    metrics = recipe.evaluate(tmp_path / "run")
    assert 0.05 < metrics["recall@50"] < 1.0
    assert recipe.index_inputs(tmp_path / "run").candidate_ids[0].startswith(b"sku-")


@pytest.mark.parametrize("argv, message", [
    (["--model", "sasrec", "--data", "EVENTS"], "--data needs --user-column and --item-column"),
    (["--model", "sasrec", "--user-column", "uid"], "add --data PATH"),
    (["--model", "sasrec", "--data", "EVENTS", "--user-column", "uid", "--item-column", "sku",
      "--dataset", "movielens/100k-ratings"], "drop --dataset"),
    (["--model", "sasrec", "--data", "nowhere.csv", "--user-column", "uid", "--item-column",
      "sku"], "no such file"),
    (["--model", "sasrec", "--data", "EVENTS", "--user-column", "uid", "--item-column", "sku",
      "--user-key", "uid"], "no --user-features table"),
    (["--model", "sasrec", "--data", "OWNDIR", "--user-column", "uid", "--item-column", "sku"],
     "is a directory; pass its files as a glob"),
    (["--resume", "OWNDIR", "--data", "EVENTS", "--user-column", "uid"],
     "drop --out --data --user-column."),
    (["--model", "sasrec", "--data", "EVENTS", "--user-column", "uid", "--item-column", "sku"],
     "--time-column"),
    (["--model", "mmoe", "--data", "EVENTS", "--user-column", "uid", "--item-column", "sku",
      "--time-column", "ts"], "--rating-column"),
    (["--model", "two_tower", "--features", "rich", "--data", "EVENTS", "--user-column", "uid",
      "--item-column", "sku", "--time-column", "ts"], "'gender' column in --user-features"),
])
def test_bad_own_data_flags_fail_before_work(argv, message, own_files, tmp_path, capsys):
    paths = {"EVENTS": str(own_files / "events.csv"), "OWNDIR": str(own_files)}
    argv = [paths.get(a, a) for a in argv]
    try:  # flag errors exit through argparse; config errors return 2 with one line
        code = main(["train", "--out", str(tmp_path / "run"), *argv])
    except SystemExit as e:
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "run").exists()


def test_feature_table_with_unknown_column_is_an_error(own_files, tmp_path):
    frame = pd.read_csv(own_files / "users.csv")
    frame["favourite_colour"] = "blue"
    frame.to_csv(tmp_path / "users.csv", index=False)
    data = recipe_data.file_data(own_files / "events.csv", user="uid", item="sku", time="ts",
                                 user_features=tmp_path / "users.csv")
    with pytest.raises(ValueError, match=r"\['favourite_colour'\] are not user features"):
        recipe_data.rating_columns({"data": data})


def test_gender_that_is_not_binary_is_an_error(own_files, tmp_path):
    frame = pd.read_csv(own_files / "users.csv")
    frame["gender"] = np.where(frame["gender"], "M", "F")
    frame.to_csv(tmp_path / "users.csv", index=False)
    data = recipe_data.file_data(own_files / "events.csv", user="uid", item="sku",
                                 user_features=tmp_path / "users.csv")
    with pytest.raises(TypeError, match="'gender' must hold booleans or 0/1"):
        recipe_data.rating_columns({"data": data})


def test_run_config_names_its_data_once(spec):
    with pytest.raises(ValueError, match="Pass the run's data once"):
        make_run_config("sasrec", "movielens/100k-ratings", data=spec)
    with pytest.raises(ValueError, match="Pass the run's data once"):
        make_run_config("sasrec")


def test_a_run_refuses_data_that_changed_after_training(own_files, tmp_path, capsys):
    """The run config stores a fingerprint of its files; evaluating on edited files fails."""
    import importlib

    protocols = importlib.import_module("towerkit.data.sequential_protocol")
    events = tmp_path / "events.csv"
    events.write_bytes((own_files / "events.csv").read_bytes())
    run = tmp_path / "run"
    assert main(["train", "--model", "popularity", "--data", str(events), "--user-column", "uid",
                 "--item-column", "sku", "--time-column", "ts", "--out", str(run)]) == 0
    stored = json.loads((run / "run.json").read_text())["data"]["fingerprint"]
    assert stored["files"] == 1 and stored["bytes"] == events.stat().st_size
    assert main(["evaluate", str(run)]) == 0
    frame = pd.read_csv(events)
    frame.loc[0, "stars"] = 1.0  # one rating edited
    frame.to_csv(events, index=False)
    # A new process would read the files again: drop this process's caches.
    recipe_data._file_columns.cache_clear()
    protocols._cached_file_protocol.cache_clear()
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 2
    assert "changed since it was trained" in capsys.readouterr().err
