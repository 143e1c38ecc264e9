"""towerkit.serving.check and `towerkit check-export`: what stock TF Serving can load and run."""

import argparse

import pytest

import towerkit  # noqa: F401
import tensorflow as tf
from towerkit import serving
from towerkit.cli import check_export
from towerkit.serving import signatures


def _cli(path, *flags):
    parser = argparse.ArgumentParser()
    check_export.add_parser(parser.add_subparsers())
    return check_export.run(parser.parse_args(["check-export", str(path), *flags]))


@pytest.fixture(scope="module")
def scann_export(tmp_path_factory, toy):
    """A towerkit ScaNN index (ScaNN's custom ops in the graph) published with export()."""
    from towerkit.index import ScaNN

    ids, embeddings = toy.make_catalogue()
    index = ScaNN(toy.make_query_model(), k=toy.MAX_K, num_leaves=4, num_leaves_to_search=2,
                  num_reordering_candidates=20).index(embeddings, identifiers=ids)
    with pytest.warns(RuntimeWarning, match="custom ops"):  # save_index warns, export proceeds
        return serving.export(index, tmp_path_factory.mktemp("scann") / "m",
                              query_signature=toy.USER_SIGNATURE)


def test_check_flags_scann_ops_as_not_servable(scann_export):
    report = serving.check(scann_export)
    assert not report.servable
    assert "Scann>ScannSearchBatched" in report.non_stock_ops
    assert all(op.startswith("Scann>") for op in report.non_stock_ops)
    # The clean process really failed to load it, and says why.
    assert report.load_error is not None and "Scann" in report.load_error
    assert any("ops not in stock TensorFlow" in p for p in report.problems)
    assert any("no warmup records" in w for w in report.warnings)
    assert "Stock tensorflow/serving can load it: NO" in report.format()


def test_cli_reports_a_servable_export(toy_export, toy, capsys):
    assert _cli(toy_export.parent) == 0  # base path -> latest version
    out = capsys.readouterr().out
    assert f"SavedModel: {toy_export}" in out
    assert "    input  user_id: string [batch]" in out
    assert f"    output ids: string [batch, {toy.MAX_K}]" in out
    assert "    input  k: int32 scalar" in out
    assert "Non-stock ops: none" in out
    assert f"loaded; {len(toy.WARMUP_USERS)} warmup request(s) ran" in out
    assert out.rstrip().endswith("Stock tensorflow/serving can load it: yes")


def test_python_only_ops_are_not_servable_and_missing_warmup_is_a_warning(tmp_path, capsys):
    module = tf.Module()
    module.serve = tf.function(
        lambda x: {"y": tf.py_function(lambda v: v * 2.0, [x], tf.float32)},
        input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.serve})
    assert "EagerPyFunc" in signatures.read_op_names(tmp_path / "1")
    assert _cli(tmp_path) == 1
    out = capsys.readouterr().out
    assert "Non-stock ops: EagerPyFunc" in out
    assert "TF Serving has no Python interpreter" in out
    # TensorFlow itself loads it (the op is registered), and it has no warmup file: a warning.
    assert "Clean TensorFlow process: loaded; 0 warmup request(s) ran" in out
    assert "Warning: no warmup records" in out


def test_not_an_export_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ValueError, match="does not exist"):
        serving.check(tmp_path / "missing")
    with pytest.raises(ValueError, match="neither a SavedModel"):
        serving.check(tmp_path)
    (tmp_path / "4").mkdir()
    (tmp_path / "4" / "saved_model.pb").write_bytes(b"\x08\x96\x01 this is not a proto \xff")
    with pytest.raises(ValueError, match="corrupt.*Re-export"):
        serving.check(tmp_path)
    assert _cli(tmp_path) == 2
    assert "corrupt" in capsys.readouterr().err
