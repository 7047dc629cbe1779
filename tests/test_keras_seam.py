"""Which Keras the engine uses is decided once, and the other Keras is refused with the reason."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import KERAS3

import op_tensorflow as ot
from op_tensorflow import keras_seam, stack

TF_2_16 = tuple(int(p) for p in tf.__version__.split(".")[:2]) >= (2, 16)
needs_both = pytest.mark.skipif(not TF_2_16, reason="TF 2.15 has one Keras (tf_keras needs TF >= 2.16)")


def python(code: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"} | env | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=300)


def test_the_seam_reports_the_keras_behind_tf_keras():
    assert keras_seam.KERAS3 == tf.keras.Model.__module__.startswith("keras.src.models")
    assert keras_seam.KERAS_PACKAGE == tf.keras.Model.__module__.split(".")[0]
    assert tf.__version__ in keras_seam.keras_description()


@needs_both
@pytest.mark.parametrize("legacy", ["0", "1"])
def test_the_environment_variable_chooses_the_keras(legacy):
    out = python(
        "from op_tensorflow import keras_seam; print(keras_seam.KERAS3, keras_seam.KERAS_PACKAGE)",
        TF_USE_LEGACY_KERAS=legacy,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == (["True", "keras"] if legacy == "0" else ["False", "tf_keras"])


@needs_both
def test_setting_the_variable_after_tf_keras_was_used_is_refused():
    code = "\n".join(
        [
            "import os, tensorflow as tf",
            "tf.keras.Model",
            "os.environ['TF_USE_LEGACY_KERAS'] = '1'",
            "import op_tensorflow.model",
        ]
    )
    out = python(code)
    assert out.returncode != 0
    assert "TF_USE_LEGACY_KERAS=1 is set, but tf.keras is already Keras 3" in out.stderr
    assert "before importing tensorflow" in out.stderr


@needs_both
def test_a_model_of_the_other_keras_is_refused_with_the_reason():
    if KERAS3:
        import tf_keras as other

        expected = "built with tf_keras \\(Keras 2\\).*TF_USE_LEGACY_KERAS=1"
    else:
        import keras as other

        expected = "built with Keras 3.*unset TF_USE_LEGACY_KERAS"
    model = other.Sequential([other.Input((2,)), other.layers.Dense(1)])
    with pytest.raises(TypeError, match=expected):
        ot.PrivateKerasModel(model)


def test_a_model_of_this_keras_is_accepted_and_anything_else_is_named():
    ot.PrivateKerasModel(tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)]))
    with pytest.raises(TypeError, match="must be a tf.keras Model.*got ndarray"):
        ot.PrivateKerasModel(np.zeros(3))


def test_stack_prints_the_keras_and_checks_the_tensorflow_version():
    out = python(
        "from op_tensorflow import stack; stack.main([])", **({"TF_USE_LEGACY_KERAS": "1"} if not KERAS3 else {})
    )
    assert out.returncode == 0, out.stderr
    assert f"TensorFlow {tf.__version__}" in out.stdout
    assert ("tf.keras is Keras 3" in out.stdout) == KERAS3
    assert stack.main(["--expect-tensorflow", tf.__version__]) == 0
    assert stack.main(["--expect-tensorflow", "0.0.1"]) == 1


def test_the_imp_shim_locates_packages_as_reticulate_expects(tmp_path):
    namespace: dict = {}
    exec(compile(stack.IMP_SHIM, "imp.py", "exec"), namespace)
    _, path, _ = namespace["find_module"]("numpy")
    assert path == os.path.dirname(np.__file__)
    with pytest.raises(ImportError):
        namespace["find_module"]("no_such_module_here")
    if sys.version_info < (3, 12):
        assert stack.install_imp_shim() is None  # the real imp exists: nothing is installed
