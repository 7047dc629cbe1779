"""Empirical privacy auditing: membership-inference attacks, epsilon lower bounds, bad input."""

import math
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import op_tensorflow as ot
from op_tensorflow import accounting, audit_attacks, auditing
from op_tensorflow.frame import _raw

warnings.filterwarnings("ignore", category=ot.PrivacyWarning)

N_ROWS, N_FEATURES, DELTA = 400, 40, 1e-3
FEATURES = [f"x{i}" for i in range(N_FEATURES)]


def random_label_data(n=N_ROWS, d=N_FEATURES, seed=0):
    """High-dimensional noise with random labels: nothing to learn, everything to memorize."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return pd.DataFrame({**{f"x{i}": x[:, i] for i in range(d)}, "y": rng.integers(0, 2, n).astype(float)})


def big_mlp(d=N_FEATURES, seed=1):
    tf.keras.utils.set_random_seed(seed)
    return tf.keras.Sequential(
        [
            tf.keras.layers.Dense(256, activation="relu", input_shape=(d,)),
            tf.keras.layers.Dense(256, activation="relu"),
            tf.keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


@pytest.fixture(scope="module")
def trained():
    """One dataset split in members and non-members, and the same MLP trained with and without DP."""
    pdf = ot.PrivateDataFrame(random_label_data(), budget=(100.0, DELTA))
    train, holdout = ot.train_test_split(pdf, test_size=0.5, random_state=0)
    timings = {}

    started = time.perf_counter()
    plain = big_mlp()
    plain.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    rows = _raw(train)
    plain.fit(rows[FEATURES].to_numpy(np.float32), rows["y"].to_numpy(np.float32), epochs=100, batch_size=32, verbose=0)
    timings["plain_fit"] = time.perf_counter() - started

    started = time.perf_counter()
    dp = ot.PrivateKerasModel(big_mlp(), l2_norm_clip=1.0, noise_multiplier=1.1, seed=0)
    dp.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    loader = ot.PrivateDataLoader(train[FEATURES], train["y"], batch_size=20, seed=0)
    dp.fit(loader, epochs=20, target_delta=DELTA, verbose=0)
    timings["dp_fit"] = time.perf_counter() - started

    both = ["threshold", "logistic_regression"]
    started = time.perf_counter()
    plain_report = ot.audit(plain, train, holdout, target_delta=DELTA, attack_types=both)
    dp_report = ot.audit(dp, train, holdout, target_delta=DELTA, attack_types=both)
    timings["audits"] = time.perf_counter() - started
    print(f"\nnon-DP: {plain_report.summary()}\nDP: {dp_report.summary()}\ntimings: {timings}")
    return {
        "pdf": pdf,
        "train": train,
        "holdout": holdout,
        "plain": plain,
        "dp": dp,
        "plain_report": plain_report,
        "dp_report": dp_report,
    }


# -- the DP model and the memorizing model ------------------------------------------------------


@pytest.mark.slow
def test_dp_model_lower_bound_is_consistent_with_accountant(trained):
    report = trained["dp_report"]
    expected = accounting.epsilon_for_event(accounting.dp_sgd_event(20 / 200, 1.1, 200), DELTA)
    assert report.accountant_epsilon == pytest.approx(expected, rel=1e-9)
    assert report.accountant_epsilon == trained["dp"].privacy["epsilon"]
    assert 0 <= report.empirical_epsilon_lower_bound <= report.accountant_epsilon
    assert 0 <= report.empirical_epsilon_lower_bound_ci <= report.accountant_epsilon
    assert report.consistent is True
    assert report.attack_auc < 0.7  # the attacks barely beat guessing
    assert (report.n_train, report.n_holdout, report.target_delta) == (200, 200, DELTA)
    assert [a.attack_type for a in report.attacks] == ["threshold", "logistic_regression"]
    assert report.attack_auc == max(a.auc for a in report.attacks)
    assert report.attacker_advantage == max(a.advantage for a in report.attacks)
    assert report.empirical_epsilon_lower_bound == max(a.epsilon_lower_bound for a in report.attacks)
    text = report.summary()
    assert "NOT differentially private" in text
    assert f"{report.accountant_epsilon:.3f}" in text and f"{report.empirical_epsilon_lower_bound:.3f}" in text
    assert "consistent:" in text and "INCONSISTENT" not in text


@pytest.mark.slow
def test_non_dp_model_of_same_architecture_leaks_clearly_more(trained):
    plain, dp = trained["plain_report"], trained["dp_report"]
    assert plain.accountant_epsilon is None and plain.consistent is None
    assert plain.attack_auc > 0.8
    assert plain.attack_auc > dp.attack_auc + 0.2
    assert plain.attacker_advantage > dp.attacker_advantage + 0.3
    assert plain.empirical_epsilon_lower_bound > dp.empirical_epsilon_lower_bound + 1.5
    # With 200 rows per side even TF Privacy's 95% bound sees the leak.
    assert plain.empirical_epsilon_lower_bound_ci > 1.0
    assert dp.empirical_epsilon_lower_bound_ci < plain.empirical_epsilon_lower_bound_ci
    text = plain.summary()
    assert "NOT differentially private" in text and "no differential-privacy guarantee" in text


@pytest.mark.slow
def test_audit_spends_nothing_and_is_reproducible_with_a_seed(trained):
    spent = trained["pdf"].budget.spent()
    a = ot.audit(trained["plain"], trained["train"], trained["holdout"], target_delta=DELTA, attack_types="lr")
    b = ot.audit(trained["plain"], trained["train"], trained["holdout"], target_delta=DELTA, attack_types="lr")
    assert a == b
    assert trained["pdf"].budget.spent() == spent  # the audit is not a DP release: it charges nothing
    as_dict = a.to_dict()
    assert as_dict["differentially_private"] is False
    assert as_dict["attacks"][0]["attack_type"] == "logistic_regression"
    assert as_dict["accountant_epsilon"] is None and as_dict["consistent"] is None
    assert set(as_dict) >= {
        "attack_auc",
        "attacker_advantage",
        "empirical_epsilon_lower_bound",
        "accountant_epsilon",
        "target_delta",
        "n_train",
        "n_holdout",
    }


@pytest.mark.slow
def test_accountant_epsilon_is_recomputed_at_another_delta_also_after_loading(trained, tmp_path):
    dp = trained["dp"]
    expected = accounting.epsilon_for_event(accounting.dp_sgd_event(0.1, 1.1, 200), 1e-5)
    report = ot.audit(dp, trained["train"], trained["holdout"], target_delta=1e-5)
    assert report.accountant_epsilon == pytest.approx(expected, rel=1e-9)
    assert report.accountant_epsilon > trained["dp_report"].accountant_epsilon
    assert [a.attack_type for a in report.attacks] == ["threshold"]
    path = tmp_path / "dp.optf"
    dp.save(path)
    loaded = ot.load_private_model(path)
    again = ot.audit(loaded, trained["train"], trained["holdout"], target_delta=1e-5)
    assert again.accountant_epsilon == pytest.approx(expected, rel=1e-9)
    assert again.attack_auc == pytest.approx(report.attack_auc)


# -- the bound itself -------------------------------------------------------------------------


def test_epsilon_lower_bound_of_roc_points():
    # (fpr, tpr) = (0.1, 0.5): log(0.5 / 0.1) beats log(0.9 / 0.5); (0, 0) and (1, 1) give nothing.
    assert auditing.epsilon_lower_bound([0, 0.1, 1], [0, 0.5, 1], delta=0.0) == pytest.approx(math.log(5))
    assert auditing.epsilon_lower_bound([0, 0.1, 1], [0, 0.5, 1], delta=0.1) == pytest.approx(math.log(4))
    # The other side: (fpr, tpr) = (0.5, 0.9): log((1 - 0.5) / (1 - 0.9)).
    assert auditing.epsilon_lower_bound([0, 0.5, 1], [0, 0.9, 1], delta=0.0) == pytest.approx(math.log(5))
    # The diagonal (a guessing attacker) and curves below it give 0, never a negative bound.
    assert auditing.epsilon_lower_bound([0, 0.5, 1], [0, 0.5, 1], delta=1e-5) == 0.0
    assert auditing.epsilon_lower_bound([0, 0.5, 1], [0, 0.2, 1], delta=1e-5) == 0.0
    # Perfect separation at (0, 1) is skipped (division by zero); the bound comes from finite points.
    assert auditing.epsilon_lower_bound([0, 0, 0.5, 1], [0, 1, 1, 1], delta=0.0) == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="same shape"):
        auditing.epsilon_lower_bound([0, 1], [0, 0.5, 1], delta=0.0)


def test_tf_privacy_attacks_and_bounds_on_synthetic_losses():
    rng = np.random.default_rng(0)
    both = ("threshold", "logistic_regression")

    def run(loss_train, loss_test, seed=0):
        return audit_attacks.run_attacks(both, loss_train, loss_test, loss_train[:, None], loss_test[:, None], seed)

    same = run(rng.exponential(1.0, 300), rng.exponential(1.0, 300))
    for result in same.values():
        assert 0.4 < result.get_auc() < 0.6
        # TF Privacy's bound is a maximum of per-threshold 95% bounds: near 0 without signal, not exactly 0.
        assert 0.0 <= audit_attacks.tf_privacy_bound(result) < 0.5
    loss_train, loss_test = rng.exponential(0.1, 300), rng.exponential(1.0, 300)  # members: lower loss
    separated = run(loss_train, loss_test)
    for result in separated.values():
        assert result.get_auc() > 0.8
        assert 1.0 < audit_attacks.tf_privacy_bound(result) < math.log(2 * 300)
        assert auditing.epsilon_lower_bound(result.roc_curve.fpr, result.roc_curve.tpr, delta=1e-5) > 1.0
    # The seed fixes the trained attack's shuffling; numpy's global generator is restored afterwards.
    state = np.random.get_state()
    again = run(loss_train, loss_test)
    after = np.random.get_state()
    assert all(np.array_equal(x, y) for x, y in zip(state, after, strict=True))
    lr = separated["logistic_regression"]
    assert np.array_equal(again["logistic_regression"].membership_scores_train, lr.membership_scores_train)
    other = run(loss_train, loss_test, seed=1)["logistic_regression"]
    assert not np.array_equal(other.membership_scores_train, lr.membership_scores_train)


# -- bad input ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    pdf = ot.PrivateDataFrame(random_label_data(n=40, d=3), budget=(10.0, 1e-3))
    train, holdout = ot.train_test_split(pdf, test_size=0.5, random_state=0)
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, activation="sigmoid", input_shape=(3,))])
    model.compile(loss="binary_crossentropy")
    return {"pdf": pdf, "train": train, "holdout": holdout, "model": model}


def test_small_audit_runs_and_accepts_label_column_and_attack_names(small):
    report = ot.audit(small["model"], small["train"], small["holdout"], target_delta=1e-3, label_column="y")
    assert (report.n_train, report.n_holdout) == (20, 20)
    assert 0.0 <= report.attack_auc <= 1.0 and report.empirical_epsilon_lower_bound >= 0.0
    # A plain model trained on nothing: its bound is sampling noise only.
    assert report.accountant_epsilon is None
    assert [
        a.attack_type
        for a in ot.audit(
            small["model"],
            small["train"],
            small["holdout"],
            target_delta=0.5,
            attack_types=["THRESHOLD_ATTACK", "logistic_regression"],
        ).attacks
    ] == [
        "threshold",
        "logistic_regression",
    ]


def test_untrained_private_model_has_accountant_epsilon_zero(small):
    dp = ot.PrivateKerasModel(small["model"], noise_multiplier=1.0)
    dp.compile(optimizer="sgd", loss="binary_crossentropy")
    report = ot.audit(dp, small["train"], small["holdout"], target_delta=1e-3)
    assert report.accountant_epsilon == 0.0
    assert report.consistent is (report.empirical_epsilon_lower_bound <= 1e-9)
    uncompiled = ot.PrivateKerasModel(small["model"], noise_multiplier=1.0)
    with pytest.raises(ValueError, match="compile"):
        ot.audit(uncompiled, small["train"], small["holdout"], target_delta=1e-3)


@pytest.mark.parametrize("delta", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_target_delta_must_be_in_open_unit_interval(small, delta):
    with pytest.raises(ValueError, match="target_delta"):
        ot.audit(small["model"], small["train"], small["holdout"], target_delta=delta)


def test_bad_inputs_name_the_argument(small):
    model, train, holdout, pdf = small["model"], small["train"], small["holdout"], small["pdf"]
    with pytest.raises(TypeError, match="target_delta"):
        ot.audit(model, train, holdout, target_delta="0.1")
    with pytest.raises(TypeError, match="model"):
        ot.audit("not a model", train, holdout, target_delta=1e-3)
    uncompiled = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(3,))])
    with pytest.raises(ValueError, match="model is not compiled"):
        ot.audit(uncompiled, train, holdout, target_delta=1e-3)
    with pytest.raises(TypeError, match="train_pdf"):
        ot.audit(model, _raw(train), holdout, target_delta=1e-3)
    with pytest.raises(TypeError, match="holdout_pdf"):
        ot.audit(model, train, holdout["y"], target_delta=1e-3)
    with pytest.raises(ValueError, match="holdout_pdf has columns"):
        ot.audit(model, train, holdout[["x0", "x1", "y"]], target_delta=1e-3)
    other = ot.PrivateDataFrame(random_label_data(n=20, d=3).rename(columns={"x2": "z"}))
    with pytest.raises(ValueError, match="same dataset"):
        ot.audit(model, train, other, target_delta=1e-3)
    with pytest.raises(ValueError, match="label_column 'target'"):
        ot.audit(model, train, holdout, target_delta=1e-3, label_column="target")
    with pytest.raises(ValueError, match="label_column"):
        ot.audit(model, train, holdout, target_delta=1e-3, label_column=["x0", "x1", "x2", "y"])
    with pytest.raises(ValueError, match="feature column"):
        ot.audit(model, train, holdout, target_delta=1e-3, label_column=["x0", "y"])  # 2 features, model takes 3
    empty = train._derive(_raw(train).iloc[:0])
    with pytest.raises(ValueError, match="train_pdf is empty"):
        ot.audit(model, empty, holdout, target_delta=1e-3)
    with pytest.raises(ValueError, match="holdout_pdf is empty"):
        ot.audit(model, train, empty, target_delta=1e-3)
    with pytest.raises(ValueError, match="shares rows"):
        ot.audit(model, pdf, holdout, target_delta=1e-3)
    with pytest.raises(ValueError, match="attack_types"):
        ot.audit(model, train, holdout, target_delta=1e-3, attack_types="shadow_models")
    with pytest.raises(TypeError, match="attack_types"):
        ot.audit(model, train, holdout, target_delta=1e-3, attack_types=[])
    tiny = train._derive(_raw(train).iloc[:3])
    with pytest.raises(ValueError, match="attack_types: the logistic_regression attack needs at least 6"):
        ot.audit(model, tiny, holdout, target_delta=1e-3, attack_types="logistic_regression")
    with pytest.raises(ValueError, match="accountant"):
        ot.audit(model, train, holdout, target_delta=1e-3, accountant="moments")
    with pytest.raises(ValueError, match="seed"):
        ot.audit(model, train, holdout, target_delta=1e-3, seed=-1)


def test_non_numeric_and_missing_values_are_refused(small):
    df = random_label_data(n=20, d=3)
    text = ot.PrivateDataFrame(df.assign(x2=df["x2"].astype(str)))
    holdout = ot.PrivateDataFrame(random_label_data(n=20, d=3, seed=1))
    with pytest.raises(ValueError, match="train_pdf column 'x2'.*not numeric"):
        ot.audit(small["model"], text, holdout, target_delta=1e-3)
    missing = ot.PrivateDataFrame(df.assign(x1=np.where(np.arange(20) == 3, np.nan, df["x1"])))
    with pytest.raises(ValueError, match=r"holdout_pdf column\(s\) \['x1'\]"):
        ot.audit(small["model"], holdout, missing, target_delta=1e-3)
