"""Checks of what users pass to ``PrivateKerasModel``'s compile, fit, predict and evaluate.

Each refuses, before any budget is reserved, what the DP engine cannot honour (several losses, loss
weights, DP optimizers, private validation data) or what Keras would only reject after training started
(validation data of the wrong shape), with an error that names the argument.
"""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf

from op_tensorflow import keras_seam
from op_tensorflow.errors import BudgetExceededError, PrivacyError
from op_tensorflow.frame import PrivateDataFrame, PrivateSeries
from op_tensorflow.loader import PrivateDataLoader


def per_example_loss(loss) -> tf.keras.losses.Loss:
    """The compiled loss with reduction NONE, whatever form the user gave it in."""
    try:
        loss = tf.keras.losses.get(loss)
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"loss must be a Keras loss (instance, name or function), got {loss!r}: {err}") from None
    if isinstance(loss, tf.keras.losses.Loss) or callable(loss):
        return keras_seam.unreduced_loss(loss)
    raise ValueError(f"loss must be a Keras loss (instance, class name string or function), got {loss!r}.")


# Names Keras's compile resolves itself (by the loss and the output shape), not through metrics.get.
_COMPILE_METRIC_NAMES = ("accuracy", "acc", "crossentropy", "ce")


def _metric_problem(metric) -> str | None:
    """Why ``metric`` is not a metric Keras can compute (None if it is one)."""
    if isinstance(metric, tf.keras.metrics.Metric):
        return None
    if isinstance(metric, type):
        return "a class (pass an instance, e.g. tf.keras.metrics.MeanAbsoluteError())"
    if isinstance(metric, str):
        if metric in _COMPILE_METRIC_NAMES:
            return None
        try:
            resolved = tf.keras.metrics.get(metric)
        except (ValueError, TypeError, KeyError):
            return "not a metric name"
        # Keras 2 returns an unknown name unchanged instead of refusing it
        return None if isinstance(resolved, tf.keras.metrics.Metric) or callable(resolved) else "not a metric name"
    if callable(metric):
        return None
    return f"a {type(metric).__name__}, not a metric"


def check_metrics(metrics):
    """``metrics`` as Keras's compile takes them, refused now if any item is not a metric.

    Keras resolves metrics only when it first computes them (after a whole epoch of training, for
    ``validation_data``), so a list of junk, e.g. an R function's formals, must fail here. One name,
    metric or function is wrapped in a list (R passes a length-one vector as a scalar).
    """
    if metrics is None:
        return None
    if isinstance(metrics, (str, tf.keras.metrics.Metric)) or callable(metrics):
        metrics = [metrics]
    if not isinstance(metrics, (list, tuple, dict)):
        raise TypeError(
            f"metrics must be a list of metric names (e.g. ['mae'] or ['accuracy']), Keras metric objects or "
            f"metric functions, got {type(metrics).__name__} {metrics!r}."
        )
    items = metrics.values() if isinstance(metrics, dict) else metrics
    bad = []
    for item in items:
        for metric in item if isinstance(item, (list, tuple)) else [item]:
            problem = _metric_problem(metric)
            if problem is not None:
                bad.append(f"{metric!r} ({problem})")
    if bad:
        raise ValueError(
            f"metrics holds items that are not Keras metrics: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}. "
            "Give metric names such as 'mae', 'mse' or 'accuracy', Keras metric objects such as "
            "tf.keras.metrics.MeanAbsoluteError(), or metric functions (from R: metrics = c('mae'); an R function "
            "passed unevaluated arrives as a list of its arguments)."
        )
    return metrics


def is_dp_optimizer(optimizer) -> bool:
    return any(c.__name__.startswith("DP") and "tensorflow_privacy" in c.__module__ for c in type(optimizer).__mro__)


def check_single_output(model) -> None:
    outputs = getattr(model, "outputs", None)
    if outputs is not None and len(outputs) > 1:
        raise ValueError(
            f"model has {len(outputs)} outputs; PrivateKerasModel trains single-output models (one loss per "
            "example). Concatenate the outputs into one tensor and write one loss over it."
        )


def single_loss(model, loss, kwargs: dict):
    """The one loss of a single-output model; refuses what the DP engine would silently ignore."""
    if kwargs.get("loss_weights") is not None:
        raise ValueError(
            "loss_weights is not supported: the DP engine trains one loss per example and would ignore it. "
            "Scale inside the loss function instead, e.g. loss=lambda y, p: 2.0 * tf.keras.losses.mse(y, p)."
        )
    if kwargs.get("weighted_metrics") is not None:
        raise ValueError(
            "weighted_metrics is not supported: DP training uses no sample weights. Pass metrics=[...] instead."
        )
    check_single_output(model)
    if isinstance(loss, dict):
        if len(loss) != 1:
            raise ValueError(f"loss has {len(loss)} entries; give one loss for the model's single output.")
        loss = next(iter(loss.values()))
    if isinstance(loss, (list, tuple)):
        if len(loss) != 1:
            raise ValueError(f"loss has {len(loss)} entries; give one loss for the model's single output.")
        loss = loss[0]
    return loss


@contextlib.contextmanager
def keras_input_errors(name: str):
    """Keras's errors for unusable public input (IndexError, KeyError, graph errors, a failing metric function)
    as a ValueError naming it; op_tensorflow's own refusals pass unchanged."""
    try:
        yield
    except (PrivacyError, BudgetExceededError):
        raise
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError, tf.errors.OpError) as err:
        raise ValueError(f"{name}: the model cannot use this input ({type(err).__name__}: {err})") from None


def weight_arrays(weights, model) -> list[np.ndarray]:
    """``weights`` as float32 arrays shaped like ``model.get_weights()``'s, refused with the expected shapes."""
    expected = [w.shape for w in model.get_weights()]
    if not isinstance(weights, (list, tuple)) or len(weights) != len(expected):
        raise ValueError(
            f"weights must be a list of {len(expected)} arrays (as get_weights() returns), got "
            f"{type(weights).__name__}{f' of length {len(weights)}' if isinstance(weights, (list, tuple)) else ''}."
        )
    try:
        arrays = [np.asarray(w, dtype=np.float32) for w in weights]
    except (TypeError, ValueError) as err:
        raise TypeError(f"weights must hold numeric arrays: {err}") from None
    shapes = [a.shape for a in arrays]
    if shapes != expected:
        raise ValueError(f"weights have shapes {shapes}, but the model's weights have shapes {expected}.")
    return arrays


def check_validation_data(data, model) -> None:
    """Public ``(x, y)`` arrays that fit the model, checked before any budget is reserved."""
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise ValueError(f"validation_data must be a public (x, y) tuple of arrays, got {type(data).__name__}.")
    try:
        x, y = np.asarray(data[0], dtype=np.float32), np.asarray(data[1], dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"validation_data must hold numeric arrays (x, y): {err}") from None
    expected = model.input_shape
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise ValueError(f"validation_data: x of shape {x.shape} and y of shape {y.shape} are not row-aligned arrays.")
    if isinstance(expected, tuple) and (
        len(expected) != x.ndim or any(e is not None and e != s for e, s in zip(expected[1:], x.shape[1:], strict=True))
    ):
        raise ValueError(f"validation_data: x has shape {x.shape}, but the model expects {expected}.")


def check_public(data, name: str) -> None:
    for item in tf.nest.flatten(data, expand_composites=False) if isinstance(data, (tuple, list)) else [data]:
        if isinstance(item, (PrivateDataFrame, PrivateSeries, PrivateDataLoader)):
            raise PrivacyError(f"{name} is private; only public data can be used here.")
