"""Fuzzing every public function and constructor with arbitrary values (hypothesis).

The property: a user mistake ends in one of op_tensorflow's documented errors, never in a
stack trace from the inside (a ``tf.errors`` error, ``AttributeError``,
``ZeroDivisionError``, ``OverflowError``, ``IndexError``, ``MemoryError`` ...):

* ``PrivacyError`` or ``BudgetExceededError``; or
* ``ValueError``, ``TypeError`` or ``KeyError`` whose message names the argument.

What a call returns instead must be sane: epsilons are numbers >= 0 (never NaN), DP answers
are finite floats, and a refused ``fit`` leaves the ledger untouched. Each argument is
fuzzed on its own (the others valid), drawn from junk of every type (None, strings, bools,
lists, dicts, objects, complex, bytes, NaN, infinities, zero, negatives, huge and tiny
numbers) mixed with values from the valid range, so both sides of every check are hit.

Arguments that would legitimately run for hours (a billion epochs of training) are kept in
range; the heavier tests are marked slow. Also here: a model whose loss turns NaN stops with
``FloatingPointError`` and its run stays charged.
"""

import contextlib
import decimal
import io
import math
import os
import tempfile
import warnings

import dp_accounting
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import keras2_only
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import op_tensorflow as ot
from op_tensorflow import accounting, auditing, cli, ppg, validate
from op_tensorflow import r as op_r

warnings.filterwarnings("ignore", category=ot.PrivacyWarning)
pytestmark = [
    pytest.mark.filterwarnings("ignore::op_tensorflow.PrivacyWarning"),
    pytest.mark.filterwarnings("error::RuntimeWarning"),  # a silent overflow or NaN inside is a finding too
]

# OP_TF_FUZZ_EXAMPLES=500 OP_TF_FUZZ_RANDOM=1 explores further (and differently on every run).
EXAMPLES = int(os.environ.get("OP_TF_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    deadline=None,
    max_examples=EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=not os.environ.get("OP_TF_FUZZ_RANDOM"),  # by default the same examples on every run
    database=None,
)
FEW = settings(FUZZ, max_examples=max(EXAMPLES // 3, 5))
HALF = settings(FUZZ, max_examples=max(EXAMPLES // 2, 5))


class _Opaque:
    def __repr__(self):
        return "<opaque>"


NUMBERS = st.one_of(
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 0.5, 1e-300, 5e-324, 1e300, 2**63, 2**53 + 1, -0.0]),
    st.fractions(max_denominator=1000),
    st.sampled_from([np.float64("nan"), np.float32(0.5), np.int64(7), np.float64(1e308)]),
)
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    NUMBERS,
    st.text(max_size=6),
    st.binary(max_size=4),
    st.complex_numbers(max_magnitude=10),
    st.lists(st.integers(-3, 3), max_size=3),
    st.tuples(st.integers(-3, 3)),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.sampled_from([decimal.Decimal("0.5"), np.array([1.0]), np.array(0.5), _Opaque(), float, pd.Series([1.0])]),
)


def either(valid):
    """Mostly junk, sometimes a valid value: both sides of every check."""
    return st.one_of(JUNK, valid)


def check_call(fn, *names):
    """Runs ``fn()``; a raised error must be documented and name one of ``names``. Returns (ok, result)."""
    try:
        return True, fn()
    except (ot.PrivacyError, ot.BudgetExceededError):
        return False, None
    except (ValueError, TypeError, KeyError) as e:
        if isinstance(e, np.core._exceptions._UFuncNoLoopError | np.core._exceptions.UFuncTypeError):
            raise AssertionError(f"numpy's internal error escaped: {e!r}") from e
        message = str(e).lower()
        assert any(n.lower() in message for n in names), f"{type(e).__name__} does not name {names}: {e}"
        return False, None
    except tf.errors.OpError as e:
        raise AssertionError(f"a TensorFlow error escaped: {type(e).__name__}: {e}") from e


def assert_epsilon(value):
    assert isinstance(value, float) and not math.isnan(value) and value >= 0, value


# -- accounting ---------------------------------------------------------------------------------

TRAINING = {"sample_size": 1000, "batch_size": 10, "num_epochs": 2, "noise_multiplier": 1.1, "target_delta": 1e-5}
VALID_TRAINING = {
    "sample_size": st.integers(1, 10**7),
    "batch_size": st.integers(1, 1000),
    "num_epochs": st.floats(1e-6, 1e3),
    "noise_multiplier": st.floats(0.05, 1e4),
    "target_delta": st.floats(1e-12, 0.5),
}


@FUZZ
@given(name=st.sampled_from(sorted(VALID_TRAINING)), data=st.data())
def test_get_privacy_budget(name, data):
    value = data.draw(either(VALID_TRAINING[name]), label=name)
    ok, eps = check_call(lambda: ot.get_privacy_budget(**{**TRAINING, name: value}, verbose=False), name)
    if ok:
        assert_epsilon(eps)


@FUZZ
@given(accountant=either(st.sampled_from(["rdp", "pld", "RDP", "gdp"])), verbose=JUNK)
def test_get_privacy_budget_options(accountant, verbose):
    with contextlib.redirect_stdout(io.StringIO()):
        ok, eps = check_call(
            lambda: ot.get_privacy_budget(100000, 4, 1, 1.2, 1e-5, accountant=accountant, verbose=verbose),
            "accountant",
            "verbose",
        )
    if ok:
        assert_epsilon(eps)


@FUZZ
@given(name=st.sampled_from(["sample_size", "batch_size", "num_epochs", "target_delta"]), data=st.data())
def test_compute_dp_sgd_privacy(name, data):
    value = data.draw(either(VALID_TRAINING[name]), label=name)
    args = {"n": 1000, "batch_size": 10, "noise_multiplier": 1.1, "epochs": 2, "delta": 1e-5}
    key = {"sample_size": "n", "num_epochs": "epochs", "target_delta": "delta"}.get(name, name)
    # the argument is named as in get_privacy_budget (sample_size, num_epochs, target_delta) or as here
    ok, result = check_call(lambda: ot.compute_dp_sgd_privacy(**{**args, key: value}), name, key)
    if ok:
        assert_epsilon(result[0])


@FUZZ
@given(noise_multiplier=either(st.floats(1e-300, 1e300)))
def test_noise_multiplier_extremes_are_named(noise_multiplier):
    """dp_accounting overflows or divides by zero far out; that must surface as a named ValueError."""
    for fn in (
        lambda: ot.get_privacy_budget(1000, 10, 2, noise_multiplier, 1e-5, verbose=False),
        lambda: ot.compute_dp_sgd_privacy(1000, 10, noise_multiplier, 2, 1e-5),
        lambda: ot.compute_rdp(0.01, noise_multiplier, 100, [2.0, 32.0]),
    ):
        ok, result = check_call(fn, "noise_multiplier")
        if ok:
            values = np.atleast_1d(result[0] if isinstance(result, tuple) else result)
            assert not np.isnan(values).any() and (values >= 0).all(), result


@FUZZ
@given(
    q=either(st.floats(1e-6, 1.0)),
    steps=either(st.integers(1, 10**6)),
    orders=either(st.lists(st.floats(1.01, 5000), min_size=1, max_size=4)),
)
def test_compute_rdp_and_get_privacy_spent(q, steps, orders):
    ok, rdp = check_call(lambda: ot.compute_rdp(q, 1.1, steps, orders), "q", "steps", "orders")
    if not ok:
        return
    assert not np.isnan(rdp).any() and (rdp >= 0).all()  # an unknown order is +inf, never NaN
    for conversion in ("current", "classic"):
        ok, spent = check_call(lambda c=conversion: ot.get_privacy_spent(orders, rdp, target_delta=1e-6, conversion=c))
        assert ok
        assert_epsilon(spent[0])


@FUZZ
@given(
    rdp_values=either(st.lists(st.floats(0, 100), min_size=3, max_size=3)),
    target_eps=st.one_of(st.none(), either(st.floats(0.01, 100))),
    target_delta=st.one_of(st.none(), either(st.floats(1e-12, 0.5))),
    conversion=either(st.sampled_from(["current", "classic"])),
)
def test_get_privacy_spent(rdp_values, target_eps, target_delta, conversion):
    orders = [2.0, 4.0, 8.0]
    ok, result = check_call(
        lambda: ot.get_privacy_spent(orders, rdp_values, target_eps, target_delta, conversion=conversion),
        "rdp_values",
        "target_eps",
        "target_delta",
        "conversion",
    )
    if ok:
        eps, delta, order = result
        assert_epsilon(float(eps))
        assert 0 <= delta <= 1 and order in orders


@pytest.mark.slow
@HALF
@given(
    name=st.sampled_from(["target_epsilon", "sample_size", "batch_size", "num_epochs", "target_delta"]), data=st.data()
)
def test_noise_multiplier_for_epsilon(name, data):
    valid = {**VALID_TRAINING, "target_epsilon": st.floats(0.05, 50), "num_epochs": st.floats(0.1, 20)}
    value = data.draw(either(valid[name]), label=name)
    args = {"target_epsilon": 2.0, "sample_size": 1000, "batch_size": 10, "num_epochs": 2, "target_delta": 1e-5}
    ok, sigma = check_call(lambda: ot.noise_multiplier_for_epsilon(**{**args, name: value}), name)
    if ok:
        assert isinstance(sigma, float) and 0 < sigma < math.inf


# -- the ledger ---------------------------------------------------------------------------------


@contextlib.contextmanager
def in_temporary_directory():
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            yield tmp
        finally:
            os.chdir(cwd)


PATHS = st.sampled_from(["", ".", "ledger.json", "no/such/dir/ledger.json", "/", "\x00bad"])


@FUZZ
@given(
    epsilon=either(st.floats(0.01, 100) | st.just(math.inf)),
    delta=either(st.floats(1e-12, 0.99)),
    path=st.one_of(st.none(), JUNK, PATHS),
    accountant=either(st.sampled_from(["rdp", "pld"])),
)
def test_privacy_budget(epsilon, delta, path, accountant):
    with in_temporary_directory():
        ok, budget = check_call(
            lambda: ot.PrivacyBudget(epsilon, delta, path=path, accountant=accountant),
            "epsilon",
            "delta",
            "path",
            "accountant",
        )
        if ok:
            assert budget.spent() == 0.0 and budget.remaining() == budget.epsilon
            ok, _ = check_call(lambda: budget.charge(dp_accounting.LaplaceDpEvent(100.0), "query"))
            assert_epsilon(budget.spent())
        check_call(lambda: ot.PrivacyBudget.load(path), "path", "ledger")


@FUZZ
@given(event=JUNK, description=either(st.text(max_size=20)))
def test_budget_charge_and_reserve(event, description):
    budget = ot.PrivacyBudget(10.0, 1e-6)
    for action in (budget.charge, budget.reserve, budget.can_afford, budget.epsilon_after):
        args = (event, description) if action in (budget.charge, budget.reserve) else (event,)
        check_call(lambda a=action, args=args: a(*args), "event", "description")
    assert budget.spent() == 0.0


# -- private data ---------------------------------------------------------------------------------


def frame(n=60):
    return pd.DataFrame({"a": np.linspace(0, 1, n), "b": (np.arange(n) % 2).astype(float), "s": ["x", "y"] * (n // 2)})


def private(budget=None):
    return ot.PrivateDataFrame(frame(), metadata={"a": (0, 1), "b": (0, 1)}, budget=budget or (1e9, 1e-5))


@FUZZ
@given(
    df=st.one_of(JUNK, st.just(pd.DataFrame()), st.just(frame())),
    metadata=st.one_of(
        JUNK,
        st.dictionaries(st.sampled_from(["a", "b", "s", "zz"]), st.one_of(JUNK, st.tuples(NUMBERS, NUMBERS))),
    ),
    budget=st.one_of(JUNK, st.tuples(NUMBERS, NUMBERS)),
)
def test_private_data_frame(df, metadata, budget):
    ok, pdf = check_call(lambda: ot.PrivateDataFrame(df, metadata=metadata, budget=budget), "df", "metadata", "budget")
    if ok:
        assert pdf.shape == frame().shape
        for lower, upper in (b for b in pdf.metadata.values() if isinstance(b, tuple)):
            assert math.isfinite(lower) and math.isfinite(upper) and lower <= upper


AGGREGATES = ["count", "sum", "mean", "describe"]


@FUZZ
@given(
    target=st.sampled_from(["frame", "series", "derived"]),
    aggregate=st.sampled_from(AGGREGATES),
    eps=either(st.floats(1e-3, 1e3)),
    mechanism=either(st.sampled_from(["laplace", "gaussian"])),
)
def test_aggregates(target, aggregate, eps, mechanism):
    pdf = private()
    obj = {"frame": pdf[["a", "b"]], "series": pdf["a"], "derived": pdf["a"] * 3 - pdf["b"]}[target]
    spent = pdf.budget.spent()
    ok, answer = check_call(lambda: getattr(obj, aggregate)(eps=eps, mechanism=mechanism), "eps", "mechanism")
    if ok:
        values = np.atleast_1d(np.asarray(answer, dtype=float))
        assert np.isfinite(values).all(), f"{aggregate} gave a non-finite DP answer: {answer}"
        assert pdf.budget.spent() > spent
    else:
        assert pdf.budget.spent() == spent  # a refused aggregate charges nothing


@FUZZ
@given(
    op=st.sampled_from(["+", "-", "*", "/", "r/", "r-", "<", "==", "neg", "abs"]),
    scalar=NUMBERS,
    aggregate=st.sampled_from(["sum", "mean"]),
)
def test_arithmetic_then_aggregate_is_finite_or_refused(op, scalar, aggregate):
    """Derived bounds never become infinite or NaN: the DP answer is finite, or bounds are asked for."""
    a = private()["a"]
    ops = {
        "+": lambda: a + scalar,
        "-": lambda: a - scalar,
        "*": lambda: a * scalar,
        "/": lambda: a / scalar,
        "r/": lambda: scalar / a,
        "r-": lambda: scalar - a,
        "<": lambda: a < scalar,
        "==": lambda: a == scalar,
        "neg": lambda: -(a * scalar),
        "abs": lambda: abs(a * scalar),
    }
    ok, derived = check_call(ops[op], "scalar", "beyond float range")
    if not ok:
        return
    if derived.bounds is not None:
        assert all(math.isfinite(b) for b in derived.bounds), derived.bounds
    ok, answer = check_call(lambda: getattr(derived, aggregate)(eps=1.0), "bounds", "eps")
    if ok:
        assert math.isfinite(answer), f"{op} {scalar!r} then {aggregate}: {answer}"


@FUZZ
@given(
    key=JUNK,
    lower=either(st.floats(-10, 0)),
    upper=either(st.floats(0, 10)),
    bounds=st.one_of(JUNK, st.dictionaries(st.sampled_from(["a", "zz"]), JUNK, max_size=2)),
    name=JUNK,
)
def test_selection_clip_drop_rename(key, lower, upper, bounds, name):
    pdf = private()
    check_call(lambda: pdf[key], "column", "private", "key")
    check_call(lambda: pdf["a"].clip(lower, upper), "metadata", "bounds", "lower", "upper")
    check_call(lambda: pdf.clip(bounds), "bounds", "metadata", "column")
    check_call(lambda: pdf.drop(key), "column")
    check_call(lambda: pdf["a"].rename(name), "name")
    check_call(lambda: pdf.__setitem__("c", key), "column", "private")


@FUZZ
@given(
    frames=st.sampled_from(["frame", "pair", "other source", "junk", "none"]),
    test_size=either(st.floats(0.01, 0.99)),
    random_state=either(st.integers(0, 2**32)),
    junk=JUNK,
)
def test_train_test_split(frames, test_size, random_state, junk):
    pdf = private()
    args = {
        "frame": (pdf,),
        "pair": (pdf[["a"]], pdf["b"]),
        "other source": (pdf[["a"]], private()["b"]),
        "junk": (pdf, junk),
        "none": (),
    }[frames]
    ok, parts = check_call(
        lambda: ot.train_test_split(*args, test_size=test_size, random_state=random_state),
        "test_size",
        "random_state",
        "private",
        "train_test_split",
        "same private dataset",
    )
    if ok:
        assert len(parts) == 2 * len(args)
        assert len(parts[0]) + len(parts[1]) == len(pdf) and len(parts[0]) >= 1 and len(parts[1]) >= 1


LOADER_ARGS = {
    "batch_size": st.integers(1, 60),
    "seed": st.integers(0, 2**32),
    "feature_shape": st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple),
    "dropna": st.booleans(),
}


@FUZZ
@given(name=st.sampled_from([*LOADER_ARGS, "feature_df", "label_df"]), data=st.data())
def test_private_data_loader(name, data):
    pdf = private()
    args = {"feature_df": pdf[["a", "b"]], "label_df": pdf["b"], "batch_size": 6}
    if name in LOADER_ARGS:
        value = data.draw(either(LOADER_ARGS[name]), label=name)
    else:
        value = data.draw(st.one_of(JUNK, st.sampled_from([pdf["s"], pdf, private()["b"], pdf[["s"]]])), label=name)
    ok, loader = check_call(
        lambda: ot.PrivateDataLoader(**{**args, name: value}),
        name,
        "feature_df",
        "label_df",
        "private dataset",
        "dtype",
    )
    if ok:
        assert loader.sample_size == 60 and loader.total_steps(1) >= 1
        for method, arg in ((loader.total_steps, "epochs"), (loader.steps_in_epoch, "epoch")):
            check_call(lambda m=method: m(value), arg)
        check_call(lambda: loader.dp_event(1, value), "noise_multiplier")


# -- the model ------------------------------------------------------------------------------------


def mlp():
    return tf.keras.Sequential(
        [tf.keras.layers.Dense(4, activation="relu", input_shape=(2,)), tf.keras.layers.Dense(1, activation="sigmoid")]
    )


@pytest.fixture(scope="module")
def trained():
    """One model and loader for every fuzzed fit call (the training step is traced once)."""
    pdf = private((1e9, 1e-5))
    loader = ot.PrivateDataLoader(pdf[["a", "b"]], pdf["b"], 6, seed=0)
    dp_model = ot.PrivateKerasModel(mlp(), l2_norm_clip=1.0, noise_multiplier=1.1, seed=0)
    dp_model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    dp_model.fit(loader, epochs=1, verbose=0)
    return pdf, loader, dp_model


@FUZZ
@given(
    model=st.one_of(JUNK, st.just("sequential")),
    l2_norm_clip=either(st.floats(1e-3, 1e3)),
    noise_multiplier=either(st.floats(1e-2, 1e3)),
    seed=either(st.integers(0, 2**32)),
    fix=JUNK,
)
def test_private_keras_model(model, l2_norm_clip, noise_multiplier, seed, fix):
    keras_model = mlp() if isinstance(model, str) and model == "sequential" else model
    check_call(
        lambda: ot.PrivateKerasModel(keras_model, l2_norm_clip, noise_multiplier, seed=seed, fix=fix),
        "model",
        "l2_norm_clip",
        "noise_multiplier",
        "seed",
        "fix",
    )


OPTIMIZERS = st.sampled_from(["sgd", "adam", "rmsprop", "nonsense", "DPKerasSGDOptimizer", ""])
LOSSES = st.sampled_from(["mse", "binary_crossentropy", "nonsense", "", "accuracy"])


@FUZZ
@given(optimizer=either(OPTIMIZERS), loss=either(LOSSES), metrics=st.one_of(st.none(), JUNK, st.just(["accuracy"])))
def test_compile(optimizer, loss, metrics):
    dp_model = ot.PrivateKerasModel(mlp(), 1.0, 1.1)
    check_call(lambda: dp_model.compile(optimizer=optimizer, loss=loss, metrics=metrics), "optimizer", "loss", "metric")


FIT_ARGS = {
    "epochs": st.integers(1, 2),
    "target_delta": st.floats(1e-9, 0.1),
    "steps_per_execution": st.integers(1, 64),
    "accountant": st.sampled_from(["rdp", None]),
    "verbose": st.sampled_from([0, 2]),
    "callbacks": st.just([tf.keras.callbacks.History()]),
    "validation_data": st.just((np.zeros((4, 2), np.float32), np.zeros(4, np.float32))),
}


@HALF
@given(name=st.sampled_from([*FIT_ARGS, "x"]), data=st.data())
def test_fit(trained, name, data):
    pdf, loader, dp_model = trained
    if name == "x":
        value = data.draw(st.one_of(JUNK, st.sampled_from([pdf, pdf[["a"]]])), label=name)
        args = {"x": value, "epochs": 1, "verbose": 0}
    else:
        value = data.draw(
            st.one_of(
                JUNK.filter(lambda v: not (name == "epochs" and isinstance(v, int | np.integer) and v > 2)),
                FIT_ARGS[name],
            ),
            label=name,
        )
        args = {"x": loader, "epochs": 1, "verbose": 0, name: value}
    entries = len(pdf.budget.entries)
    ok, history = check_call(lambda: dp_model.fit(**args), name, "x")
    if ok:
        assert all(math.isfinite(e) for e in history.history["epsilon"])
        assert len(pdf.budget.entries) == entries + 1
    else:  # refused before the first step: nothing reserved, nothing charged
        assert len(pdf.budget.entries) == entries


@FUZZ
@given(
    x=st.one_of(JUNK, st.sampled_from(["private", "public"])),
    label_columns=st.one_of(st.none(), JUNK, st.just(["p"])),
    batch_size=either(st.integers(1, 2048)),
)
def test_predict(trained, x, label_columns, batch_size):
    pdf, _, dp_model = trained
    value = {"private": pdf[["a", "b"]], "public": np.zeros((3, 2), np.float32)}.get(x, x) if isinstance(x, str) else x
    ok, out = check_call(
        lambda: dp_model.predict(value, label_columns=label_columns, batch_size=batch_size),
        "x",
        "label_columns",
        "batch_size",
        "input",
        "shape",
        "data adapter",
    )
    if ok and x == "private":
        assert isinstance(out, ot.PrivateDataFrame) and len(out) == len(pdf)


@FUZZ
@given(
    eps=st.one_of(st.none(), either(st.floats(1e-3, 1e3))),
    loss_bound=st.one_of(st.none(), either(st.floats(1e-3, 1e3))),
    batch_size=either(st.integers(1, 2048)),
    y=st.one_of(JUNK, st.just("labels")),
)
def test_evaluate(trained, eps, loss_bound, batch_size, y):
    pdf, _, dp_model = trained
    labels = pdf["b"] if isinstance(y, str) and y == "labels" else y
    ok, metrics = check_call(
        lambda: dp_model.evaluate(pdf[["a", "b"]], labels, eps=eps, loss_bound=loss_bound, batch_size=batch_size),
        "eps",
        "loss_bound",
        "bound",
        "batch_size",
        "y",
        "label_df",
    )
    if ok:
        assert all(math.isfinite(v) for v in metrics.values())


@FEW
@given(path=st.one_of(JUNK, PATHS, st.just("model.optf")))
def test_save_and_load(trained, path):
    _, _, dp_model = trained
    with in_temporary_directory():
        ok, _ = check_call(lambda: dp_model.save(path), "path")
        try:
            loaded = ot.load_private_model(path)
        except FileNotFoundError:  # the documented Python error for a missing file
            assert not ok
        except (ValueError, TypeError) as e:
            assert "path" in str(e), e
        else:
            assert ok and loaded.noise_multiplier == dp_model.noise_multiplier


# -- training that diverges -----------------------------------------------------------------------


def nan_training_case(kind):
    pdf = ot.PrivateDataFrame(
        pd.DataFrame({"a": np.linspace(0, 1, 80) * (1e30 if kind == "huge" else 1.0), "b": np.arange(80) % 2 * 1.0}),
        budget=ot.PrivacyBudget(1e6, 1e-6),
    )
    loader = ot.PrivateDataLoader(pdf[["a"]], pdf["b"], 8, seed=1)
    model = tf.keras.Sequential(
        [tf.keras.layers.Dense(8, activation="relu", input_shape=(1,)), tf.keras.layers.Dense(1)]
    )
    dp_model = ot.PrivateKerasModel(model, l2_norm_clip=1.0, noise_multiplier=1.0, seed=1)
    if kind == "huge":
        dp_model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=1e10), loss="mse")
    else:

        def nan_loss(y_true, y_pred):
            return tf.reduce_mean(y_pred, axis=-1) * float("nan")

        dp_model.compile(optimizer="sgd", loss=nan_loss)
    return pdf, loader, dp_model


def test_examples_with_non_finite_losses_contribute_nothing_and_training_goes_on():
    """Features of 1e30 and a diverging learning rate: losses overflow, yet training never stops on the data."""
    pdf, loader, dp_model = nan_training_case("huge")
    epochs = 20
    planned = accounting.epsilon_for_event(loader.dp_event(epochs, 1.0), pdf.budget.delta)
    history = dp_model.fit(loader, epochs=epochs, verbose=0, steps_per_execution=4)
    assert len(history.history["epsilon"]) == epochs
    assert all(np.isfinite(w).all() for w in dp_model.get_weights())
    entries = pdf.budget.entries
    assert len(entries) == 1 and entries[0].status == "committed"
    assert pdf.budget.spent() >= planned * (1 - 1e-9)
    pdf.budget.charge(dp_accounting.LaplaceDpEvent(10.0), "after the run")
    assert pdf.budget.spent() > planned * (1 - 1e-9)


def test_a_loss_that_is_never_finite_is_refused_before_anything_is_spent():
    pdf, loader, dp_model = nan_training_case("nan loss")
    with pytest.raises(ValueError, match="not finite"):
        dp_model.fit(loader, epochs=20, verbose=0, steps_per_execution=4)
    assert pdf.budget.entries == [] and pdf.budget.spent() == 0


# -- the DP optimizers ----------------------------------------------------------------------------

OPTIMIZER_NAMES = [
    "DPKerasSGDOptimizer",
    "DPKerasAdamOptimizer",
    "DPKerasAdagradOptimizer",
    "DPAdamGaussianOptimizer",
    "DPGradientDescentGaussianOptimizer",
]
OPTIMIZER_ARGS = {
    "l2_norm_clip": st.floats(1e-3, 1e3),
    "noise_multiplier": st.floats(0, 1e3),
    "num_microbatches": st.one_of(st.none(), st.integers(1, 64)),
    "learning_rate": st.floats(0, 1),
}


@keras2_only  # on Keras 3 they refuse to build (test_optimizers_keras3.py)
@FUZZ
@given(optimizer=st.sampled_from(OPTIMIZER_NAMES), name=st.sampled_from(sorted(OPTIMIZER_ARGS)), data=st.data())
def test_dp_optimizers(optimizer, name, data):
    value = data.draw(either(OPTIMIZER_ARGS[name]), label=name)
    args = {"l2_norm_clip": 1.0, "noise_multiplier": 1.1, "num_microbatches": None, "learning_rate": 0.01, name: value}
    ok, built = check_call(lambda: getattr(ot, optimizer)(**args), name)
    if ok:
        config = built.get_config()
        assert config["global_state"]["l2_norm_clip"] > 0 and math.isfinite(config["global_state"]["stddev"])


# -- model validation and the audit ---------------------------------------------------------------


def batch_norm_model():
    return tf.keras.Sequential(
        [tf.keras.layers.Dense(4, input_shape=(2,)), tf.keras.layers.BatchNormalization(), tf.keras.layers.Dense(1)]
    )


@FUZZ
@given(model=st.one_of(JUNK, st.sampled_from(["mlp", "batch norm"])), norm=either(st.sampled_from(["group", "layer"])))
def test_validate_and_fix_model(model, norm):
    keras_model = (
        {"mlp": mlp, "batch norm": batch_norm_model}[model]()
        if isinstance(model, str)
        and model
        in (
            "mlp",
            "batch norm",
        )
        else model
    )
    ok, offenders = check_call(lambda: validate.incompatible_layers(keras_model), "model")
    check_call(lambda: ot.validate_model(keras_model), "model", "BatchNormalization")
    ok_fix, fixed = check_call(lambda: ot.fix_model(keras_model, norm=norm), "model", "norm")
    if ok_fix:
        assert validate.incompatible_layers(fixed) == []
        ot.validate_model(fixed)


def audit_frames():
    n = 40
    raw = pd.DataFrame({"a": np.linspace(0, 1, n), "c": np.cos(np.arange(n)), "b": (np.arange(n) % 2).astype(float)})
    pdf = ot.PrivateDataFrame(raw, budget=(10.0, 1e-5))
    return ot.train_test_split(pdf, test_size=0.5, random_state=0)


AUDIT_ARGS = {
    "model": st.sampled_from(["dp", "keras"]),
    "train_pdf": st.just("train"),
    "holdout_pdf": st.just("holdout"),
    "target_delta": st.floats(1e-9, 0.5),
    "label_column": st.sampled_from([None, "b", ["b"]]),
    "attack_types": st.sampled_from([None, "threshold", ["threshold"]]),
    "accountant": st.sampled_from(["rdp", "pld"]),
    "seed": st.one_of(st.none(), st.integers(0, 2**31)),
}


@pytest.mark.slow
@FEW
@given(name=st.sampled_from(sorted(AUDIT_ARGS)), data=st.data())
def test_audit(trained, name, data):
    _, _, dp_model = trained
    train, holdout = audit_frames()
    keras_model = mlp()
    keras_model.compile(loss="binary_crossentropy")
    named = {"dp": dp_model, "keras": keras_model, "train": train, "holdout": holdout}
    extra = {"holdout_pdf": [train, train[["a", "b"]], holdout[["a", "c"]]], "train_pdf": [holdout[["c", "a", "b"]]]}
    value = data.draw(st.one_of(JUNK, AUDIT_ARGS[name], st.sampled_from(extra.get(name, [None]))), label=name)
    value = named.get(value, value) if isinstance(value, str) else value
    args = {"model": dp_model, "train_pdf": train, "holdout_pdf": holdout, "target_delta": 1e-5, name: value}
    spent = train.budget.spent()
    ok, report = check_call(lambda: ot.audit(**args), name, "columns", "rows")
    assert train.budget.spent() == spent  # the audit charges nothing
    if ok:
        assert 0 <= report.attack_auc <= 1 and report.empirical_epsilon_lower_bound >= 0


@FUZZ
@given(
    fpr=either(st.lists(st.floats(0, 1), min_size=1, max_size=5)),
    tpr=either(st.lists(st.floats(0, 1), min_size=1, max_size=5)),
    delta=either(st.floats(0, 0.99)),
)
def test_epsilon_lower_bound(fpr, tpr, delta):
    ok, bound = check_call(lambda: auditing.epsilon_lower_bound(fpr, tpr, delta=delta), "fpr", "tpr", "delta")
    if ok:
        assert isinstance(bound, float) and bound >= 0 and not math.isnan(bound)


# -- PPG data -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def subject():
    return ppg.synthetic_s1(n_labels=60, seed=0)


@FUZZ
@given(n_labels=either(st.integers(1, 100)), seed=either(st.integers(0, 2**32)))
def test_synthetic_s1(n_labels, seed):
    ok, s1 = check_call(lambda: ppg.synthetic_s1(n_labels=n_labels, seed=seed), "n_labels", "seed")
    if ok:
        assert len(s1["label"]) == n_labels and np.isfinite(s1["label"]).all()


@FUZZ
@given(
    s1=st.one_of(JUNK, st.just("subject"), st.just({"signal": {"wrist": {}}, "label": [1.0]})),
    num_timesteps=either(st.integers(1, 20)),
    train_max=either(st.integers(1, 60)),
)
def test_make_sequences(subject, s1, num_timesteps, train_max):
    value = subject if isinstance(s1, str) and s1 == "subject" else s1
    ok, seqs = check_call(
        lambda: ppg.make_sequences(value, num_timesteps=num_timesteps, train_max=train_max),
        "s1",
        "num_timesteps",
        "train_max",
    )
    if ok:
        assert seqs["x_train"].shape == (train_max - num_timesteps + 1, num_timesteps, 6)
        assert np.isfinite(seqs["x_train"]).all()


@FUZZ
@given(
    x=st.one_of(JUNK, st.just("sequences")),
    y=st.one_of(JUNK, st.just("labels")),
    label=either(st.sampled_from(["heart_rate", "y"])),
)
def test_sequences_to_frame(x, y, label):
    sequences, labels = np.zeros((5, 3, 6), np.float32), np.arange(5.0)
    xs = sequences if isinstance(x, str) and x == "sequences" else x
    ys = labels if isinstance(y, str) and y == "labels" else y
    ok, frame_ = check_call(lambda: ppg.sequences_to_frame(xs, ys, label=label), "x", "y", "label")
    if ok:
        assert frame_.shape == (5, 19) and frame_.columns[-1] == label


@FEW
@given(path=st.one_of(JUNK, PATHS))
def test_load_s1(path):
    with in_temporary_directory():
        try:
            ppg.load_s1(path)
        except (FileNotFoundError, IsADirectoryError, PermissionError):  # Python's documented errors for a path
            pass
        except (ValueError, TypeError) as e:
            assert "path" in str(e), e


# -- files and R ----------------------------------------------------------------------------------


@FUZZ
@given(path=st.one_of(JUNK, PATHS, st.just("data.csv")), metadata=st.one_of(st.none(), JUNK), budget=JUNK)
def test_from_csv(path, metadata, budget):
    with in_temporary_directory():
        frame().to_csv("data.csv", index=False)
        try:
            pdf = ot.PrivateDataFrame.from_csv(path, metadata=metadata, budget=budget)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            assert path != "data.csv"
        except (ValueError, TypeError, KeyError) as e:
            assert any(n in str(e) for n in ("path", "metadata", "budget", "epsilon", "delta")), e
        else:
            assert pdf.shape == frame().shape


@FUZZ
@given(obj=JUNK, value=JUNK)
def test_r_interop(obj, value):
    pytest.importorskip("rpy2")
    check_call(lambda: op_r.from_r(obj), "obj", "data.frame")
    ok, converted = check_call(lambda: op_r.to_r(value), "value")
    with in_temporary_directory():
        try:
            op_r.read_rds(obj)
        except FileNotFoundError:
            pass
        except (ValueError, TypeError) as e:
            assert "path" in str(e), e


@FEW
@given(argv=st.lists(st.one_of(st.sampled_from(["--N", "--batch_size", "--epochs", "--delta"]), st.text(max_size=6))))
def test_cli(argv):
    """Any command line ends in argparse's usage error (exit 2) or a printed epsilon, never a traceback."""
    full = ["--N", "1000", "--batch_size", "10", "--noise_multiplier", "1.1", "--epochs", "1", *argv]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            assert cli.compute_dp_sgd_privacy_main(full) == 0
        except SystemExit as e:
            assert e.code in (0, 2) and ("error" in err.getvalue() or e.code == 0)


# -- more methods ---------------------------------------------------------------------------------


@FUZZ
@given(
    method=st.sampled_from(["head", "tail", "sample", "to_numpy", "to_list", "to_dict", "to_csv", "to_json"]),
    arg=JUNK,
    target=st.sampled_from(["frame", "series"]),
)
def test_row_access_is_refused_whatever_the_arguments(method, arg, target):
    pdf = private()
    obj = pdf if target == "frame" else pdf["a"]
    with pytest.raises(ot.PrivacyError):
        getattr(obj, method)(arg)


@FUZZ
@given(epochs=either(st.integers(1, 10)), epoch=either(st.integers(0, 10)), sigma=either(st.floats(0.1, 10)))
def test_loader_methods(epochs, epoch, sigma):
    pdf = private()
    loader = ot.PrivateDataLoader(pdf[["a", "b"]], pdf["b"], 6, seed=0)
    ok, steps = check_call(lambda: loader.total_steps(epochs), "epochs")
    if ok:
        assert steps >= 1
    ok, steps = check_call(lambda: loader.steps_in_epoch(epoch), "epoch")
    if ok:
        assert steps >= 1
    ok, event = check_call(lambda: loader.dp_event(epochs, sigma), "epochs", "noise_multiplier")
    if ok:  # an event far outside dp_accounting's numerical range is refused with the argument named
        ok, eps = check_call(lambda: accounting.epsilon_for_event(event, 1e-5), "noise_multiplier")
        if ok:
            assert_epsilon(eps)


@FUZZ
@given(weights=st.one_of(JUNK, st.just("same"), st.lists(st.just(np.zeros((2, 4))), max_size=4)))
def test_set_weights(weights):
    dp_model = ot.PrivateKerasModel(mlp(), 1.0, 1.1)
    before = dp_model.get_weights()
    value = before if isinstance(weights, str) and weights == "same" else weights
    ok, _ = check_call(lambda: dp_model.set_weights(value), "weights")
    if not ok:  # a refused call changes nothing
        assert all(np.array_equal(a, b) for a, b in zip(before, dp_model.get_weights(), strict=True))
