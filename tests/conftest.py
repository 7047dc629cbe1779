"""Markers for what only one Keras can do; each marked test has its counterpart on the other Keras.

Also splits the CPU into 2 logical devices, before TensorFlow initializes its devices, for the
MirroredStrategy tests (tests/test_distributed.py); one-device code runs on the first.
"""

import pytest
import tensorflow as tf

try:
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
except RuntimeError:  # devices already initialized (e.g. by a plugin): test_distributed.py says so
    pass

from op_tensorflow import keras_seam  # noqa: E402

KERAS3 = keras_seam.KERAS3

keras2_only = pytest.mark.skipif(KERAS3, reason="Keras 2 only (its counterpart runs on Keras 3)")
keras3_only = pytest.mark.skipif(not KERAS3, reason="Keras 3 only (its counterpart runs on Keras 2)")
