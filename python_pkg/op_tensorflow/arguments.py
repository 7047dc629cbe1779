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


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    y_pred = y_pred.reshape((len(y_pred), -1))
    if y_pred.shape[1] == 1:
        return (np.round(y_pred[:, 0]) == np.round(y_true.reshape(-1))).astype(float)
    if y_true.ndim == 1 or (y_true.ndim == 2 and y_true.shape[1] == 1):
        return (np.argmax(y_pred, axis=1) == y_true.reshape(-1).astype(int)).astype(float)
    return (np.argmax(y_pred, axis=1) == np.argmax(y_true, axis=1)).astype(float)


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
