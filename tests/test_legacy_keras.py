"""The legacy-Keras switch: towerkit must bind tf.keras to tf-keras 2.x or fail loudly."""

import os
import subprocess
import sys
import textwrap


def _run(code: str, **env_overrides) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("TF_USE_LEGACY_KERAS", None)
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=env, timeout=300,
    )


def test_import_switches_tf_keras_to_legacy():
    proc = _run("""
        import towerkit, tensorflow as tf, tensorflow_recommenders as tfrs
        import tf_keras; print(tf.keras.__name__, tf_keras.__version__)
    """)
    assert proc.returncode == 0, proc.stderr
    module, version = proc.stdout.strip().splitlines()[-1].split()
    assert module.startswith("tf_keras")
    assert version.startswith("2.20.")


def test_too_late_raises_clear_import_error():
    proc = _run("""
        import tensorflow as tf
        _ = tf.keras.layers.Dense  # binds tf.keras to Keras 3
        try:
            import towerkit
        except ImportError as e:
            print("IMPORT_ERROR:", e)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "IMPORT_ERROR:" in proc.stdout
    assert "TF_USE_LEGACY_KERAS=1" in proc.stdout


def test_tf_imported_but_keras_unresolved_still_works():
    proc = _run("""
        import tensorflow as tf
        import towerkit
        import tf_keras; print(tf.keras.__name__, tf_keras.__version__)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("tf_keras")


def test_explicitly_disabled_env_raises():
    proc = _run("""
        try:
            import towerkit
        except ImportError as e:
            print("IMPORT_ERROR:", e)
    """, TF_USE_LEGACY_KERAS="0")
    assert "IMPORT_ERROR:" in proc.stdout
    assert "TF_USE_LEGACY_KERAS" in proc.stdout
