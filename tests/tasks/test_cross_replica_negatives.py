"""Losses under `tf.distribute` with 2 replicas (2 logical CPU devices) vs one device.

The strategy runs in a subprocess: logical devices must be configured before TensorFlow
initializes, which other tests of the same pytest run may already have done in this process.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(r'''
    import json, sys
    import numpy as np
    import towerkit  # legacy Keras
    import tensorflow as tf
    import tensorflow_recommenders as tfrs
    from towerkit.tasks import Retrieval, SampledSoftmax

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {"replicas": strategy.num_replicas_in_sync}

    def on_replicas(fn, *batch):
        """Runs fn on the 2 replicas over the global batch; (sum of losses, sum of grads)."""
        data = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices(batch).batch(len(batch[0])))
        losses, grads = strategy.run(tf.function(fn), args=next(iter(data)))
        return (float(strategy.reduce("SUM", losses, axis=None)),
                [strategy.reduce("SUM", g, axis=None).numpy().tolist() for g in grads])

    # -- hand-checked in-batch softmax (queries and candidates one-hot, see the test) -------
    onehot = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], np.float32)
    ids = np.array([b"a", b"b", b"a", b"b"])
    for negatives in ("global", "per-replica"):
        for hits in (False, True):
            task = Retrieval(remove_accidental_hits=hits, negatives=negatives)
            def fn(q, c, i, task=task):
                return task(q, c, candidate_ids=i, compute_metrics=False), []
            out[f"onehot_{negatives}_{hits}"] = on_replicas(fn, onehot, onehot, ids)[0]

    # -- random embeddings, temperature, logQ, accidental hits: loss and gradients ----------
    rng = np.random.default_rng(0)
    users, items, dim, batch = 10, 6, 4, 12
    q_table = rng.normal(size=(users, dim)).astype(np.float32)
    c_table = rng.normal(size=(items, dim)).astype(np.float32)
    u = rng.integers(0, users, batch).astype(np.int64)
    v = rng.integers(0, items, batch).astype(np.int64)   # duplicates: accidental hits
    w = rng.uniform(0.5, 2.0, batch).astype(np.float32)
    counts = np.bincount(v, minlength=items) + 1
    item_names = [f"m{i}" for i in range(items)]
    v_str = np.array([item_names[i].encode() for i in v])

    def make(negatives):
        with strategy.scope():
            qv, cv = tf.Variable(q_table), tf.Variable(c_table)
            task = Retrieval(temperature=0.3, remove_accidental_hits=True,
                             sampling_vocabulary=item_names, sampling_counts=counts,
                             negatives=negatives)
        def fn(uu, vv, vs, ww):
            with tf.GradientTape() as tape:
                loss = task(tf.gather(qv, uu), tf.gather(cv, vv), candidate_ids=vs,
                            sample_weight=ww, compute_metrics=False)
            return loss, [tf.convert_to_tensor(g) for g in tape.gradient(loss, [qv, cv])]
        return qv, cv, task, fn

    for negatives in ("global", "per-replica"):
        out[f"random_{negatives}"] = on_replicas(make(negatives)[3], u, v, v_str, w)
    # Single device: the same task and batch, no strategy.
    qv, cv = tf.Variable(q_table), tf.Variable(c_table)
    task = Retrieval(temperature=0.3, remove_accidental_hits=True,
                     sampling_vocabulary=item_names, sampling_counts=counts)
    with tf.GradientTape() as tape:
        loss = task(tf.gather(qv, u), tf.gather(cv, v), candidate_ids=tf.constant(v_str),
                    sample_weight=w, compute_metrics=False)
    out["random_single"] = (float(loss), [tf.convert_to_tensor(g).numpy().tolist()
                                          for g in tape.gradient(loss, [qv, cv])])
    out["random_inputs"] = {"q": q_table.tolist(), "c": c_table.tolist(), "u": u.tolist(),
                            "v": v.tolist(), "w": w.tolist(), "counts": counts.tolist()}

    # -- full softmax over the catalogue (SampledSoftmax, mean over the GLOBAL batch) -------
    table = rng.normal(size=(7, dim)).astype(np.float32)
    target = rng.integers(1, 7, batch).astype(np.int64)
    def softmax_case(strategy_or_none):
        scope = strategy_or_none.scope() if strategy_or_none else tf.name_scope("single")
        with scope:
            qv, tv = tf.Variable(q_table), tf.Variable(table)
        task = SampledSoftmax(temperature=0.5)
        def fn(uu, tt):
            with tf.GradientTape() as tape:
                loss = task(tf.gather(qv, uu), tt, tv)
            return loss, [tf.convert_to_tensor(g) for g in tape.gradient(loss, [qv, tv])]
        return fn
    out["full_distributed"] = on_replicas(softmax_case(strategy), u, target)
    fn = softmax_case(None)
    loss, grads = fn(tf.constant(u), tf.constant(target))
    out["full_single"] = (float(loss), [g.numpy().tolist() for g in grads])
    # Sampled softmax with the same negatives on every replica (fixed negative_ids).
    negatives_ids = tf.constant([1, 2, 3, 5], tf.int64)
    def sampled(strategy_or_none):
        scope = strategy_or_none.scope() if strategy_or_none else tf.name_scope("single")
        with scope:
            qv, tv = tf.Variable(q_table), tf.Variable(table)
        task = SampledSoftmax(num_negatives=4)
        def fn(uu, tt):
            with tf.GradientTape() as tape:
                loss = task(tf.gather(qv, uu), tt, tv, negative_ids=negatives_ids)
            return loss, [tf.convert_to_tensor(g) for g in tape.gradient(loss, [qv, tv])]
        return fn
    out["sampled_distributed"] = on_replicas(sampled(strategy), u, target)
    loss, grads = sampled(None)(tf.constant(u), tf.constant(target))
    out["sampled_single"] = (float(loss), [g.numpy().tolist() for g in grads])
    out["softmax_inputs"] = {"table": table.tolist(), "target": target.tolist()}

    # -- a TFRS ranking task (Keras BCE, mean over the batch) wrapped by GlobalBatchLoss -----
    from towerkit.tasks import GlobalBatchLoss, label_constraint
    labels = rng.integers(0, 2, batch).astype(np.float32)
    def ranking(strategy_or_none):
        scope = strategy_or_none.scope() if strategy_or_none else tf.name_scope("single")
        with scope:
            qv = tf.Variable(q_table)
            task = tfrs.tasks.Ranking(loss=tf.keras.losses.BinaryCrossentropy(from_logits=True))
        GlobalBatchLoss.wrap_model(type("M", (), {"submodules": [task]})())
        def fn(uu, yy, ww):
            with tf.GradientTape() as tape:
                logits = tf.reduce_sum(tf.gather(qv, uu), axis=1, keepdims=True)
                loss = task(labels=yy[:, None], predictions=logits, sample_weight=ww,
                            compute_metrics=False)
                loss += label_constraint(tf.sigmoid(logits[:, 0]), yy, weight=0.5)
            return loss, [tf.convert_to_tensor(tape.gradient(loss, qv))]
        return fn
    out["ranking_distributed"] = on_replicas(ranking(strategy), u, labels, w)
    loss, grads = ranking(None)(tf.constant(u), tf.constant(labels), tf.constant(w))
    logits = (q_table[u]).sum(1)
    bce = np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))
    oracle = (bce * w).sum() / batch + 0.5 * np.maximum(1 / (1 + np.exp(-logits)) - labels,
                                                         0).mean()
    out["ranking_single"] = (float(loss), [g.numpy().tolist() for g in grads])
    out["ranking_oracle"] = float(oracle)

    # -- end to end: one Keras fit step (the optimizer sums the replicas' gradients) --------
    class Toy(tfrs.Model):
        def __init__(self):
            super().__init__()
            self.q = tf.keras.layers.Embedding(users, dim, embeddings_initializer=
                                               tf.keras.initializers.Constant(q_table))
            self.c = tf.keras.layers.Embedding(items, dim, embeddings_initializer=
                                               tf.keras.initializers.Constant(c_table))
            self.task = Retrieval(temperature=0.3, remove_accidental_hits=True)
        def compute_loss(self, f, training=False):
            return self.task(self.q(f["u"]), self.c(f["v"]), candidate_ids=f["v"],
                             compute_metrics=False)
    def fit_once(strategy_or_none):
        scope = strategy_or_none.scope() if strategy_or_none else tf.name_scope("single")
        with scope:
            model = Toy()
            model.compile(optimizer=tf.keras.optimizers.SGD(0.1))
        data = tf.data.Dataset.from_tensor_slices({"u": u, "v": v}).batch(batch)
        history = model.fit(data, epochs=1, verbose=0)
        return history.history["loss"][-1], model.q.embeddings.numpy(), model.c.embeddings.numpy()
    loss_d, q_d, c_d = fit_once(strategy)
    loss_s, q_s, c_s = fit_once(None)
    out["fit"] = {"loss_distributed": loss_d, "loss_single": loss_s,
                  "max_abs_weight_diff": float(max(np.abs(q_d - q_s).max(),
                                                   np.abs(c_d - c_s).max())),
                  "max_abs_update": float(max(np.abs(q_s - q_table).max(),
                                              np.abs(c_s - c_table).max()))}
    print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def result():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=240, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_two_replicas_are_in_sync(result):
    assert result["replicas"] == 2


def test_hand_checked_global_and_per_replica_negatives(result):
    # Queries = candidates = [e0, e1, e0, e1] (one-hot), temperature 1; replica 0 holds rows
    # 0-1, replica 1 rows 2-3. Each query scores 1 against the e-same candidates, 0 otherwise.
    # Global negatives: query 0 sees scores [1, 0, 1, 0] -> logsumexp - 1 = log(2e + 2) - 1
    #   = log(2 + 2/e); the 4 queries are alike: 4 log(2 + 2/e) = 4.02573.
    # Per replica: query 0 sees [1, 0] only -> log(e + 1) - 1 = log(1 + 1/e): 4 log(1 + 1/e)
    #   = 1.25305 (TFRS's behaviour: each replica's own candidates).
    # With ids [a, b, a, b] and accidental-hit removal: globally, query 0's twin c2 (id a)
    #   is masked -> [1, 0, -inf, 0] -> log(1 + 2/e): 4 log(1 + 2/e) = 2.19942; per replica
    #   no twin is in the same replica: 1.25305 again.
    e = np.e
    assert result["onehot_global_False"] == pytest.approx(4 * np.log(2 + 2 / e), rel=1e-5)
    assert result["onehot_global_True"] == pytest.approx(4 * np.log(1 + 2 / e), rel=1e-5)
    assert result["onehot_per-replica_False"] == pytest.approx(4 * np.log(1 + 1 / e), rel=1e-5)
    assert result["onehot_per-replica_True"] == pytest.approx(4 * np.log(1 + 1 / e), rel=1e-5)


def _oracle(inputs, halves):
    """NumPy in-batch softmax with temperature 0.3, logQ, accidental hits, weights, summed;
    `halves`: score each half of the batch against its own half only (per replica)."""
    q, c = np.array(inputs["q"])[inputs["u"]], np.array(inputs["c"])[inputs["v"]]
    v, w = np.array(inputs["v"]), np.array(inputs["w"])
    p = np.array(inputs["counts"], float) / np.sum(inputs["counts"])
    n = len(v)
    blocks = [range(0, n // 2), range(n // 2, n)] if halves else [range(n)]
    total = 0.0
    for block in blocks:
        idx = np.array(block)
        logits = q[idx] @ c[idx].T / 0.3 - np.log(p[v[idx]])[None, :]
        same = v[idx][:, None] == v[idx][None, :]
        logits = np.where(same & ~np.eye(len(idx), dtype=bool), -np.inf, logits)
        m = logits.max(axis=1)
        lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=1))
        total += float(np.sum(w[idx] * (lse - np.diag(logits))))
    return total


def test_global_negatives_equal_single_device_loss_and_gradients(result):
    single_loss, single_grads = result["random_single"]
    loss, grads = result["random_global"]
    assert single_loss == pytest.approx(_oracle(result["random_inputs"], halves=False), rel=1e-5)
    assert loss == pytest.approx(single_loss, rel=1e-5)
    for g, g1 in zip(grads, single_grads):
        np.testing.assert_allclose(g, g1, rtol=1e-4, atol=1e-5)


def test_per_replica_negatives_give_the_per_replica_loss(result):
    loss, grads = result["random_per-replica"]
    expected = _oracle(result["random_inputs"], halves=True)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert abs(loss - result["random_single"][0]) > 0.5  # fewer negatives: another loss
    assert not np.allclose(grads[1], result["random_single"][1][1], atol=1e-3)


def test_full_and_sampled_softmax_use_the_global_mean(result):
    for case in ("full", "sampled"):
        single_loss, single_grads = result[f"{case}_single"]
        loss, grads = result[f"{case}_distributed"]
        assert loss == pytest.approx(single_loss, rel=1e-5), case
        for g, g1 in zip(grads, single_grads):
            np.testing.assert_allclose(g, g1, rtol=1e-4, atol=1e-6)
    # A per-replica mean would have summed to twice the single-device gradient; check the
    # gradients are not trivially zero.
    assert max(abs(x) for row in result["full_single"][1][1] for x in row) > 1e-3


def test_mean_reduced_ranking_loss_uses_the_global_mean(result):
    # Keras' BCE is a mean over the batch (sample weights weigh, the count divides); the AITM
    # label constraint a plain mean: both over the GLOBAL batch on 2 replicas.
    single_loss, single_grads = result["ranking_single"]
    assert single_loss == pytest.approx(result["ranking_oracle"], rel=1e-5)
    loss, grads = result["ranking_distributed"]
    assert loss == pytest.approx(single_loss, rel=1e-5)
    np.testing.assert_allclose(grads[0], single_grads[0], rtol=1e-4, atol=1e-6)


def test_keras_fit_step_on_two_replicas_equals_one_device(result):
    fit = result["fit"]
    assert fit["loss_distributed"] == pytest.approx(fit["loss_single"], rel=1e-5)
    assert fit["max_abs_update"] > 1e-3            # the step moved the weights
    assert fit["max_abs_weight_diff"] < 1e-5       # by the same amount on 2 replicas


def test_negatives_option_round_trips_and_is_checked():
    import towerkit  # noqa: F401
    from towerkit.tasks import Retrieval
    from towerkit.tasks.retrieval import default_negatives, set_default_negatives

    task = Retrieval(negatives="per-replica")
    assert Retrieval.from_config(task.get_config()).negatives == "per-replica"
    with pytest.raises(ValueError, match="negatives must be one of"):
        Retrieval(negatives="cross")
    with pytest.raises(ValueError, match="negatives must be one of"):
        set_default_negatives("all")
    assert default_negatives() == "global"
