"""evaluate on private data: DP mean absolute and squared errors, accuracy, the loss, and their messages."""

import warnings

import dp_accounting
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import KERAS3

import op_tensorflow as ot
from op_tensorflow import accounting
from op_tensorflow.mechanisms import laplace_event

warnings.filterwarnings("ignore", category=ot.PrivacyWarning)

N, DELTA = 4000, 1e-6


def regression(budget=(1e6, DELTA)):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 2))
    y = 2.0 * x[:, 0] - x[:, 1] + rng.normal(0, 1.0, N)
    y[:20] += 50.0  # outliers: their errors are clamped to error_bound
    pdf = ot.PrivateDataFrame(pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": y}), budget=budget)
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.set_weights([np.array([[2.0], [-1.0]], np.float32), np.array([0.5], np.float32)])
    dp_model = ot.PrivateKerasModel(model, l2_norm_clip=1.0, noise_multiplier=1.1)
    return pdf, dp_model, x, y


def clamped_errors(dp_model, x, y, bound):
    errors = np.abs(y - dp_model.predict(x.astype(np.float32))[:, 0])
    return np.minimum(errors, bound).mean(), np.minimum(errors**2, bound**2).mean()


def test_dp_mae_and_mse_are_close_to_the_clamped_errors_and_charged_once_each():
    pdf, dp_model, x, y = regression()
    dp_model.compile(optimizer="sgd", loss="mse", metrics=["mae", "mse"])
    result = dp_model.evaluate(pdf[["a", "b"]], pdf["y"], eps=1e4, error_bound=5.0)
    assert set(result) == {"mae", "mse"}
    mae, mse = clamped_errors(dp_model, x, y, 5.0)
    assert result["mae"] == pytest.approx(mae, rel=1e-2)
    assert result["mse"] == pytest.approx(mse, rel=1e-2)
    assert mae < np.abs(y - dp_model.predict(x.astype(np.float32))[:, 0]).mean()  # the clamping mattered
    # eps split evenly: two DP means of eps/2, each a sum and a count at eps/4
    assert [e.description for e in pdf.budget.entries] == [
        "mean('mae', eps=5000, laplace)",
        "mean('mse', eps=5000, laplace)",
    ]
    expected = accounting.epsilon_for_event(dp_accounting.SelfComposedDpEvent(laplace_event(2500.0), 4), DELTA)
    assert pdf.budget.spent() == pytest.approx(expected, rel=1e-9)


def keras_mae_function():
    if KERAS3:
        import keras

        return keras.metrics.mean_absolute_error
    return tf.keras.metrics.mean_absolute_error


@pytest.mark.parametrize(
    "metric,key",
    [
        ("mae", "mae"),
        ("mean_absolute_error", "mean_absolute_error"),
        (tf.keras.metrics.MeanAbsoluteError(), "mean_absolute_error"),
        (keras_mae_function(), "mean_absolute_error"),
        ("mse", "mse"),
        (tf.keras.metrics.MeanSquaredError(name="sq"), "sq"),
    ],
    ids=["mae", "long-name", "object", "function", "mse", "named-object"],
)
def test_results_are_keyed_as_keras_keys_the_metric(metric, key):
    pdf, dp_model, x, y = regression()
    dp_model.compile(optimizer="sgd", loss="mse", metrics=[metric])
    result = dp_model.evaluate(pdf[["a", "b"]], pdf["y"], eps=1.0, error_bound=5.0)
    assert set(result) == {key}
    assert key in dp_model.evaluate(x, y)  # public data: Keras's own evaluate, the same key


def test_accuracy_and_loss_stay_for_classifiers():
    pdf, dp_model, x, _ = regression()
    dp_model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy", "mae"])
    labels = ot.PrivateDataFrame(
        pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "t": (x[:, 0] > 0).astype(float)}), budget=(1e6, DELTA)
    )
    result = dp_model.evaluate(labels[["a", "b"]], labels["t"], eps=3.0, error_bound=1.0, loss_bound=10.0)
    assert set(result) == {"accuracy", "mae", "loss"}
    assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 <= result["mae"] <= 1.0
    assert len(labels.budget.entries) == 3


@pytest.mark.parametrize(
    "loss,metrics,bounds,message",
    [
        ("mse", None, {}, r"regression loss 'mean_squared_error'.*metrics=\['mae'\] \(or 'mse'\) and pass error_bound"),
        (tf.keras.losses.Huber(), None, {}, r"regression loss 'huber.*metrics=\['mae'\]"),
        ("binary_crossentropy", None, {}, r"classification loss 'binary_crossentropy'.*metrics=\['accuracy'\]"),
        ("mse", ["mae"], {}, r"metric 'mae' needs error_bound=\.\.\."),
        ("mse", ["mse"], {"loss_bound": 1.0}, r"metric 'mse' needs error_bound"),
        ("mse", ["mae"], {"error_bound": -1.0}, r"error_bound must be a finite number > 0"),
        ("mse", ["mse"], {"error_bound": 1e200}, r"error_bound must be below"),
    ],
    ids=["mse-loss", "huber", "classifier", "mae-no-bound", "mse-no-bound", "negative", "overflow"],
)
def test_what_cannot_be_computed_is_refused_with_the_fix_and_nothing_charged(loss, metrics, bounds, message):
    pdf, dp_model, _, _ = regression()
    dp_model.compile(optimizer="sgd", loss=loss, metrics=metrics)
    with pytest.raises(ValueError, match=message):
        dp_model.evaluate(pdf[["a", "b"]], pdf["y"], eps=1.0, **bounds)
    assert pdf.budget.entries == [] and pdf.budget.spent() == 0.0


def test_metrics_that_do_not_fit_the_budget_together_are_refused_before_any_charge():
    pdf, dp_model, _, _ = regression(budget=(1.5, DELTA))
    dp_model.compile(optimizer="sgd", loss="mse", metrics=["mae", "mse"])
    with pytest.raises(ot.BudgetExceededError, match="Nothing was charged"):
        dp_model.evaluate(pdf[["a", "b"]], pdf["y"], eps=2.0, error_bound=5.0)
    assert pdf.budget.entries == []
