"""Data-loader speed: Poisson sampling against a plain Keras training step, in one process.

Run: ``.venv/bin/python bench/bench_loader.py``. The seed guide's MLP (Dense 16 relu, Dense 8
relu, Dense 1 sigmoid; SGD; MSE) on 100 000 rows x 2 features, batch size 256. Measures:

(a) seconds per non-private Keras training step: ``model.fit`` on a ``tf.data`` dataset of the
    same rows batched 256 (fixed size), steady-state epoch time / steps (the baseline);
(b) seconds per batch that ``PrivateDataLoader._epoch_batches`` produces (host-side Poisson
    sampling and gather only);
(c) seconds per step when plain ``model.fit`` consumes ``PrivateDataLoader._dataset``
    (sampling + ``tf.data.Dataset.from_generator`` + the same Keras step);
(d) seconds per batch of iterating ``_dataset`` alone (sampling + tf.data hand-off, no model);
(e) as (b) on 20x the rows (2 000 000), same batch size: per-step cost must not grow with n.

Prints every time and the ratios b/a (target < 0.10) and c/a.
"""

import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

from op_tensorflow.frame import PrivateDataFrame  # noqa: E402
from op_tensorflow.loader import PrivateDataLoader  # noqa: E402

N_ROWS, BATCH = 100_000, 256
REPEAT = 3


def seed_model() -> tf.keras.Model:
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Dense(16, activation="relu", input_shape=(2,)),
            tf.keras.layers.Dense(8, activation="relu"),
            tf.keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=0.01), loss="mse")
    return model


def best_of(fn, repeat=REPEAT) -> float:
    best = float("inf")
    for _ in range(repeat):
        tic = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - tic)
    return best


def main():
    warnings.simplefilter("ignore")
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_ROWS, 2)).astype(np.float32)
    y = (x.sum(axis=1) + rng.normal(scale=0.5, size=N_ROWS) > 0).astype(np.float32)
    pdf = PrivateDataFrame(pd.DataFrame({"feature1": x[:, 0], "feature2": x[:, 1], "target": y}), budget=(10.0, 1e-7))
    loader = PrivateDataLoader(pdf[["feature1", "feature2"]], pdf["target"], BATCH, seed=0)
    model = seed_model()

    # (a) baseline: plain Keras steps on fixed-size batches.
    fixed = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH, drop_remainder=True).prefetch(2)
    fixed_steps = N_ROWS // BATCH
    model.fit(fixed, epochs=1, verbose=0)  # trace + warm-up
    a = best_of(lambda: model.fit(fixed, epochs=1, verbose=0)) / fixed_steps

    # (b) host-side sampling + gather only.
    steps = loader.steps_in_epoch(0)
    b = best_of(lambda: sum(1 for _ in loader._epoch_batches(0))) / steps

    # (c) plain Keras fit consuming the loader's dataset (one epoch of Poisson steps per fit).
    model.fit(loader._dataset(1), epochs=1, verbose=0)  # trace for the None batch dimension
    c = best_of(lambda: model.fit(loader._dataset(1), epochs=1, verbose=0)) / loader.total_steps(1)

    # (d) the dataset alone.
    d = best_of(lambda: sum(1 for _ in loader._dataset(1))) / loader.total_steps(1)

    # (e) O(batch), not O(n): the same batch size on 20x the rows.
    big_n = 20 * N_ROWS
    big_x = rng.normal(size=(big_n, 2))
    big = PrivateDataFrame(pd.DataFrame({"f1": big_x[:, 0], "f2": big_x[:, 1], "t": big_x[:, 0] > 0}), budget=(1, 1e-8))
    big_loader = PrivateDataLoader(big[["f1", "f2"]], big["t"], BATCH, seed=0)
    e = best_of(lambda: sum(1 for _ in big_loader._epoch_batches(0)), 1) / big_loader.steps_in_epoch(0)

    print(f"rows={N_ROWS} features=2 batch={BATCH} q={loader.sampling_rate:g} steps/epoch={steps} (best of {REPEAT})")
    print(f"{'measure':<60} {'s/step':>10}")
    print(f"{'(a) Keras fit step, fixed batches of 256 (baseline)':<60} {a:>10.2e}")
    print(f"{'(b) loader._epoch_batches: sample + gather one batch':<60} {b:>10.2e}")
    print(f"{'(c) Keras fit step consuming loader._dataset':<60} {c:>10.2e}")
    print(f"{'(d) iterate loader._dataset alone (no model)':<60} {d:>10.2e}")
    print(f"{'(e) as (b) with 2 000 000 rows':<60} {e:>10.2e}")
    print(f"b/a = {b / a:.3f} (target < 0.10)   c/a = {c / a:.2f}   d/a = {d / a:.2f}   e/b = {e / b:.2f}")


if __name__ == "__main__":
    main()
