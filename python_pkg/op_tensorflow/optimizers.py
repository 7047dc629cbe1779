"""TF Privacy's DP optimizers under the names users of TF Privacy and of the R blog know.

``DPKerasSGDOptimizer``, ``DPKerasAdamOptimizer`` and ``DPKerasAdagradOptimizer`` are TF Privacy's own
objects, re-exported. ``DPAdamGaussianOptimizer`` and ``DPGradientDescentGaussianOptimizer`` are the names
the RStudio blog "Differential Privacy with TensorFlow" (2019) uses; TF Privacy's classes of those names are
TF1 ``tf.compat.v1.train`` optimizers that do not work with an eager Keras 2 ``model.fit``, so here they are
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
from tensorflow_privacy import DPKerasAdagradOptimizer, DPKerasAdamOptimizer, DPKerasSGDOptimizer

from op_tensorflow._checks import positive_float, positive_int

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
    return {
        "l2_norm_clip": positive_float("l2_norm_clip", _python_scalar("l2_norm_clip", l2_norm_clip)),
        "noise_multiplier": _noise_multiplier(noise_multiplier),
        "num_microbatches": _microbatches(num_microbatches),
    }


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
    dp = _dp_args(l2_norm_clip, noise_multiplier, num_microbatches)
    return DPKerasAdamOptimizer(**dp, learning_rate=learning_rate, **kwargs)


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
    dp = _dp_args(l2_norm_clip, noise_multiplier, num_microbatches)
    return DPKerasSGDOptimizer(**dp, learning_rate=learning_rate, **kwargs)
