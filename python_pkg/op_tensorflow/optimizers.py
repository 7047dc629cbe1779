"""TF Privacy's DP optimizers under the names users of TF Privacy and of the R blog know.

``DPKerasSGDOptimizer``, ``DPKerasAdamOptimizer`` and ``DPKerasAdagradOptimizer`` are TF Privacy's own
factories behind a check of their DP arguments (TF Privacy itself accepts a negative ``l2_norm_clip``, a NaN
``noise_multiplier`` or zero microbatches, and then fails, or trains without the promised guarantee, later).

``DPAdamGaussianOptimizer`` and ``DPGradientDescentGaussianOptimizer`` are the names the RStudio blog
"Differential Privacy with TensorFlow" (2019) uses; TF Privacy's classes of those names are TF1
``tf.compat.v1.train`` optimizers that do not work with an eager Keras 2 ``model.fit``, so here they are
thin adapters returning the equivalent Keras optimizer.

All of them (TF Privacy's Keras optimizers and these adapters):

* need a per-example loss, i.e. a loss built with ``reduction=tf.keras.losses.Reduction.NONE``
  (e.g. ``tf.keras.losses.MeanSquaredError(reduction=tf.keras.losses.Reduction.NONE)``); with a scalar loss
  there is nothing per-example to clip;
* use microbatching semantics: each batch is split into ``num_microbatches`` equal microbatches (the batch
  size must be a multiple of it), the gradient of each microbatch's mean loss is clipped to ``l2_norm_clip``,
  Gaussian noise of standard deviation ``l2_norm_clip * noise_multiplier`` is added to the sum, and the
  result is divided by ``num_microbatches``. ``num_microbatches`` = batch size (or None) clips every example
  on its own; fewer microbatches run faster but clip groups of examples, which costs accuracy;
* compute one gradient per microbatch with a Jacobian in a loop, which is slow. ``op_tensorflow``'s
  ``PrivateKerasModel`` computes vectorized per-example gradients and is the faster path.

They are based on ``tf.keras.optimizers.legacy`` (Keras 2) optimizers, as TF Privacy's are.
"""

import math
import numbers

import numpy as np

from op_tensorflow import keras_seam
from op_tensorflow._checks import clip_and_noise, positive_float, positive_int

__all__ = [
    "DPAdamGaussianOptimizer",
    "DPGradientDescentGaussianOptimizer",
    "DPKerasAdagradOptimizer",
    "DPKerasAdamOptimizer",
    "DPKerasSGDOptimizer",
]


def _python_scalar(name: str, value):
    """Turns a TF/NumPy scalar (e.g. from R's ``k_cast``) into a Python number; other values pass through."""
    if hasattr(value, "numpy") and not isinstance(value, numbers.Number):
        try:
            value = value.numpy()
        except (AttributeError, NotImplementedError, ValueError) as err:
            raise TypeError(
                f"{name} must be a number or an eager scalar tensor, got a symbolic {type(value).__name__} "
                "(is TF1 behaviour enabled with tf.compat.v1.disable_v2_behavior()? These optimizers need TF2)."
            ) from err
    if isinstance(value, np.ndarray | np.generic):
        if np.size(value) != 1:
            raise ValueError(f"{name} must be a scalar, got an array of shape {np.shape(value)}.")
        value = value.item()
    return value


def _microbatches(value) -> int | None:
    """``num_microbatches`` as an int (it may arrive as a float or tensor from R), or None."""
    if value is None:
        return None
    return positive_int("num_microbatches", _python_scalar("num_microbatches", value))


def _noise_multiplier(value) -> float:
    value = _python_scalar("noise_multiplier", value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"noise_multiplier must be a finite number >= 0, got {value!r}.")
    return float(value)


def _dp_args(l2_norm_clip, noise_multiplier, num_microbatches) -> dict:
    args = {
        "l2_norm_clip": positive_float("l2_norm_clip", _python_scalar("l2_norm_clip", l2_norm_clip)),
        "noise_multiplier": _noise_multiplier(noise_multiplier),
        "num_microbatches": _microbatches(num_microbatches),
    }
    clip_and_noise(args["l2_norm_clip"], args["noise_multiplier"])  # TF Privacy keeps both in float32
    return args


def _learning_rate(value):
    """A number >= 0, a Keras LearningRateSchedule or a callable (as Keras takes), else an error naming it."""
    value = _python_scalar("learning_rate", value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"learning_rate must be a finite number >= 0, got {value!r}.")
        return float(value)
    if callable(value):  # a LearningRateSchedule or a zero-argument callable
        return value
    raise TypeError(f"learning_rate must be a number or a learning-rate schedule, got {type(value).__name__}.")


def _require_keras2(name: str) -> None:
    """TF Privacy's DP optimizers are Keras 2 optimizers; Keras 3 cannot run them."""
    if keras_seam.KERAS3:
        raise RuntimeError(
            f"{name} needs Keras 2, but op_tensorflow runs on {keras_seam.keras_description()}. A Keras 3 optimizer "
            "never sees per-example losses (Keras 3 reduces the loss before the optimizer is called), so no DP "
            "optimizer can clip per example there. Use op_tensorflow.PrivateKerasModel(model, l2_norm_clip=..., "
            "noise_multiplier=...) with a standard optimizer such as tf.keras.optimizers.Adam, which clips and adds "
            "noise itself; or set TF_USE_LEGACY_KERAS=1 before importing tensorflow to use Keras 2 (tf_keras)."
        )


def _checked_factory(name: str):
    """TF Privacy's optimizer factory ``name`` with its DP arguments validated first."""

    def make(l2_norm_clip, noise_multiplier, num_microbatches=None, gradient_accumulation_steps=1, *args, **kwargs):
        _require_keras2(name)
        factory = getattr(keras_seam.tf_privacy_module("privacy.optimizers.dp_optimizer_keras"), name)
        dp = _dp_args(l2_norm_clip, noise_multiplier, num_microbatches)
        steps = positive_int(
            "gradient_accumulation_steps", _python_scalar("gradient_accumulation_steps", gradient_accumulation_steps)
        )
        if "learning_rate" in kwargs:
            kwargs["learning_rate"] = _learning_rate(kwargs["learning_rate"])
        return factory(dp["l2_norm_clip"], dp["noise_multiplier"], dp["num_microbatches"], steps, *args, **kwargs)

    make.__name__ = make.__qualname__ = name
    make.__doc__ = (
        f"TF Privacy's ``{name}``, with ``l2_norm_clip``, ``noise_multiplier``, ``num_microbatches`` "
        "and ``gradient_accumulation_steps`` checked (a ValueError or TypeError naming the argument) before "
        "it is built. Keras 2 only (on Keras 3 it raises RuntimeError pointing to PrivateKerasModel)."
    )
    return make


DPKerasSGDOptimizer = _checked_factory("DPKerasSGDOptimizer")
DPKerasAdamOptimizer = _checked_factory("DPKerasAdamOptimizer")
DPKerasAdagradOptimizer = _checked_factory("DPKerasAdagradOptimizer")


def DPAdamGaussianOptimizer(l2_norm_clip, noise_multiplier, num_microbatches=None, learning_rate=0.001, **kwargs):
    """DP Adam under the blog's name: returns TF Privacy's ``DPKerasAdamOptimizer`` with these arguments.

    TF Privacy's own ``DPAdamGaussianOptimizer`` is a TF1 ``tf.compat.v1.train`` optimizer that does not
    work with an eager Keras 2 ``model.fit``; this returns the Keras equivalent. Compile the model with a
    per-example loss (``reduction=tf.keras.losses.Reduction.NONE``). Microbatching semantics: each batch is
    split into ``num_microbatches`` microbatches whose mean-loss gradients are clipped and noised (see the
    module docstring). ``op_tensorflow.PrivateKerasModel`` is the faster path to the same guarantee.

    Args:
        l2_norm_clip: Maximum L2 norm of each microbatch's gradient.
        noise_multiplier: Standard deviation of the Gaussian noise, as a multiple of ``l2_norm_clip``.
        num_microbatches: Microbatches per batch; must divide the batch size. None means one per example.
            Floats and scalar tensors with an integral value (e.g. from R's ``k_cast``) are converted to int.
        learning_rate: Adam's learning rate.
        **kwargs: Passed on to ``tf.keras.optimizers.legacy.Adam`` (e.g. ``beta_1``) or to TF Privacy
            (``gradient_accumulation_steps``).

    Returns:
        A ``tensorflow_privacy.DPKerasAdamOptimizer`` instance.
    """
    _require_keras2("DPAdamGaussianOptimizer")
    dp = _dp_args(l2_norm_clip, noise_multiplier, num_microbatches)
    return DPKerasAdamOptimizer(**dp, learning_rate=_learning_rate(learning_rate), **kwargs)


def DPGradientDescentGaussianOptimizer(
    l2_norm_clip, noise_multiplier, num_microbatches=None, learning_rate=0.01, **kwargs
):
    """DP-SGD under the blog's name: returns TF Privacy's ``DPKerasSGDOptimizer`` with these arguments.

    TF Privacy's own ``DPGradientDescentGaussianOptimizer`` is a TF1 ``tf.compat.v1.train`` optimizer that
    does not work with an eager Keras 2 ``model.fit``; this returns the Keras equivalent. Compile the model
    with a per-example loss (``reduction=tf.keras.losses.Reduction.NONE``). Microbatching semantics: each
    batch is split into ``num_microbatches`` microbatches whose mean-loss gradients are clipped and noised
    (see the module docstring). ``op_tensorflow.PrivateKerasModel`` is the faster path to the same guarantee.

    Args:
        l2_norm_clip: Maximum L2 norm of each microbatch's gradient.
        noise_multiplier: Standard deviation of the Gaussian noise, as a multiple of ``l2_norm_clip``.
        num_microbatches: Microbatches per batch; must divide the batch size. None means one per example.
            Floats and scalar tensors with an integral value (e.g. from R's ``k_cast``) are converted to int.
        learning_rate: SGD's learning rate.
        **kwargs: Passed on to ``tf.keras.optimizers.legacy.SGD`` (e.g. ``momentum``) or to TF Privacy
            (``gradient_accumulation_steps``).

    Returns:
        A ``tensorflow_privacy.DPKerasSGDOptimizer`` instance.
    """
    _require_keras2("DPGradientDescentGaussianOptimizer")
    dp = _dp_args(l2_norm_clip, noise_multiplier, num_microbatches)
    return DPKerasSGDOptimizer(**dp, learning_rate=_learning_rate(learning_rate), **kwargs)
