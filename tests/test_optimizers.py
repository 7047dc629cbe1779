"""The blog's optimizer names work with an eager Keras 2 model.fit; the re-exports are TF Privacy's."""

import pytest
from conftest import KERAS3

if KERAS3:  # TF Privacy's optimizers are Keras 2 optimizers; test_optimizers_keras3.py checks their refusal
    pytest.skip("TF Privacy's DP optimizers need Keras 2", allow_module_level=True)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_privacy.privacy.optimizers import dp_optimizer_keras  # noqa: E402  (the package root is empty on TF >= 2.16)

from op_tensorflow import optimizers  # noqa: E402
from op_tensorflow.optimizers import DPAdamGaussianOptimizer, DPGradientDescentGaussianOptimizer

# Keras 2.15 seeds its initializers with random.randint(1, 1e9).
pytestmark = pytest.mark.filterwarnings("ignore:non-integer arguments to randrange:DeprecationWarning")

BATCH = 32
PER_EXAMPLE_MSE = tf.keras.losses.MeanSquaredError(reduction=tf.keras.losses.Reduction.NONE)


@pytest.fixture(scope="module")
def regression():
    """512 rows of y = x . w + b + small noise."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype("float32")
    y = (x @ np.array([0.8, -0.5, 0.3, 0.6]) + 0.2 + 0.05 * rng.normal(size=512)).astype("float32")
    return x, y[:, None]


def fit_losses(optimizer, data, *, epochs: int) -> list[float]:
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss=PER_EXAMPLE_MSE)
    x, y = data
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0).history["loss"]


def test_dp_adam_gaussian_learns_linear_regression(regression):
    opt = DPAdamGaussianOptimizer(l2_norm_clip=1.0, noise_multiplier=0.5, num_microbatches=BATCH, learning_rate=0.01)
    assert isinstance(opt, dp_optimizer_keras.GenericDPAdamOptimizer)
    losses = fit_losses(opt, regression, epochs=8)
    assert losses[-1] < 0.25 * losses[0], losses


def test_dp_gradient_descent_gaussian_learns_linear_regression(regression):
    opt = DPGradientDescentGaussianOptimizer(
        l2_norm_clip=1.0, noise_multiplier=0.5, num_microbatches=BATCH, learning_rate=0.1
    )
    assert isinstance(opt, dp_optimizer_keras.GenericDPSGDOptimizer)
    losses = fit_losses(opt, regression, epochs=5)
    assert losses[-1] < 0.25 * losses[0], losses


def test_arguments_reach_tf_privacy():
    opt = DPAdamGaussianOptimizer(l2_norm_clip=1.5, noise_multiplier=1.1, num_microbatches=8, beta_1=0.8)
    config = opt.get_config()
    assert config["global_state"]["l2_norm_clip"] == pytest.approx(1.5)
    assert config["global_state"]["stddev"] == pytest.approx(1.5 * 1.1)  # noise_multiplier * l2_norm_clip
    assert config["num_microbatches"] == 8 and config["beta_1"] == 0.8
    assert config["learning_rate"] == pytest.approx(0.001)
    sgd = DPGradientDescentGaussianOptimizer(1.0, 0.0, momentum=0.9)
    assert sgd.get_config()["learning_rate"] == pytest.approx(0.01) and sgd.get_config()["momentum"] == 0.9
    assert sgd.get_config()["num_microbatches"] is None


TF_PRIVACY_NAMES = ["DPKerasSGDOptimizer", "DPKerasAdamOptimizer", "DPKerasAdagradOptimizer"]


@pytest.mark.parametrize("name", TF_PRIVACY_NAMES)
def test_tf_privacy_factories_build_tf_privacy_optimizers(name):
    ours = getattr(optimizers, name)(1.5, 1.1, 4, 2, learning_rate=0.05)
    theirs = getattr(dp_optimizer_keras, name)(1.5, 1.1, 4, 2, learning_rate=0.05)
    assert type(ours) is type(theirs) and ours.get_config() == theirs.get_config()
    assert ours._num_microbatches == 4 and ours.gradient_accumulation_steps == 2


@pytest.mark.parametrize("name", TF_PRIVACY_NAMES)
@pytest.mark.parametrize(
    "args, named",
    [
        ((-1.0, 1.1), "l2_norm_clip"),
        (("1", 1.1), "l2_norm_clip"),
        ((1.0, float("nan")), "noise_multiplier"),
        ((1.0, -0.5), "noise_multiplier"),
        ((1.0, 1.1, 0), "num_microbatches"),
        ((1.0, 1.1, 2.5), "num_microbatches"),
        ((1.0, 1.1, None, 0), "gradient_accumulation_steps"),
    ],
)
def test_tf_privacy_factories_refuse_what_tf_privacy_accepts(name, args, named):
    """TF Privacy itself builds these (and fails, or trains without the guarantee, later)."""
    with pytest.raises((ValueError, TypeError), match=named):
        getattr(optimizers, name)(*args)


@pytest.mark.parametrize("given", [32.0, np.float64(32), tf.constant(32), tf.constant(32.0)])
def test_num_microbatches_from_r_is_converted(given):
    opt = DPAdamGaussianOptimizer(l2_norm_clip=1.0, noise_multiplier=0.5, num_microbatches=given)
    assert opt._num_microbatches == 32 and type(opt._num_microbatches) is int


def test_float_num_microbatches_trains(regression):
    opt = DPAdamGaussianOptimizer(l2_norm_clip=1.0, noise_multiplier=0.5, num_microbatches=32.0, learning_rate=0.01)
    losses = fit_losses(opt, regression, epochs=1)
    assert np.isfinite(losses).all()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"num_microbatches": 32.5}, ValueError),
        ({"num_microbatches": 0}, ValueError),
        ({"l2_norm_clip": 0.0}, ValueError),
        ({"noise_multiplier": -1.0}, ValueError),
    ],
)
def test_bad_arguments(kwargs, error):
    args = {"l2_norm_clip": 1.0, "noise_multiplier": 0.5, **kwargs}
    with pytest.raises(error, match=next(iter(kwargs))):
        DPAdamGaussianOptimizer(**args)
