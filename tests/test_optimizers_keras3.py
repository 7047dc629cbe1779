"""Keras 3: TF Privacy's optimizer names refuse to build, pointing to PrivateKerasModel (Keras 2: test_optimizers)."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import keras3_only

import op_tensorflow as ot

pytestmark = keras3_only

NAMES = [
    "DPKerasSGDOptimizer",
    "DPKerasAdamOptimizer",
    "DPKerasAdagradOptimizer",
    "DPAdamGaussianOptimizer",
    "DPGradientDescentGaussianOptimizer",
]


@pytest.mark.parametrize("name", NAMES)
def test_dp_optimizer_names_refuse_keras3_with_the_way_out(name):
    with pytest.raises(RuntimeError, match=f"{name} needs Keras 2.*PrivateKerasModel.*TF_USE_LEGACY_KERAS=1"):
        getattr(ot, name)(l2_norm_clip=1.0, noise_multiplier=1.1, num_microbatches=1, learning_rate=0.01)


def test_the_way_out_trains_on_keras3():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    frame["y"] = frame.a - frame.b
    bounds = {c: (-5.0, 5.0) for c in ["a", "b", "c"]} | {"y": (-10.0, 10.0)}
    pdf = ot.PrivateDataFrame(frame, metadata=bounds, budget=ot.PrivacyBudget(10.0, 1e-5))
    loader = ot.PrivateDataLoader(pdf[["a", "b", "c"]], pdf["y"], 20, seed=0)
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1)])
    assert isinstance(model, tf.keras.Model) and tf.keras.Model.__module__.startswith("keras.")
    dp = ot.PrivateKerasModel(model, l2_norm_clip=1.0, noise_multiplier=1.1, seed=0)
    dp.compile(optimizer=tf.keras.optimizers.Adam(0.05), loss="mse")
    history = dp.fit(loader, epochs=2, verbose=0)
    assert len(history.history["epsilon"]) == 2 and pdf.budget.spent() > 0
