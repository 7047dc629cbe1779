"""Markers for what only one Keras can do; each marked test has its counterpart on the other Keras."""

import pytest

from op_tensorflow import keras_seam

KERAS3 = keras_seam.KERAS3

keras2_only = pytest.mark.skipif(KERAS3, reason="Keras 2 only (its counterpart runs on Keras 3)")
keras3_only = pytest.mark.skipif(not KERAS3, reason="Keras 3 only (its counterpart runs on Keras 2)")
