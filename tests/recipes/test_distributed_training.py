"""Real multi-worker training: 2 worker processes over loopback (`towerkit train --local-workers
2`) against single-process runs of the same config, a worker killed mid-epoch and the job
restarted, and the export of a distributed run answering in a TensorFlow-only process.

Tolerance: a 2-worker run sees the same global batches and (with global negatives) the same
loss and gradients as one process, so its metrics may differ only by float summation order:
train loss within 1e-4 relative, hit rates / recall within 0.005 absolute.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf

from towerkit.cli.main import main
from towerkit.serving.clean_process import run_saved_model

pytestmark = pytest.mark.slow

TWO_TOWER = ["--model", "two_tower", "--epochs", "1", "--batch-size", "1024",
             "--embedding-dim", "8", "--train-fraction", "0.1", "--checkpoint-every", "3"]
YOUTUBE = ["--model", "youtube_dnn", "--epochs", "1", "--batch-size", "4096",
           "--embedding-dim", "8", "--hidden-units", "16", "--early-stopping", "0"]


def _launch(argv, extra_env=None, timeout=420):
    """`towerkit train ... --local-workers 2` in its own process group; always stopped."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               **(extra_env or {}))
    env.pop("TF_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "towerkit.cli.main", "train", *argv,
                             "--local-workers", "2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the launcher stops its workers
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return proc.returncode, out, err


def _metrics(run):
    return json.loads((pathlib.Path(run) / "metrics.json").read_text())


def _single(tmp, name, argv):
    run = tmp / name
    assert main(["train", *argv, "--out", str(run)]) == 0
    return _metrics(run)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("distributed")


def test_bad_distribution_flags_fail_before_any_work(tmp, capsys):
    with pytest.raises(SystemExit):
        main(["train", *TWO_TOWER, "--out", str(tmp / "x"), "--local-workers", "1"])
    assert "--local-workers must be an integer >= 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", *TWO_TOWER, "--out", str(tmp / "x"), "--distribute", "mirrored",
              "--local-workers", "2"])
    assert "pass it with --distribute multi-worker" in capsys.readouterr().err
    os.environ.pop("TF_CONFIG", None)
    with pytest.raises(SystemExit):
        main(["train", *TWO_TOWER, "--out", str(tmp / "x"), "--distribute", "multi-worker"])
    assert "needs the cluster in the TF_CONFIG" in capsys.readouterr().err
    assert not (tmp / "x").exists()


def test_killed_worker_restarted_resumes_and_matches_one_process(tmp):
    single = _single(tmp, "tt_single", TWO_TOWER)
    run = tmp / "tt_workers"
    # 10 steps per epoch (10,000 rows / 1024); checkpoints at steps 3 and 6; worker 1 is
    # killed (SIGKILL) after its 5th step, mid-epoch. The launcher stops the chief too.
    code, out, err = _launch([*TWO_TOWER, "--out", str(run)],
                             {"TOWERKIT_TEST_KILL_AFTER_STEPS": "5",
                              "TOWERKIT_TEST_KILL_TASK": "worker1"})
    assert code == 128 + signal.SIGKILL, err[-2000:]
    assert "worker 1 of 2 was killed by SIGKILL; stopped the other workers" in err
    assert not run.exists()
    progress = json.loads((run.parent / f".{run.name}.towerkit-partial" / "checkpoints" /
                           "progress.json").read_text())
    assert (progress["epoch"], progress["step"]) == (0, 3)
    # The job restarted (both workers, as a cluster restarts a failed job): it resumes.
    code, out, err = _launch(["--resume", str(run)])
    assert code == 0, err[-3000:]
    assert "resuming at epoch 1, step 3" in out
    workers = _metrics(run)
    assert workers["train_loss"] == pytest.approx(single["train_loss"], rel=1e-4)
    for k in (1, 10, 100):
        name = f"top_{k}_categorical_accuracy"
        assert abs(workers[name] - single[name]) <= 0.005, name
    assert workers["top_100_categorical_accuracy"] > single[
        "popularity_top_1_categorical_accuracy"]  # it learned something
    config = json.loads((run / "run.json").read_text())
    assert config["distribute"] == {"strategy": "multi-worker", "negatives": "global"}
    assert not list(run.parent.glob(f".{run.name}.towerkit-partial*"))  # no worker scratch

    # The export of the distributed run answers in a TensorFlow-only process.
    base = tmp / "tt_export"
    assert main(["export", str(run), "--index", "brute-force", "--model-base-path", str(base),
                 "--k", "10"]) == 0
    users = np.array([b"42", b"7"])
    clean = run_saved_model(base / "1", {"user_id": users})
    assert clean.outputs["ids"].shape == (2, 10)
    # Same answers as the run's towers give in this process, outside any strategy.
    from towerkit import recipes
    from towerkit.recipes.two_tower import top_k_ids
    inputs = recipes.get_recipe("two_tower")().index_inputs(run)
    queries = inputs.query_model({"user_id": tf.constant(users)}).numpy()
    expected, scores = top_k_ids(queries, inputs.candidate_embeddings, 10)
    np.testing.assert_allclose(clean.outputs["scores"], scores, rtol=1e-4, atol=1e-5)


def test_sequence_recipe_on_two_workers_matches_one_process(tmp):
    single = _single(tmp, "yt_single", YOUTUBE)
    run = tmp / "yt_workers"
    code, out, err = _launch([*YOUTUBE, "--out", str(run)])
    assert code == 0, err[-3000:]
    workers = _metrics(run)
    assert workers["final_loss"] == pytest.approx(single["final_loss"], rel=1e-4)
    for name in ("valid_recall@20", "valid_recall@50", "valid_hr@20"):
        assert abs(workers[name] - single[name]) <= 0.005, name


def test_own_files_on_two_workers_match_the_tfds_run_in_one_process(tmp, own_files):
    """`--data` reaches every worker: YouTube-DNN on a renamed CSV copy of MovieLens 100K,
    2 workers, against one process on the tfds dataset."""
    single = _single(tmp, "yt_tfds_single", YOUTUBE)
    run = tmp / "yt_own_workers"
    code, out, err = _launch([*YOUTUBE, "--data", str(own_files / "events.csv"),
                              "--user-column", "uid", "--item-column", "sku",
                              "--time-column", "ts", "--out", str(run)])
    assert code == 0, err[-3000:]
    assert json.loads((run / "run.json").read_text())["data"]["columns"]["user"] == "uid"
    workers = _metrics(run)
    assert workers["final_loss"] == pytest.approx(single["final_loss"], rel=1e-4)
    for name in ("valid_recall@20", "valid_recall@50", "valid_hr@20"):
        assert abs(workers[name] - single[name]) <= 0.005, name
