"""`mt_ebr` end to end on movielens/100k-ratings: train, evaluate, export, flags (short run)."""

import json

import numpy as np
import pytest
import tensorflow as tf

import towerkit  # noqa: F401
from towerkit.cli.main import main
from towerkit.evaluation import distinct_categories
from towerkit.index.cluster_quotas import cluster_quotas
from towerkit.recipes import load_run, make_run_config
from towerkit.recipes.mt_ebr import MultiTaskEBRRecipe
from towerkit.recipes.sequential import load_protocol
from towerkit.serving import clean_process

SMALL = ["--epochs", "1", "--embedding-dim", "16", "--num-blocks", "1", "--batch-size", "1024",
         "--learning-rate", "0.003"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mt_ebr") / "run"
    assert main(["train", "--model", "mt_ebr", "--dataset", "movielens/100k-ratings",
                 "--seed", "1", "--out", str(out), *SMALL]) == 0
    return out


def test_evaluate_reports_accuracy_and_diversity_of_the_quota_merge(run_dir, tmp_path, capsys):
    capsys.readouterr()
    dump = tmp_path / "top.npz"
    assert main(["evaluate", str(run_dir), "--split", "valid", "--json",
                 "--dump-topn", str(dump)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("recall@20", "recall@50", "hr@50", "ndcg@20", "ndcg@50",
                "distinct_clusters@50", "distinct_genres@50"):
        assert key in metrics
    assert metrics["num_clusters"] == 18 and metrics["alpha"] == 1.0
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["recall@50"] == pytest.approx(trained["valid_recall@50"])
    assert metrics["recall@50"] > 0.1        # popularity: 0.156 on valid; one tiny epoch
    # Independent check of the lists: per user, the clusters of the 50 items are exactly the
    # NumPy quotas of the model's intent, and the diversity is recomputed from them.
    recipe, _ = load_run(run_dir)
    _, protocol, model = recipe.restore(run_dir)
    topn = recipe.top_n(model, protocol, "valid")
    assert len(np.load(dump)["topn_item_id"]) == len(topn)
    intent = recipe.query_outputs(model, protocol, "valid")["intent"]
    quotas = cluster_quotas(intent, 50, 1.0, model.clusters.sizes())
    counts = np.stack([np.bincount(model.item_clusters[row], minlength=18) for row in topn])
    np.testing.assert_array_equal(counts, quotas)
    assert metrics["distinct_clusters@50"] == pytest.approx((quotas > 0).sum(1).mean())
    # alpha = 0: equal quotas (50 over 18 clusters: 14 get 3, 4 get 2), so every cluster shows.
    equal = recipe.top_n(model, protocol, "valid", alpha=0.0)
    assert distinct_categories(equal, model.item_clusters) == 18.0
    assert distinct_categories(equal, model.item_clusters) >= metrics["distinct_clusters@50"]


def test_export_is_one_saved_model_equal_to_in_process(run_dir, tmp_path, capsys):
    capsys.readouterr()
    base = tmp_path / "serve"
    # The portable kind here, in a TensorFlow-only process; BruteForce and Annoy exports are
    # checked in tests/index/test_clustered_index.py.
    assert main(["export", str(run_dir), "--index", "portable", "--k", "50",
                 "--model-base-path", str(base), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["class"] == "ClusteredIndex" and summary["custom_ops"] == []
    recipe, config = load_run(run_dir)
    inputs = recipe.index_inputs(run_dir)
    model, protocol = inputs.query_model.model, load_protocol(config)
    queries = inputs.sample_queries
    run = clean_process.run_saved_model(summary["path"], queries, warmup=True)
    assert run.warmup_requests == len(queries["history"])
    # In-process: the recipe's own top-50 for the same (test) users, as movie ids.
    test = protocol.split("test")
    rows = slice(0, len(queries["history"]))
    out = model.query({"history": tf.constant(test.history[rows])})
    index = recipe.clustered_index(model, 1.0)
    _, items = index({k: v.numpy() for k, v in out.items()})
    np.testing.assert_array_equal(run.outputs["ids"].astype(bytes),
                                  protocol.item_ids[items.numpy()].astype(bytes))
    assert run.outputs["known_query"].all()
    # `towerkit recommend` serves the export like any sequence export.
    capsys.readouterr()
    assert main(["recommend", summary["path"], "--history", "50,181,1", "-k", "5"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) >= 5


def test_flags_are_validated_before_any_work(tmp_path, capsys):
    recipe = MultiTaskEBRRecipe()

    def config(**params):
        return make_run_config("mt_ebr", "movielens/100k-ratings", params=params)

    with pytest.raises(ValueError, match="alpha"):
        recipe.validate_config(config(alpha=-0.5))
    with pytest.raises(ValueError, match="--num-clusters applies to --clusters kmeans"):
        recipe.validate_config(config(num_clusters=4))
    with pytest.raises(ValueError, match=">= 2"):
        recipe.validate_config(config(clusters="kmeans", num_clusters=1))
    with pytest.raises(ValueError, match="--clusters"):
        recipe.validate_config(config(clusters="topics"))
    with pytest.raises(ValueError, match="--loss sampled"):
        recipe.validate_config(config(loss="sampled"))
    recipe.validate_config(config(clusters="kmeans", num_clusters=6, alpha=0.0))
    capsys.readouterr()
    assert main(["train", "--model", "mt_ebr", "--clusters", "genres", "--num-clusters", "4",
                 "--out", str(tmp_path / "x")]) != 0
    assert "--num-clusters applies" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_kmeans_clusters_of_the_catalogue_are_a_partition():
    from towerkit.recipes.mt_ebr import item_clusters

    protocol = load_protocol(make_run_config("mt_ebr", "movielens/100k-ratings"))
    params = MultiTaskEBRRecipe.resolve_params({"params": {"clusters": "kmeans",
                                                           "num_clusters": 8}})
    clusters = item_clusters(params, protocol)
    assert clusters.num_clusters == 8 and clusters.num_items == protocol.num_items
    assert clusters.sizes().sum() == protocol.num_items and clusters.sizes().min() >= 1
    np.testing.assert_array_equal(item_clusters(params, protocol).assignments,
                                  clusters.assignments)   # deterministic
    genres = item_clusters(MultiTaskEBRRecipe.resolve_params({"params": {}}), protocol)
    assert genres.num_clusters == 18 and genres.names[0] == "Action"
