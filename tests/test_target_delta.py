"""fit: epsilon at the ledger's delta by default; a crash never under-reports; everything fails before reserving."""

import warnings

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import op_tensorflow as ot
from op_tensorflow import accounting
from op_tensorflow.event_json import event_to_dict

warnings.filterwarnings("ignore", category=ot.PrivacyWarning)


def data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": (x[:, 0] > 0).astype(float)})


def setup(delta=1e-6, epsilon=20.0, metrics=None):
    pdf = ot.PrivateDataFrame(data(), budget=(epsilon, delta))
    loader = ot.PrivateDataLoader(pdf[["a", "b"]], pdf["y"], batch_size=40, seed=0)
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1, activation="sigmoid")])
    dp_model = ot.PrivateKerasModel(model, l2_norm_clip=1.0, noise_multiplier=1.1, seed=0)
    dp_model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=metrics)
    return pdf, loader, dp_model


def ledger_epsilon(loader, epochs, delta):
    return accounting.epsilon_for_event(loader.dp_event(epochs, 1.1), delta)


def test_history_reports_epsilon_at_the_ledgers_delta_by_default():
    pdf, loader, dp_model = setup(delta=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no delta warning when the ledger's delta is used
        history = dp_model.fit(loader, epochs=2, verbose=0)
    assert history.history["epsilon"][-1] == pytest.approx(ledger_epsilon(loader, 2, 1e-6), rel=1e-12)
    assert history.history["epsilon"][-1] == pytest.approx(pdf.budget.spent(), rel=1e-12)  # a fresh ledger
    assert history.params["target_delta"] == history.params["ledger_delta"] == 1e-6
    assert history.params["epochs"] == 2 and history.params["verbose"] == 0 and "steps" in history.params
    assert dp_model.privacy["delta"] == 1e-6
    assert dp_model.privacy["epsilon"] == pytest.approx(pdf.budget.spent(), rel=1e-12)


def test_another_target_delta_is_reported_as_such_and_privacy_keeps_the_ledgers_figure():
    pdf, loader, dp_model = setup(delta=1e-6)
    with pytest.warns(UserWarning, match=r"reports epsilon at delta=0\.001.*ledger accounts at delta=1e-06"):
        history = dp_model.fit(loader, epochs=2, target_delta=1e-3, verbose=0)
    assert history.params["target_delta"] == 1e-3 and history.params["ledger_delta"] == 1e-6
    assert history.history["epsilon"][-1] == pytest.approx(ledger_epsilon(loader, 2, 1e-3), rel=1e-12)
    assert history.history["epsilon"][-1] < pdf.budget.spent()  # a larger delta gives a smaller epsilon
    assert dp_model.privacy["delta"] == 1e-6
    assert dp_model.privacy["epsilon"] == pytest.approx(pdf.budget.spent(), rel=1e-12)
    assert f"epsilon spent={pdf.budget.spent():.4g}" in repr(dp_model)


class _FailAfterFirstEpoch(tf.keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("callback failed")


def test_a_crash_after_the_reservation_is_counted_in_privacy():
    pdf, loader, dp_model = setup()
    with pytest.raises(RuntimeError, match="callback failed"):
        dp_model.fit(loader, epochs=4, callbacks=[_FailAfterFirstEpoch()], verbose=0)
    planned = ledger_epsilon(loader, 4, 1e-6)
    assert pdf.budget.spent() == pytest.approx(planned, rel=1e-12)  # the whole planned run stays charged
    assert dp_model.privacy["epsilon"] == pytest.approx(pdf.budget.spent(), rel=1e-12)
    assert dp_model.privacy["steps"] == loader.total_steps(4)
    assert f"epsilon spent={pdf.budget.spent():.4g}" in repr(dp_model)
    dp_model.fit(loader, epochs=1, verbose=0)  # the next run composes with the charged one
    assert dp_model.privacy["epsilon"] == pytest.approx(pdf.budget.spent(), rel=1e-12)


def test_a_non_finite_update_is_counted_in_privacy():
    pdf, loader, _ = setup()
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(64), tf.keras.layers.Dense(1)])
    # noise of standard deviation 3e38, at float32's limit: some of its draws overflow to inf
    dp_model = ot.PrivateKerasModel(model, l2_norm_clip=1e19, noise_multiplier=3e19, seed=0)
    dp_model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(FloatingPointError, match="stays charged"):
        dp_model.fit(loader, epochs=2, verbose=0)
    (entry,) = pdf.budget.entries  # the whole planned run stays charged, and privacy counts all of it
    assert entry.status == "committed" and entry.event == event_to_dict(loader.dp_event(2, 3e19))
    assert dp_model.privacy["steps"] == loader.total_steps(2) and dp_model.privacy["delta"] == 1e-6
    assert dp_model.privacy["epsilon"] == pytest.approx(pdf.budget.spent(), rel=1e-12)


@pytest.mark.parametrize(
    "metrics",
    [["y_true", "y_pred", "..."], ["mae", "not_a_metric"], [None], [1.5], "nonsense", [tf.keras.metrics.Accuracy]],
    ids=["r-formals", "one-bad-name", "none", "number", "bad-string", "class"],
)
def test_compile_refuses_what_is_not_a_metric(metrics):
    _, _, dp_model = setup()
    with pytest.raises((TypeError, ValueError), match="metrics") as info:
        dp_model.compile(optimizer="sgd", loss="mse", metrics=metrics)
    assert "'mae'" in str(info.value) or "MeanAbsoluteError" in str(info.value)  # names the fix


def test_compile_accepts_metric_names_objects_functions_and_one_name():
    _, _, dp_model = setup()
    for metrics in (["accuracy", "acc", "mae"], [tf.keras.metrics.MeanSquaredError()], [lambda y, p: y - p], "mae"):
        dp_model.compile(optimizer="sgd", loss="mse", metrics=metrics)


def test_bad_validation_data_is_refused_before_the_ledger_is_touched():
    pdf, loader, dp_model = setup(metrics=["accuracy"])
    with pytest.raises(ValueError, match="validation_data"):
        dp_model.fit(loader, epochs=1, verbose=0, validation_data=(np.zeros((5, 3)), np.zeros(5)))
    with pytest.raises(ValueError, match="validation_data"):  # sample weights of the wrong length
        dp_model.fit(loader, epochs=1, verbose=0, validation_data=(np.zeros((5, 2)), np.zeros(5), np.ones(3)))

    def broken_metric(y_true, y_pred):
        raise TypeError("this metric cannot run")

    dp_model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=[broken_metric])
    with pytest.raises(ValueError, match="validation_data"):
        dp_model.fit(loader, epochs=1, verbose=0, validation_data=(np.zeros((5, 2)), np.zeros(5)))
    assert pdf.budget.spent() == 0.0 and pdf.budget.entries == []
    assert dp_model.privacy["epsilon"] == 0.0


def test_a_loaded_model_composes_its_saved_runs_with_new_ones(tmp_path):
    pdf, loader, dp_model = setup()
    dp_model.fit(loader, epochs=2, verbose=0)
    dp_model.save(tmp_path / "model.optf")
    loaded = ot.load_private_model(tmp_path / "model.optf")
    assert loaded.privacy == dp_model.privacy
    loaded.fit(loader, epochs=1, verbose=0)
    assert loaded.privacy["epsilon"] == pytest.approx(pdf.budget.spent(), rel=1e-9)
    assert loaded.privacy["steps"] == loader.total_steps(2) + loader.total_steps(1)
