"""Cost of the soundness preflight that ``PrivateKerasModel.fit`` runs before reserving any budget.

For each model: the time of ``preflight.run_preflight`` alone (best of 3, each on a freshly compiled model,
so nothing is cached), next to the time of the first ``fit`` call's set-up without it (building and tracing
the training step), measured in the same process. Run: ``python bench/bench_preflight.py``.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import tensorflow as tf
from bench_model import make_layers

import op_tensorflow as ot
from op_tensorflow import preflight
from op_tensorflow.arguments import per_example_loss
from op_tensorflow.registry import make_registry

warnings.filterwarnings("ignore", category=ot.PrivacyWarning)
L = tf.keras.layers


def blog_convnet():
    return tf.keras.Sequential(make_layers("conv"))  # the same convnet as bench_model.py's "conv" workload


def shared_mlp():
    inputs = L.Input((72,))
    dense = L.Dense(72, activation="tanh")
    return tf.keras.Model(inputs, L.Dense(1)(dense(dense(inputs))))


def loader_for(features: int, shape):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(4000, features)), columns=[f"x{i}" for i in range(features)])
    df["y"] = rng.normal(size=4000)
    pdf = ot.PrivateDataFrame(df, budget=None)
    return ot.PrivateDataLoader(pdf[list(df.columns[:-1])], pdf["y"], 32, seed=0, feature_shape=shape)


def time_preflight(build, loader, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        model = build()
        start = time.perf_counter()
        preflight.run_preflight(model, per_example_loss("mse"), loader, make_registry())
        best = min(best, time.perf_counter() - start)
    return best


def time_fit_setup(build, loader) -> float:
    """First fit's set-up without the preflight: build and trace the training step (not run)."""
    dp = ot.PrivateKerasModel(build(), 1.0, 1.1)
    dp.compile(optimizer="adam", loss="mse")
    dp._ensure_built(loader.input_shape)
    dp._plan = preflight.ClippingPlan()
    start = time.perf_counter()
    dp._build_train_chunk(loader).get_concrete_function()
    return time.perf_counter() - start


def main() -> None:
    rows = [
        ("blog convnet (LayerNorm), input (12, 6)", blog_convnet, loader_for(72, (12, 6))),
        ("MLP with a shared Dense (per-example path)", shared_mlp, loader_for(72, None)),
    ]
    print("| model | preflight (s) | fit set-up without it (s) | ratio |")
    print("|---|---:|---:|---:|")
    for name, build, loader in rows:
        pre, setup = time_preflight(build, loader), time_fit_setup(build, loader)
        print(f"| {name} | {pre:.2f} | {setup:.2f} | {pre / setup:.2f} |")


if __name__ == "__main__":
    main()
