"""towerkit.serving.export: versioned atomic exports that stock TensorFlow runs like in-process."""

import os
import threading

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf
from towerkit import serving
from towerkit.serving import clean_process, signatures


def test_bruteforce_export_runs_in_clean_process_like_in_process(toy_export, toy_index, toy):
    users = np.array(["u0", "u7", "u19", "nobody"])
    run = clean_process.run_saved_model(toy_export, {"user_id": users}, warmup=True)
    assert run.signatures == ["query_embedding", "serving_default", "top_k"]
    assert run.warmup_requests == len(toy.WARMUP_USERS)
    scores, ids = toy_index({"user_id": tf.constant(users)})
    np.testing.assert_array_equal(run.outputs["ids"].astype(str), ids.numpy().astype(str))
    np.testing.assert_allclose(run.outputs["scores"], scores.numpy(), rtol=1e-6)
    oracle_ids, oracle_scores = toy.numpy_top_k(list(users))
    np.testing.assert_array_equal(run.outputs["ids"].astype(str), oracle_ids)
    np.testing.assert_allclose(run.outputs["scores"], oracle_scores, rtol=1e-5)


def _annoy(query_model, toy):
    from towerkit.index import Annoy

    return Annoy(query_model, k=toy.MAX_K, n_trees=4, search_k=20)


def _portable(query_model, toy):
    from towerkit.index import PortableIndex

    return PortableIndex(query_model, k=toy.MAX_K, num_leaves=4, leaves_to_search=2, blocks_to_search=10)


@pytest.mark.parametrize("make", [_annoy, _portable], ids=["annoy", "portable"])
def test_ann_export_runs_in_clean_process_like_in_process(make, tmp_path, toy):
    # Annoy's forest search and the portable partitioned index run in stock TF ops: the export
    # must load and answer in a process with TensorFlow alone exactly as the in-process index.
    ids, embeddings = toy.make_catalogue()
    index = make(toy.make_query_model(), toy).index(embeddings, identifiers=ids)
    path = serving.export(index, tmp_path / "ann", query_signature=toy.USER_SIGNATURE,
                          warmup_queries={"user_id": toy.WARMUP_USERS})
    users = np.array(["u0", "u5", "u12", "u19"])
    run = clean_process.run_saved_model(path, {"user_id": users}, warmup=True)
    assert run.warmup_requests == len(toy.WARMUP_USERS)
    scores, found = index({"user_id": tf.constant(users)})
    np.testing.assert_array_equal(run.outputs["ids"].astype(str), found.numpy().astype(str))
    np.testing.assert_allclose(run.outputs["scores"], scores.numpy(), rtol=1e-6)


def test_export_signatures_have_meaningful_names_and_explicit_specs(toy_export, toy):
    sigs = signatures.read_signatures(toy_export)
    assert set(sigs) == {"serving_default", "top_k", "query_embedding"}
    assert sigs["serving_default"].describe() == (
        f"serving_default(user_id: string [batch]) -> "
        f"{{ids: string [batch, {toy.MAX_K}], scores: float32 [batch, {toy.MAX_K}]}}")
    assert sigs["top_k"].inputs["k"].describe() == "int32 scalar"
    assert sigs["query_embedding"].outputs["embedding"].shape == (None, toy.DIM)


def test_versions_count_up_and_are_immutable(tmp_path, toy_index, toy):
    base = tmp_path / "m"
    (base / "notes").mkdir(parents=True)  # not a version: ignored
    assert serving.versions(base) == []
    first = serving.export(toy_index, base, query_signature=toy.USER_SIGNATURE)
    assert first == base / "1"
    assert serving.export(toy_index, base, version=7, query_signature=toy.USER_SIGNATURE) == base / "7"
    assert serving.export(toy_index, base, query_signature=toy.USER_SIGNATURE) == base / "8"
    assert serving.versions(base) == [1, 7, 8]
    with pytest.raises(ValueError, match=r"already exists.*next is 9"):
        serving.export(toy_index, base, version=7, query_signature=toy.USER_SIGNATURE)
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="positive integer"):
            serving.export(toy_index, base, version=bad, query_signature=toy.USER_SIGNATURE)
    assert sorted(os.listdir(base)) == ["1", "7", "8", "notes"]  # no temp dirs left behind


def test_failed_export_publishes_nothing(tmp_path, toy_index, toy):
    base = tmp_path / "m"
    with pytest.raises(ValueError, match=r"missing \['user_id'\], unknown \['user'\]"):
        serving.export(toy_index, base, query_signature=toy.USER_SIGNATURE,
                       warmup_queries={"user": ["u1"]})
    with pytest.raises(TypeError, match=r"warmup_queries\['user_id'\] has dtype int64.*strings"):
        serving.export(toy_index, base, query_signature=toy.USER_SIGNATURE,
                       warmup_queries={"user_id": [1, 2]})
    with pytest.raises(ValueError, match=r"shape \[1, 2\].*string \[batch\]"):
        serving.export(toy_index, base, query_signature=toy.USER_SIGNATURE,
                       warmup_queries={"user_id": [["u1", "u2"]]})
    assert not base.exists()  # rejected before anything was written
    # Without query_signature the inputs are only known once saved (save_index infers them from
    # the query model): the error comes after the save, and the temporary directory is removed.
    with pytest.raises(ValueError, match=r"do not match signature 'serving_default'.*"
                                         r"unknown \['user'\]"):
        serving.export(toy_index, base, warmup_queries={"user": ["u1"]})
    assert os.listdir(base) == []


def test_export_rejects_what_it_cannot_serve(tmp_path, toy_index):
    with pytest.raises(TypeError, match="towerkit index or a SavedModel directory"):
        serving.export(object(), tmp_path / "m")
    with pytest.raises(ValueError, match="not a SavedModel directory"):
        serving.export(str(tmp_path), tmp_path / "m")
    unbuilt = type(toy_index)(k=3)
    with pytest.raises(ValueError):
        serving.export(unbuilt, tmp_path / "m")
    assert os.listdir(tmp_path / "m") == []


def test_export_copies_an_existing_saved_model(tmp_path, toy_export):
    published = serving.export(str(toy_export), tmp_path / "copy", version=3)
    assert published == tmp_path / "copy" / "3"
    assert (signatures.read_signatures(published).keys()
            == signatures.read_signatures(toy_export).keys())
    assert (published / "assets.extra" / "tf_serving_warmup_requests").is_file()


def _listing(version_dir):
    return sorted((os.path.relpath(os.path.join(d, f), version_dir),
                   os.path.getsize(os.path.join(d, f)))
                  for d, _, files in os.walk(version_dir) for f in files)


def test_concurrent_reader_never_sees_a_partial_version(tmp_path, toy_index, toy):
    # A reader thread polls the base path like TF Serving's file system source: every time a
    # numbered directory is visible, it records its complete file listing (names and sizes).
    # Each listing ever seen must equal the final one: a version appears all at once.
    base = tmp_path / "m"
    base.mkdir()
    seen, stop, polls = {}, threading.Event(), [0]

    def poll():
        while True:
            last = stop.is_set()  # one more full pass after the last export returned
            for name in os.listdir(base):
                if name.isdigit():
                    seen.setdefault(name, set()).add(tuple(_listing(base / name)))
            polls[0] += 1
            if last:
                return

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for _ in range(3):
            serving.export(toy_index, base, query_signature=toy.USER_SIGNATURE,
                           warmup_queries={"user_id": toy.WARMUP_USERS})
    finally:
        stop.set()
        reader.join(timeout=30)
    assert polls[0] > 10  # the reader really ran while the exports were written
    assert sorted(seen) == ["1", "2", "3"]
    for name, listings in seen.items():
        assert listings == {tuple(_listing(base / name))}, name
        assert ("saved_model.pb" in dict(_listing(base / name)))
