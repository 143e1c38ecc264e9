"""CategoryAlignmentLoss: DAT's CAL against hand values and a NumPy oracle; edge cases."""

import numpy as np
import pytest

import towerkit  # noqa: F401
import tensorflow as tf

from towerkit.tasks import CategoryAlignmentLoss


def _oracle(x: np.ndarray, cats: np.ndarray, num_categories: int, min_count: int = 2) -> float:
    """The paper's sum_{k != major} ||C_major - C_k||_F^2 with unbiased covariances."""
    counts = np.bincount(cats[cats >= 0], minlength=num_categories)
    major = int(np.argmax(counts))
    if counts[major] < min_count:
        return 0.0
    cov = {k: np.cov(x[cats == k].astype(np.float64), rowvar=False)
           for k in range(num_categories) if counts[k] >= min_count}
    return float(sum(np.sum((cov[major] - c) ** 2) for k, c in cov.items() if k != major))


def test_hand_derived_value():
    # Category 0 (3 items, the major one), 1-d: values 0, 1, 2 -> mean 1, unbiased variance
    # ((-1)^2 + 0 + 1^2) / 2 = 1. Category 1 (2 items): 0, 4 -> mean 2, variance (4 + 4)/1 = 8.
    # Category 2 (1 item): skipped. Loss = (1 - 8)^2 = 49.
    x = tf.constant([[0.0], [1.0], [2.0], [0.0], [4.0], [9.0]])
    cats = tf.constant([0, 0, 0, 1, 1, 2])
    assert float(CategoryAlignmentLoss(3)(x, cats)) == pytest.approx(49.0)
    # 2-d: major 0 = {(0,0), (2,0), (0,2), (2,2)}: variances 4/3 each, covariance 0.
    # Category 1 = {(0,0), (1,1)}: all entries 0.5. Distance: (4/3-1/2)^2 * 2 + (0-1/2)^2 * 2.
    x = tf.constant([[0., 0.], [2., 0.], [0., 2.], [2., 2.], [0., 0.], [1., 1.]])
    cats = tf.constant([0, 0, 0, 0, 1, 1])
    expected = 2 * (4 / 3 - 0.5) ** 2 + 2 * 0.25
    assert float(CategoryAlignmentLoss(2)(x, cats)) == pytest.approx(expected, rel=1e-6)


def test_zero_for_identical_covariances_and_invariant_to_a_mean_shift():
    rng = np.random.default_rng(0)
    block = rng.normal(size=(5, 4)).astype(np.float32)
    # Category 1 is category 0 shifted by a constant: the same covariance -> loss 0.
    x = np.concatenate([block, block + 3.0])
    cats = np.array([0] * 5 + [1] * 5)
    assert float(CategoryAlignmentLoss(2)(x, cats)) == pytest.approx(0.0, abs=1e-5)
    # A shift of one category's mean leaves a non-zero loss unchanged.
    x = rng.normal(size=(40, 8)).astype(np.float32)
    cats = rng.integers(0, 4, size=40)
    cal = CategoryAlignmentLoss(4)
    base = float(cal(x, cats))
    assert base > 0
    shifted = x.copy()
    shifted[cats == 2] += rng.normal(size=8).astype(np.float32) * 10
    assert float(cal(shifted, cats)) == pytest.approx(base, rel=1e-4)


def test_singleton_and_empty_categories_are_finite_and_skipped():
    cal = CategoryAlignmentLoss(5)
    x = tf.Variable(np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32))
    # Major category 0 has 2 items; categories 1 and 3 one item each; 2 and 4 empty.
    cats = tf.constant([0, 1, 0, 3])
    with tf.GradientTape() as tape:
        loss = cal(x, cats)
    assert float(loss) == 0.0
    assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))
    # Every category a singleton (even the "major" one): 0, finite gradient.
    with tf.GradientTape() as tape:
        loss = cal(x, tf.constant([0, 1, 2, 3]))
    assert float(loss) == 0.0 and np.all(np.isfinite(tape.gradient(loss, x).numpy()))
    # -1 = no category: rows take no part.
    y = np.array([[0.], [2.], [5.], [7.], [100.]], np.float32)
    assert float(CategoryAlignmentLoss(2)(y, [0, 0, 1, 1, -1])) == pytest.approx(0.0)


def test_default_size_against_numpy_oracle_with_finite_gradients():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4096, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    # Imbalanced categories like MovieLens genres, some rare (singletons) and some absent.
    probabilities = np.array([0.3, 0.25, 0.2, 0.1, 0.1, 0.04] + [0.01 / 15] * 15)
    cats = rng.choice(21, size=4096, p=probabilities / probabilities.sum())
    cats[:3] = [17, 18, 19]
    cal = CategoryAlignmentLoss(21)
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = cal(variable, cats)
    assert float(loss) == pytest.approx(_oracle(x, cats, 21), rel=1e-4)
    assert np.all(np.isfinite(tape.gradient(loss, variable).numpy()))


def test_ties_go_to_the_smallest_id_and_min_count():
    x = np.array([[0.], [2.], [0.], [6.], [1.], [1.], [3.]], np.float32)
    cats = np.array([0, 0, 1, 1, 2, 2, 2])
    # Category 2 is the major one (3 items): var 4/3; cat 0 var 2, cat 1 var 18.
    expected = (4 / 3 - 2) ** 2 + (4 / 3 - 18) ** 2
    assert float(CategoryAlignmentLoss(3)(x, cats)) == pytest.approx(expected, rel=1e-6)
    # min_count=3 skips categories 0 and 1.
    assert float(CategoryAlignmentLoss(3, min_count=3)(x, cats)) == 0.0
    # A tie between 0 and 1 (2 items each): 0 is major -> (2 - 18)^2.
    assert float(CategoryAlignmentLoss(2)(x[:4], cats[:4])) == pytest.approx(256.0)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="num_categories must be"):
        CategoryAlignmentLoss(0)
    with pytest.raises(ValueError, match="min_count must be an int >= 2"):
        CategoryAlignmentLoss(3, min_count=1)
    with pytest.raises(TypeError, match="integer ids"):
        CategoryAlignmentLoss(3)(tf.zeros([2, 2]), tf.constant([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[batch, dim\]"):
        CategoryAlignmentLoss(3)(tf.zeros([2]), tf.constant([0, 1]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_categories=3"):
        CategoryAlignmentLoss(3)(tf.zeros([2, 2]), tf.constant([0, 3]))


def test_config_and_saved_model_round_trip(tmp_path):
    layer = CategoryAlignmentLoss(6, min_count=3, name="cal")
    again = CategoryAlignmentLoss.from_config(layer.get_config())
    assert (again.num_categories, again.min_count, again.name) == (6, 3, "cal")
    restored = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert isinstance(restored, CategoryAlignmentLoss) and restored.num_categories == 6

    module = tf.Module()
    module.layer = layer
    module.loss = tf.function(lambda x, c: layer(x, c), input_signature=[
        tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int64)])
    tf.saved_model.save(module, str(tmp_path / "cal"))
    loaded = tf.saved_model.load(str(tmp_path / "cal"))
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    c = rng.integers(0, 6, size=60)
    assert float(loaded.loss(x, c)) == pytest.approx(float(layer(x, c)), rel=1e-6)
    assert float(loaded.loss(x, c)) == pytest.approx(_oracle(x, c, 6, 3), rel=1e-4)
