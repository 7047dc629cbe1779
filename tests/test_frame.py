"""PrivateDataFrame / PrivateSeries: schema only, private derivations, DP aggregates."""

import copy
import math
import pickle

import dp_accounting
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import op_tensorflow as ot
from op_tensorflow.frame import _raw

SECRET = 987654.321  # a value that must never appear in any public output


def make_df(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "feature1": rng.uniform(0, 10, n),
            "feature2": rng.normal(0, 1, n),
            "target": rng.integers(0, 2, n).astype(float),
            "city": rng.choice(["a", "b"], n),
        }
    )


@pytest.fixture
def pdf():
    df = make_df()
    df.loc[3, "feature1"] = SECRET
    return ot.PrivateDataFrame(
        df,
        metadata={"feature1": (0, 10), "feature2": (-3, 3), "target": (0, 1), "city": ["a", "b"]},
        budget=ot.PrivacyBudget(5.0, 1e-6),
    )


def test_schema_is_visible(pdf):
    assert pdf.columns == ["feature1", "feature2", "target", "city"]
    assert pdf.shape == (200, 4) and len(pdf) == 200
    assert pdf.dtypes["feature1"] == np.float64
    assert pdf.metadata["feature1"] == (0.0, 10.0) and pdf.metadata["city"] == ["a", "b"]
    assert pdf.budget.epsilon == 5.0 and pdf.budget.spent() == 0.0


def test_repr_shows_schema_and_budget_only(pdf):
    for text in (repr(pdf), str(pdf), pdf._repr_html_(), repr(pdf["feature1"]), str(pdf["feature1"])):
        assert "987654" not in text
        assert "feature1" in text
    assert "epsilon spent 0 of 5" in repr(pdf)


LEAKS = [
    ("values", lambda o: o.values),
    ("to_numpy", lambda o: o.to_numpy()),
    ("np.asarray", lambda o: np.asarray(o)),
    ("np.array", lambda o: np.array(o, dtype=float)),
    ("iter", lambda o: list(o)),
    ("iloc", lambda o: o.iloc[0]),
    ("loc", lambda o: o.loc[0]),
    ("at", lambda o: o.at),
    ("index", lambda o: o.index),
    ("head", lambda o: o.head()),
    ("tail", lambda o: o.tail()),
    ("sample", lambda o: o.sample(1)),
    ("to_pandas", lambda o: o.to_pandas()),
    ("to_csv", lambda o: o.to_csv("/tmp/leak.csv")),
    ("to_dict", lambda o: o.to_dict()),
    ("to_json", lambda o: o.to_json()),
    ("pickle", lambda o: pickle.dumps(o)),
    ("deepcopy", lambda o: copy.deepcopy(o)),
    ("bool", lambda o: bool(o)),
    ("in", lambda o: SECRET in o),
]


@pytest.mark.parametrize("name,leak", LEAKS, ids=[n for n, _ in LEAKS])
@pytest.mark.parametrize("kind", ["frame", "selection", "series", "derived"])
def test_no_raw_value_leaves(pdf, kind, name, leak):
    obj = {
        "frame": pdf,
        "selection": pdf[["feature1", "feature2"]],
        "series": pdf["feature1"],
        "derived": pdf["feature1"] * 2 + 1,
    }[kind]
    with pytest.raises(ot.PrivacyError, match="private"):
        leak(obj)


def test_pandas_cannot_wrap_a_private_frame(pdf):
    with pytest.raises((ot.PrivacyError, ValueError, TypeError)):
        frame = pd.DataFrame(pdf)
        assert SECRET not in frame.to_numpy()


def test_attributes_are_read_only(pdf):
    with pytest.raises(AttributeError):
        pdf._data = None


def test_selection_shares_the_ledger(pdf):
    X, y = pdf[["feature1", "feature2"]], pdf["target"]
    assert isinstance(X, ot.PrivateDataFrame) and isinstance(y, ot.PrivateSeries)
    assert X.budget is pdf.budget and y.budget is pdf.budget
    X.count(eps=0.5)
    y.sum(eps=0.5)
    assert pdf.budget.spent() > 0.5
    with pytest.raises(KeyError, match="nope"):
        pdf[["feature1", "nope"]]
    with pytest.raises(KeyError, match="nope"):
        pdf["nope"]


def test_bounds_propagate_through_arithmetic(pdf):
    f1, f2 = pdf["feature1"], pdf["feature2"]
    assert (f1 * 2 + 1).bounds == (1.0, 21.0)
    assert (1 - f1).bounds == (-9.0, 1.0)
    assert (f1 + f2).bounds == (-3.0, 13.0)
    assert (f1 * f2).bounds == (-30.0, 30.0)
    assert (-f2).bounds == (-3.0, 3.0)
    assert abs(f2).bounds == (0.0, 3.0)
    assert (f1 / 2).bounds == (0.0, 5.0)
    assert (f1 / f2).bounds is None  # the denominator can be 0
    assert (f1 > 5).bounds == (0.0, 1.0)
    ratio = f1 / f2
    with pytest.raises(ValueError, match=r"clip\(lower, upper\)"):
        ratio.sum(eps=0.1)
    assert ratio.clip(-100, 100).bounds == (-100.0, 100.0)
    assert pdf.budget.spent() == 0.0  # a refused aggregate spends nothing


def test_derived_values_are_computed_correctly(pdf):
    doubled = pdf["feature2"] * 2 + pdf["feature1"]
    raw = _raw(pdf)
    pd.testing.assert_series_equal(_raw(doubled), (raw["feature2"] * 2 + raw["feature1"]).rename("feature2"))


def test_frames_from_different_sources_do_not_mix(pdf):
    other = ot.PrivateDataFrame(make_df(), metadata={"feature1": (0, 10)})
    with pytest.raises(ValueError, match="same private dataset"):
        pdf["feature1"] + other["feature1"]


def test_row_filters_by_private_conditions_are_refused(pdf):
    with pytest.raises(ot.PrivacyError, match="row count"):
        pdf[pdf["feature1"] > 5]


def test_column_assignment(pdf):
    pdf["ratio"] = (pdf["feature1"] / 10).clip(0, 1)
    assert pdf.metadata["ratio"] == (0.0, 1.0)
    assert "ratio" in pdf.columns
    with pytest.raises(TypeError, match="PrivateSeries"):
        pdf["x"] = [1, 2, 3]


def test_missing_bounds_are_an_error_not_a_guess():
    pdf = ot.PrivateDataFrame(make_df())
    with pytest.raises(ValueError, match="needs public bounds"):
        pdf["feature1"].mean(eps=1.0)
    with pytest.raises(ValueError, match="needs public bounds"):
        pdf[["feature1"]].sum(eps=1.0)
    assert pdf.budget.spent() == 0.0


def unlimited_frame(n=50, **meta):
    df = pd.DataFrame({"x": np.linspace(0, 1, n)})
    return ot.PrivateDataFrame(df, metadata=meta or {"x": (0, 1)}, budget=(math.inf, 1e-6))


@pytest.mark.slow
def test_laplace_count_noise_scale():
    pdf = unlimited_frame()
    eps = 0.5
    noise = np.array([pdf.count(eps=eps) - 50 for _ in range(3000)])
    assert stats.kstest(noise, stats.laplace(scale=1 / eps).cdf).pvalue > 1e-4
    # and not a smaller scale (which would be a privacy bug)
    assert stats.kstest(noise, stats.laplace(scale=0.7 / eps).cdf).pvalue < 1e-4


@pytest.mark.slow
def test_laplace_sum_noise_scales_with_bounds():
    pdf = ot.PrivateDataFrame(pd.DataFrame({"x": np.full(20, 4.0)}), metadata={"x": (-5, 4)}, budget=(math.inf, 1e-6))
    eps = 1.0
    noise = np.array([pdf["x"].sum(eps=eps) - 80 for _ in range(3000)])
    # sensitivity max(|lower|, |upper|) = 5
    assert stats.kstest(noise, stats.laplace(scale=5 / eps).cdf).pvalue > 1e-4


@pytest.mark.slow
def test_gaussian_count_noise_matches_accountant():
    pdf = unlimited_frame()
    eps = 1.0
    noise = np.array([pdf.count(eps=eps, mechanism="gaussian") - 50 for _ in range(3000)])
    sigma = np.std(noise)
    # the calibrated Gaussian at (eps, delta) has epsilon <= eps, and slightly less noise does not
    acc = ot.accounting.make_accountant("rdp")
    assert acc.compose(dp_accounting.GaussianDpEvent(sigma * 1.05)).get_epsilon(1e-6) < eps
    assert (
        ot.accounting.make_accountant("rdp").compose(dp_accounting.GaussianDpEvent(sigma * 0.95)).get_epsilon(1e-6)
        > eps
    )


def test_aggregates_are_charged_before_release():
    pdf = ot.PrivateDataFrame(pd.DataFrame({"x": np.linspace(0, 1, 50)}), metadata={"x": (0, 1)}, budget=(1.0, 1e-6))
    pdf["x"].mean(eps=0.6)
    spent = pdf.budget.spent()
    assert spent == pytest.approx(0.6, rel=0.05)
    with pytest.raises(ot.BudgetExceededError):
        pdf["x"].sum(eps=0.6)
    assert pdf.budget.spent() == spent  # refusal changed nothing


def test_dp_answers_are_close_with_large_eps(pdf):
    raw = _raw(pdf)
    big = ot.PrivateDataFrame(make_df(5000), metadata={"feature2": (-3, 3)}, budget=(math.inf, 1e-6))
    raw = _raw(big)
    assert big["feature2"].mean(eps=50) == pytest.approx(raw["feature2"].clip(-3, 3).mean(), abs=0.01)
    assert big.count(eps=50) == pytest.approx(5000, abs=1)
    summary = big[["feature2"]].describe(eps=50)
    assert list(summary.index) == ["count", "mean", "lower", "upper"]
    assert summary.loc["count", "feature2"] == pytest.approx(5000, abs=1)


def test_train_test_split_keeps_rows_aligned_and_ledger_shared(pdf):
    X, y = pdf[["feature1", "feature2"]], pdf["target"]
    X_train, X_test, y_train, y_test = ot.train_test_split(X, y, test_size=0.25, random_state=1)
    assert (len(X_train), len(X_test)) == (150, 50)
    assert _raw(X_train).index.equals(_raw(y_train).index) and _raw(X_test).index.equals(_raw(y_test).index)
    assert set(_raw(X_train).index).isdisjoint(_raw(X_test).index)
    assert len(set(_raw(X_train).index) | set(_raw(X_test).index)) == 200
    assert X_test.budget is pdf.budget
    again = ot.test_train_split(X, y, test_size=0.25, random_state=1)
    assert _raw(again[1]).index.equals(_raw(X_test).index)
    with pytest.raises(ValueError, match="test_size"):
        ot.train_test_split(X, test_size=1.5)
    with pytest.raises(TypeError, match="private objects"):
        ot.train_test_split(make_df())


def test_from_csv(tmp_path):
    path = tmp_path / "data.csv"
    make_df(30).to_csv(path, index=False)
    pdf = ot.PrivateDataFrame.from_csv(path, metadata={"feature1": (0, 10)}, budget=(1.0, 1e-5))
    assert pdf.shape == (30, 4) and pdf.metadata == {"feature1": (0.0, 10.0)}


@pytest.mark.parametrize(
    "kwargs,error,needle",
    [
        (dict(df=[[1, 2]]), TypeError, "df must be a pandas DataFrame"),
        (dict(df=pd.DataFrame({"a": []})), ValueError, "at least one row"),
        (dict(df=pd.DataFrame({"a": [1.0]}), metadata={"b": (0, 1)}), ValueError, "not in df"),
        (dict(df=pd.DataFrame({"a": [1.0]}), metadata={"a": (2, 1)}), ValueError, "lower <= upper"),
        (dict(df=pd.DataFrame({"a": [1.0]}), metadata={"a": (0, math.inf)}), ValueError, "finite"),
        (dict(df=pd.DataFrame({"a": [1.0]}), budget=(0, 1e-5)), ValueError, "epsilon"),
        (dict(df=pd.DataFrame({"a": [1.0]}), budget=(1, 0)), ValueError, "delta"),
        (dict(df=pd.DataFrame({"a": [1.0]}), budget="lots"), TypeError, "budget"),
    ],
)
def test_bad_construction(kwargs, error, needle):
    with pytest.raises(error, match=needle):
        ot.PrivateDataFrame(**kwargs)


def test_bad_aggregate_arguments(pdf):
    with pytest.raises(ValueError, match="eps"):
        pdf.count(eps=0)
    with pytest.raises(ValueError, match="eps"):
        pdf["feature1"].mean(eps=-1)
    with pytest.raises(ValueError, match="mechanism"):
        pdf.count(eps=1, mechanism="exponential")
    with pytest.raises(TypeError, match="numeric"):
        pdf["city"].clip(0, 1)
    assert pdf.budget.spent() == 0.0
