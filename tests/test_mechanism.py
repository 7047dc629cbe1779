"""The trained model's real DP-SGD step does what the accountant assumes.

With sampling rate q = 1 (batch_size = n) the batch of the one step is every row, so the
clipped sum can be recomputed independently and subtracted from what the step released:
what is left must be Gaussian noise of standard deviation ``l2_norm_clip * noise_multiplier``,
fresh at every step and in every run unless a seed is given.
"""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from scipy import stats

import op_tensorflow as ot
from op_tensorflow import clipping

warnings.filterwarnings("ignore", category=ot.PrivacyWarning)
N, D, UNITS, CLIP, SIGMA = 64, 40, 60, 0.8, 1.7


def full_batch_loader(features: np.ndarray, seed=None):
    df = pd.DataFrame(features, columns=[f"x{i}" for i in range(features.shape[1])])
    df["target"] = np.random.default_rng(1).normal(0, 3, len(df))
    pdf = ot.PrivateDataFrame(df, budget=(math.inf, 1e-6))
    return ot.PrivateDataLoader(pdf[list(df.columns[:-1])], pdf["target"], len(df), seed=seed), df


def model_and_step(features, *, epochs=1, seed=None, loader_seed=None, init_seed=0):
    tf.keras.utils.set_random_seed(init_seed)
    model = tf.keras.Sequential(
        [tf.keras.layers.Dense(UNITS, activation="tanh", input_shape=(D,)), tf.keras.layers.Dense(1)]
    )
    dp_model = ot.PrivateKerasModel(model=model, l2_norm_clip=CLIP, noise_multiplier=SIGMA, seed=seed)
    dp_model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=1.0), loss="mse")
    loader, df = full_batch_loader(features, seed=loader_seed)
    return dp_model, loader, df


def flat(weights):
    return np.concatenate([w.ravel() for w in weights])


@pytest.mark.slow
def test_released_gradient_minus_clipped_sum_is_gaussian_with_the_promised_sd():
    rng = np.random.default_rng(0)
    features = rng.normal(0, 5, (N, D)) * rng.choice([1, 100], (N, 1))  # many examples far beyond the clip
    dp_model, loader, df = model_and_step(features)
    before = dp_model.get_weights()
    grads, norms, _ = clipping.clipped_gradient_sum(
        dp_model.model,
        tf.constant(features, tf.float32),
        tf.constant(df["target"].to_numpy(), tf.float32),
        tf.keras.losses.MeanSquaredError(reduction="none"),
        CLIP,
    )
    assert (norms.numpy() > CLIP).mean() > 0.5  # the clipping really binds
    dp_model.fit(x=loader, epochs=1, verbose=0)  # one step over all N rows (q = 1)
    released = -(flat(dp_model.get_weights()) - flat(before)) * N  # SGD lr=1 divides by q n = N
    noise = released - flat([g.numpy() for g in grads])
    assert noise.size == D * UNITS + UNITS + UNITS + 1
    assert stats.kstest(noise, stats.norm(scale=CLIP * SIGMA).cdf).pvalue > 1e-4
    # and neither less nor more noise: the sample sd has relative standard error 1/sqrt(2 n), about 1.4%
    assert abs(noise.std() / (CLIP * SIGMA) - 1) < 4 / math.sqrt(2 * noise.size)
    assert abs(noise.mean()) < 4 * CLIP * SIGMA / math.sqrt(noise.size)


@pytest.mark.slow
def test_noise_is_fresh_at_every_step_and_in_every_unseeded_run():
    features = np.zeros((N, D))  # zero inputs: the first kernel's gradient is exactly 0, its update pure noise

    class Kernels(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_epoch_end(self, epoch, logs=None):
            self.seen.append(self.model.layers[0].kernel.numpy().ravel().copy())

    def noises(**kwargs):
        dp_model, loader, _ = model_and_step(features, **kwargs)
        start = dp_model.model.layers[0].kernel.numpy().ravel().copy()
        kernels = Kernels()
        dp_model.fit(x=loader, epochs=3, verbose=0, callbacks=[kernels])
        steps = np.diff(np.stack([start, *kernels.seen]), axis=0)
        return steps

    first, second = noises(), noises()
    limit = 5 / math.sqrt(D * UNITS)
    for a in range(3):
        for b in range(a + 1, 3):
            assert abs(np.corrcoef(first[a], first[b])[0, 1]) < limit  # step to step
        assert abs(np.corrcoef(first[a], second[a])[0, 1]) < limit  # run to run
    seeded = [noises(seed=9, loader_seed=9) for _ in range(2)]
    np.testing.assert_array_equal(seeded[0], seeded[1])
