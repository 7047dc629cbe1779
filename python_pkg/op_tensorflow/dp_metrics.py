"""DP metrics of a ``PrivateKerasModel`` on private data: each one a DP mean of bounded per-example values.

``PrivateKerasModel.evaluate`` on private rows releases, for each metric it can bound, a DP mean
(:meth:`PrivateSeries.mean`, charged to the rows' ledger) of one value per example:

* ``accuracy`` (compiled as ``'accuracy'``, ``'acc'``, ``'binary_accuracy'``, an accuracy metric object, ...):
  1 for a correct prediction, else 0; always bounded.
* mean absolute error (compiled as ``'mae'``, ``'mean_absolute_error'``, ``MeanAbsoluteError()`` or the
  function ``mean_absolute_error``): ``mean_j min(|y_j - y_pred_j|, error_bound)`` over the outputs ``j``, in
  ``[0, error_bound]``.
* mean squared error (``'mse'``, ``'mean_squared_error'``, ``MeanSquaredError()``, ``mean_squared_error``):
  ``mean_j min((y_j - y_pred_j)**2, error_bound**2)``, in ``[0, error_bound**2]``.
* ``loss``, when ``loss_bound`` is given: the per-example loss clamped to ``[0, loss_bound]``.

``error_bound`` and ``loss_bound`` are public bounds chosen without looking at the data (a clamped value
that is not finite counts as the bound). A result is keyed as Keras's ``evaluate`` would key the metric
(``'mae'`` when compiled as ``'mae'``, ``'mean_absolute_error'`` for the long name, an object's ``name``);
accuracy is always ``'accuracy'`` and the loss ``'loss'``. ``eps`` is split evenly across the results.
"""

from __future__ import annotations

import dp_accounting
import numpy as np
import pandas as pd
import tensorflow as tf

from op_tensorflow import _checks, clipping, keras_seam
from op_tensorflow.errors import BudgetExceededError
from op_tensorflow.frame import PrivateSeries, _raw
from op_tensorflow.mechanisms import check_eps, laplace_event

__all__ = ["MetricPlan", "accuracy", "metric_plan", "per_example_values", "release_means"]

ACCURACY, MAE, MSE, LOSS = "accuracy", "mae", "mse", "loss"
_NAMES = {
    ACCURACY: ("accuracy", "acc", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy"),
    MAE: ("mae", "mean_absolute_error"),
    MSE: ("mse", "mean_squared_error"),
}
_CLASSES = {
    ACCURACY: (
        tf.keras.metrics.Accuracy,
        tf.keras.metrics.BinaryAccuracy,
        tf.keras.metrics.CategoricalAccuracy,
        tf.keras.metrics.SparseCategoricalAccuracy,
    ),
    MAE: (tf.keras.metrics.MeanAbsoluteError,),
    MSE: (tf.keras.metrics.MeanSquaredError,),
}
_REGRESSION_LOSSES = (
    "mse",
    "mae",
    "mape",
    "msle",
    "mean_squared_error",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error",
    "huber",
    "huber_loss",
    "log_cosh",
    "logcosh",
)

MetricPlan = list  # [(key, kind, (lower, upper))]: the DP means to release, in order


def _kind_and_name(metric) -> tuple[str | None, str | None]:
    """``(kind, result key)`` of a compiled metric: kind is ACCURACY, MAE, MSE or None (not computable privately)."""
    if isinstance(metric, tf.keras.metrics.Metric):
        for kind, classes in _CLASSES.items():
            if isinstance(metric, classes):
                return kind, metric.name
        name = metric.name
    else:
        name = metric if isinstance(metric, str) else getattr(metric, "__name__", None)
    for kind, names in _NAMES.items():
        if name in names:
            return kind, name
    return None, name


def _loss_name(loss_fn) -> str:
    fn = getattr(loss_fn, "fn", None)
    return str(getattr(fn, "__name__", None) or getattr(loss_fn, "name", None) or "")


def _nothing_to_compute(loss_fn) -> str:
    name = _loss_name(loss_fn)
    if name in _REGRESSION_LOSSES:
        fix = f"for the regression loss {name!r}, compile with metrics=['mae'] (or 'mse') and pass error_bound=..."
    elif "crossentropy" in name or "hinge" in name:
        fix = f"for the classification loss {name!r}, compile with metrics=['accuracy']"
    else:
        fix = "compile with metrics=['accuracy'] (a classifier) or metrics=['mae'] with error_bound=... (a regressor)"
    return (
        f"no metric can be computed privately: {fix} (a public bound on |y - y_pred|), or pass loss_bound=... for "
        "a clamped DP mean loss."
    )


def metric_plan(model, loss_fn, *, loss_bound=None, error_bound=None) -> MetricPlan:
    """The DP means ``evaluate`` releases, from public facts only (the compiled metrics and the bounds).

    Raises:
        ValueError: Nothing can be computed, or MAE/MSE is compiled without ``error_bound``.
    """
    loss_bound = None if loss_bound is None else _checks.positive_float("loss_bound", loss_bound)
    error_bound = None if error_bound is None else _checks.positive_float("error_bound", error_bound)
    if error_bound is not None and error_bound > 1e150:
        raise ValueError(f"error_bound must be below 1e150 (its square bounds the squared error), got {error_bound!r}.")
    plan, kinds = [], set()
    if loss_bound is not None:
        plan.append((LOSS, LOSS, (0.0, loss_bound)))
    for metric in keras_seam.compiled_metrics(model):
        kind, name = _kind_and_name(metric)
        if kind is None or kind in kinds:
            continue
        if kind in (MAE, MSE) and error_bound is None:
            raise ValueError(
                f"metric {name!r} needs error_bound=... to be computed privately: a public bound on |y - y_pred| "
                "(chosen without looking at the data) that clamps each error; pass evaluate(..., error_bound=...)."
            )
        kinds.add(kind)
        key = ACCURACY if kind == ACCURACY else name
        upper = 1.0 if kind == ACCURACY else error_bound if kind == MAE else error_bound**2
        plan.append((key, kind, (0.0, upper)))
    if not plan:
        raise ValueError(_nothing_to_compute(loss_fn))
    return plan


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """1.0 per correctly classified example, else 0.0 (rounded for one output, argmax for several)."""
    y_pred = y_pred.reshape((len(y_pred), -1))
    if y_pred.shape[1] == 1:
        return (np.round(y_pred[:, 0]) == np.round(y_true.reshape(-1))).astype(float)
    if y_true.ndim == 1 or (y_true.ndim == 2 and y_true.shape[1] == 1):
        return (np.argmax(y_pred, axis=1) == y_true.reshape(-1).astype(int)).astype(float)
    return (np.argmax(y_pred, axis=1) == np.argmax(y_true, axis=1)).astype(float)


def _errors(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    y_true, y_pred = y_true.reshape((len(y_true), -1)), y_pred.reshape((len(y_pred), -1))
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y has {y_true.shape[1]} column(s) per row but the model predicts {y_pred.shape[1]}: mean absolute and "
            "squared errors compare them one to one."
        )
    return np.abs(y_true.astype(np.float64) - y_pred.astype(np.float64))


def _clamped(values: np.ndarray, upper: float) -> np.ndarray:
    """``values`` in ``[0, upper]``; a non-finite value (a NaN loss or prediction) counts as ``upper``."""
    return np.where(np.isfinite(values), np.clip(values, 0.0, upper), upper)


def per_example_values(plan: MetricPlan, loss_fn, y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """``{key: (one value per example, bounds)}`` for every entry of ``plan``."""
    values = {}
    for key, kind, (lower, upper) in plan:
        if kind == LOSS:
            raw = clipping.per_example_losses(loss_fn, tf.constant(y_true), tf.constant(y_pred)).numpy()
        elif kind == ACCURACY:
            raw = accuracy(y_true, y_pred)
        elif kind == MAE:
            raw = _clamped(_errors(y_true, y_pred), upper).mean(axis=1)
        else:
            raw = _clamped(np.square(_errors(y_true, y_pred)), upper).mean(axis=1)
        values[key] = (_clamped(np.asarray(raw, dtype=np.float64), upper), (lower, upper))
    return values


def release_means(values: dict, x, eps) -> dict:
    """DP means of ``values`` (rows of ``x``), ``eps`` split evenly; refused before any charge if it does not fit."""
    share = check_eps(_checks.positive_float("eps", eps) / len(values))
    # each mean spends share / 2 on its sum and on its count (PrivateSeries.mean)
    events = [laplace_event(share / 2)] * (2 * len(values))
    if not x.budget.can_afford(dp_accounting.ComposedDpEvent(events)):
        raise BudgetExceededError(
            f"refused: evaluate's {len(values)} DP mean(s) at eps={eps:g} in all would exceed the privacy budget "
            f"(remaining {x.budget.remaining():.6g}). Nothing was charged."
        )
    index = _raw(x).index
    results = {}
    for name, (per_example, bounds) in values.items():
        series = PrivateSeries(pd.Series(per_example, index=index, name=name), x._source, {name: bounds})
        results[name] = series.mean(eps=share)
    return results
