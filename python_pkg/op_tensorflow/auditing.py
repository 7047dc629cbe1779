"""Empirical privacy auditing of a trained model with membership-inference attacks.

``audit(model, train_pdf, holdout_pdf, target_delta=...)`` attacks a trained model the
way TF Privacy's membership-inference tests do: an attacker sees the model's per-example
loss (and, for the trained attack, its outputs) on *members* (rows the model was trained
on) and *non-members* (rows of the same dataset it never saw), and tries to tell them
apart. From the attack's ROC curve it reports the attack AUC, the attacker advantage
``max |TPR - FPR|`` and an empirical lower bound on epsilon, and compares that bound with
the epsilon of the DP-SGD accountant.

**The audit is not differentially private.** It reads the raw private rows of both frames
(it is a tool for the data owner, like a debugger), and its numbers (losses, AUC, bounds)
depend on individual rows without any noise. Nothing is charged to the dataset's ledger.
Do not release its results as DP answers.

The lower bound is the hypothesis-testing bound of DP (Kairouz et al. 2015; Jagielski et
al. 2020; Nasr et al. 2021): an (epsilon, delta)-DP mechanism lets every test between
"member" and "non-member" satisfy ``TPR <= e^eps * FPR + delta`` and
``1 - FPR <= e^eps * (1 - TPR) + delta``. Hence, over the points of the ROC curve,

    eps_lb = max(log((TPR - delta) / FPR), log((1 - FPR - delta) / (1 - TPR)))

taken where numerators and denominators are positive, and clamped at 0.

The attacks are TF Privacy's own (``tensorflow_privacy.privacy.privacy_tests``, shipped by
``tensorflow-empirical-privacy``; the ``tensorflow-privacy`` wheel lacks them), run through
``membership_inference_attack.run_attacks``: ``"threshold"`` is its ``THRESHOLD_ATTACK`` (ROC of
the negated loss, members as positives) and ``"logistic_regression"`` its ``LOGISTIC_REGRESSION``
trained attack (features: model outputs and loss; balanced classes; 2-fold cross-validated
membership scores; ``LogisticRegression`` with ``C`` grid-searched). The AUC, the attacker
advantage and the ROC curves are TF Privacy's; the point estimate above is computed here over
the points of TF Privacy's ROC curves (which drop collinear points, as sklearn's ``roc_curve``
does by default, so near FPR = 0 the estimate can be lower than over every threshold).

The high-confidence bound ``empirical_epsilon_lower_bound_ci`` is TF Privacy's
``epsilon_lower_bound_value`` (its ``EpsilonLowerBound``: Bailey's 95% lower confidence bound on
the ratios TPR/FPR and TNR/FNR, for thresholds in both directions), the largest over its values
and the attacks, clamped at 0. It differs from the point estimate in two ways to keep in mind:
it is a bound for delta = 0 (it does not subtract ``target_delta``), and it is the maximum of
per-threshold 95% bounds without a correction for choosing the best threshold, so it can exceed
the point estimate (e.g. at FPR = 0, where TF Privacy counts half a false positive instead of
skipping the point) and is not a simultaneous 95% guarantee.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import warnings
from collections.abc import Sequence

import dp_accounting
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.exceptions import ConvergenceWarning

from op_tensorflow import _checks, accounting, clipping
from op_tensorflow.arguments import per_example_loss
from op_tensorflow.frame import PrivateDataFrame, _raw
from op_tensorflow.model import PrivateKerasModel

__all__ = ["ATTACK_TYPES", "AttackResult", "AuditReport", "audit", "epsilon_lower_bound"]

#: The membership-inference attacks ``audit`` can run.
ATTACK_TYPES = ("threshold", "logistic_regression")
_ATTACK_ALIASES = {
    "threshold": "threshold",
    "threshold_attack": "threshold",
    "logistic_regression": "logistic_regression",
    "lr": "logistic_regression",
}
#: Confidence level of TF Privacy's epsilon lower bounds (``1 - EPSILON_ALPHA`` of its data_structures).
CONFIDENCE = 0.95
_NOT_DP = (
    "NOT differentially private: computed from the raw private rows, for the data owner only; "
    "do not release these numbers as DP answers."
)


@dataclasses.dataclass(frozen=True)
class AttackResult:
    """The outcome of one membership-inference attack.

    Attributes:
        attack_type: ``"threshold"`` or ``"logistic_regression"``.
        auc: Area under the attack's ROC curve (0.5: guessing; 1: perfect).
        advantage: Attacker advantage ``max |TPR - FPR|`` over the ROC curve.
        epsilon_lower_bound: Point estimate of the empirical epsilon lower bound.
        epsilon_lower_bound_ci: TF Privacy's largest epsilon lower bound at the report's
            confidence (``epsilon_lower_bound_value``; for delta = 0), clamped at 0.
    """

    attack_type: str
    auc: float
    advantage: float
    epsilon_lower_bound: float
    epsilon_lower_bound_ci: float


@dataclasses.dataclass(frozen=True)
class AuditReport:
    """The result of :func:`audit`. Its numbers are NOT differentially private.

    Attributes:
        attack_auc: The largest attack AUC over the attacks run.
        attacker_advantage: The largest attacker advantage ``max |TPR - FPR|``.
        empirical_epsilon_lower_bound: The largest point-estimate lower bound on epsilon
            (from the ROC curves, at ``target_delta``; clamped at 0). A point estimate from
            finite samples, not a high-confidence bound: it can exceed the true epsilon by
            chance, most easily with few rows.
        accountant_epsilon: The DP-SGD accountant's epsilon at ``target_delta`` for a
            ``PrivateKerasModel``; None for a plain Keras model (no guarantee).
        target_delta: The delta of both the lower bound and the accountant's epsilon.
        n_train: Number of members (rows of ``train_pdf``).
        n_holdout: Number of non-members (rows of ``holdout_pdf``).
        empirical_epsilon_lower_bound_ci: TF Privacy's high-confidence epsilon lower bound
            (``epsilon_lower_bound_value`` of its attack results: Bailey's 95% bound on the
            TPR/FPR-type ratios, for delta = 0), the largest over thresholds and attacks, clamped
            at 0. Each threshold's bound holds with probability ``confidence``, the maximum over
            thresholds is not corrected for the choice; it treats the examples' attack outcomes
            as independent trials, which they are only approximately (they share one model).
        confidence: The confidence level of ``empirical_epsilon_lower_bound_ci``.
        attacks: One ``AttackResult`` per attack run.
    """

    attack_auc: float
    attacker_advantage: float
    empirical_epsilon_lower_bound: float
    accountant_epsilon: float | None
    target_delta: float
    n_train: int
    n_holdout: int
    empirical_epsilon_lower_bound_ci: float = 0.0
    confidence: float = CONFIDENCE
    attacks: tuple[AttackResult, ...] = ()

    @property
    def consistent(self) -> bool | None:
        """Whether the lower bound is <= the accountant's epsilon (None for a plain Keras model)."""
        if self.accountant_epsilon is None:
            return None
        return self.empirical_epsilon_lower_bound <= self.accountant_epsilon + 1e-9

    def summary(self) -> str:
        """A human-readable account of the audit, stating that it is not a DP result."""
        lines = [
            "Membership-inference audit. " + _NOT_DP,
            f"  members (train): {self.n_train}, non-members (holdout): {self.n_holdout}, "
            f"delta = {self.target_delta:g}",
        ]
        for a in self.attacks:
            lines.append(
                f"  attack {a.attack_type}: AUC {a.auc:.3f}, advantage {a.advantage:.3f}, epsilon lower bound "
                f"{a.epsilon_lower_bound:.3f} ({self.confidence:.0%}: {a.epsilon_lower_bound_ci:.3f})"
            )
        lines += [
            f"  attack AUC (best): {self.attack_auc:.3f}; attacker advantage (best): {self.attacker_advantage:.3f}",
            f"  empirical epsilon lower bound: {self.empirical_epsilon_lower_bound:.3f} (point estimate from "
            f"finite samples, not a high-confidence bound); {self.empirical_epsilon_lower_bound_ci:.3f} at "
            f"{self.confidence:.0%} confidence (TF Privacy's epsilon_lower_bound_value, for delta = 0)",
        ]
        if self.accountant_epsilon is None:
            lines += [
                "  accountant epsilon: none (a plain Keras model has no differential-privacy guarantee)",
                "  consistency: not applicable; the bound above is a lower bound on what this model leaks.",
            ]
            return "\n".join(lines)
        lines.append(f"  accountant epsilon: {self.accountant_epsilon:.3f} (DP-SGD accounting at the same delta)")
        if self.consistent:
            lines.append(
                f"  consistent: the empirical lower bound {self.empirical_epsilon_lower_bound:.3f} <= accountant "
                f"epsilon {self.accountant_epsilon:.3f}. (An attack that finds less than the guarantee does not "
                "prove the guarantee; it only fails to contradict it.)"
            )
        elif self.empirical_epsilon_lower_bound_ci > self.accountant_epsilon:
            lines.append(
                f"  INCONSISTENT: even the {self.confidence:.0%} lower bound "
                f"{self.empirical_epsilon_lower_bound_ci:.3f} exceeds the accountant epsilon "
                f"{self.accountant_epsilon:.3f}: the training, the accounting, or the member/non-member split "
                "(same distribution, disjoint rows) is likely wrong."
            )
        else:
            lines.append(
                f"  INCONSISTENT point estimate: {self.empirical_epsilon_lower_bound:.3f} > accountant epsilon "
                f"{self.accountant_epsilon:.3f}, but the {self.confidence:.0%} bound "
                f"{self.empirical_epsilon_lower_bound_ci:.3f} does not exceed it: likely sampling noise of a "
                "small audit; audit with more rows."
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Every field as plain Python values, plus ``consistent`` and ``differentially_private`` (False)."""
        out = dataclasses.asdict(self)
        out["attacks"] = [dataclasses.asdict(a) for a in self.attacks]
        out["consistent"] = self.consistent
        out["differentially_private"] = False
        return out

    def __str__(self) -> str:
        return self.summary()


# ---------------------------------------------------------------------------------------
# Bounds from ROC curves.


def _rates(name: str, values) -> np.ndarray:
    try:
        rates = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"{name} must be an array of rates in [0, 1], got {type(values).__name__}.") from None
    if rates.ndim > 1 or not np.all((rates >= 0) & (rates <= 1)):  # also refuses NaN
        raise ValueError(f"{name} must be a 1-D array of rates in [0, 1], got {values!r}.")
    return rates


def epsilon_lower_bound(fpr, tpr, *, delta: float) -> float:
    """The empirical epsilon lower bound of a ROC curve (a point estimate), clamped at 0.

    ``max(log((tpr - delta) / fpr), log((1 - fpr - delta) / (1 - tpr)))`` over the points
    where the numerator and the denominator are positive.

    Args:
        fpr: False-positive rates of the ROC curve's points.
        tpr: True-positive rates of the same points.
        delta: The delta of the (epsilon, delta) guarantee being tested, in [0, 1).

    Returns:
        The largest bound over the points, or 0.0 if no point gives a positive one.

    Raises:
        TypeError: ``fpr`` or ``tpr`` is not numeric.
        ValueError: A rate is outside [0, 1] or NaN, the shapes differ, or ``delta`` is not in [0, 1).
    """
    fpr, tpr = _rates("fpr", fpr), _rates("tpr", tpr)
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0 <= delta < 1:
        raise ValueError(f"delta must be a number in [0, 1), got {delta!r}.")
    if fpr.shape != tpr.shape:
        raise ValueError(f"fpr and tpr must have the same shape, got {fpr.shape} and {tpr.shape}.")
    best = 0.0
    for num, den in ((tpr - delta, fpr), (1.0 - fpr - delta, 1.0 - tpr)):
        ok = (num > 0) & (den > 0)
        if ok.any():
            best = max(best, float(np.max(np.log(num[ok] / den[ok]))))
    return best


# ---------------------------------------------------------------------------------------
# The attacks: TF Privacy's ``membership_inference_attack.run_attacks``.

_MIN_ROWS = {"threshold": 1, "logistic_regression": 6}
_TF_PRIVACY_ATTACKS = {"threshold": "THRESHOLD_ATTACK", "logistic_regression": "LOGISTIC_REGRESSION"}


def _tf_privacy_mia():
    """TF Privacy's attack module and data structures, imported on first use (the import takes seconds)."""
    try:
        from tensorflow_privacy.privacy.privacy_tests.membership_inference_attack import (
            data_structures,
            membership_inference_attack,
        )
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "audit needs TF Privacy's membership-inference attacks (tensorflow_privacy.privacy.privacy_tests), "
            "which the tensorflow-privacy wheel lacks: install them with "
            "`pip install --no-deps tensorflow-empirical-privacy==0.1.0 scikit-learn statsmodels immutabledict`."
        ) from err
    return membership_inference_attack, data_structures


@contextlib.contextmanager
def _numpy_global_seed(seed: int | None):
    """Seeds numpy's global generator (TF Privacy's trained attacks shuffle with it), then restores its state."""
    if seed is None:
        yield
        return
    state = np.random.get_state()
    np.random.seed(np.random.SeedSequence(seed).generate_state(8))
    try:
        yield
    finally:
        np.random.set_state(state)


def _run_attacks(attacks, loss_train, loss_test, out_train, out_test, seed) -> dict:
    """Runs TF Privacy's attacks; returns its ``SingleAttackResult`` per attack name."""
    mia, ds = _tf_privacy_mia()
    attack_input = ds.AttackInputData(
        logits_train=out_train,  # the trained attack's features: model outputs and loss
        logits_test=out_test,
        loss_train=loss_train,
        loss_test=loss_test,
        loss_function_using_logits=True,  # unused (losses are given); avoids TF Privacy's inference of it
    )
    types = [ds.AttackType[_TF_PRIVACY_ATTACKS[name]] for name in attacks]
    with _numpy_global_seed(seed), np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # TF Privacy's bounds divide by zero at empty counts
        warnings.simplefilter("ignore", ConvergenceWarning)  # the attacker's logistic regressions
        warnings.filterwarnings("ignore", message=r"scipy\.optimize", category=DeprecationWarning)  # sklearn's lbfgs
        results = mia.run_attacks(attack_input, attack_types=types)
    by_type = {r.attack_type.name: r for r in results.single_attack_results}
    missing = [name for name in attacks if _TF_PRIVACY_ATTACKS[name] not in by_type]
    if missing:
        raise ValueError(f"attack_types: TF Privacy could not run the {missing} attack(s) on so few rows.")
    return {name: by_type[_TF_PRIVACY_ATTACKS[name]] for name in attacks}


def _tf_privacy_bound(result) -> float:
    """The largest of TF Privacy's high-confidence epsilon lower bounds of one attack, clamped at 0."""
    values = [np.asarray(v, dtype=np.float64) for v in result.epsilon_lower_bound_value.bounds.values()]
    values = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    return max(0.0, float(values.max())) if values.size else 0.0


# ---------------------------------------------------------------------------------------
# Input checks and model evaluation.


def _attack_types(attack_types) -> tuple[str, ...]:
    if attack_types is None:
        return ("threshold",)
    if isinstance(attack_types, str):
        attack_types = [attack_types]
    if not isinstance(attack_types, Sequence) or not attack_types:
        raise TypeError(f"attack_types must be None, an attack name or a non-empty list of them, got {attack_types!r}.")
    chosen = []
    for name in attack_types:
        key = str(getattr(name, "name", name)).lower()  # also accepts TF Privacy's AttackType members
        key = _ATTACK_ALIASES.get(key, key)
        if key not in ATTACK_TYPES:
            raise ValueError(f"attack_types must name attacks among {ATTACK_TYPES}, got {name!r}.")
        if key not in chosen:
            chosen.append(key)
    return tuple(chosen)


def _label_columns(label_column, columns: list) -> list:
    if label_column is None:
        return [columns[-1]]
    names = [label_column] if isinstance(label_column, str) or not isinstance(label_column, Sequence) else label_column
    names = list(names)
    if not names:
        raise ValueError("label_column must name at least one column.")
    missing = [n for n in names if n not in columns]
    if missing:
        raise ValueError(
            f"label_column {missing if len(missing) > 1 else missing[0]!r} is not a column; columns: {columns}."
        )
    if len(names) == len(columns):
        raise ValueError("label_column names every column; at least one feature column must remain.")
    return names


def _arrays(arg: str, frame: pd.DataFrame, labels: list) -> tuple[np.ndarray, np.ndarray]:
    for col, dtype in frame.dtypes.items():
        if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)) or (
            pd.api.types.is_complex_dtype(dtype)
        ):
            raise ValueError(f"{arg} column {col!r} has dtype {dtype}, which is not numeric; encode it first.")
    features = [c for c in frame.columns if c not in labels]
    x = frame[features].to_numpy(dtype=np.float32, na_value=np.nan)
    y = frame[labels].to_numpy(dtype=np.float32, na_value=np.nan)
    bad = [c for c, b in zip(features + labels, ~np.isfinite(np.hstack([x, y])).all(axis=0), strict=True) if b]
    if bad:
        raise ValueError(f"{arg} column(s) {bad} contain missing or infinite values; clean them first.")
    return x, (y[:, 0] if len(labels) == 1 else y)


def _loss_fn(model) -> tuple[tf.keras.Model, object]:
    if isinstance(model, PrivateKerasModel):
        if model._loss_fn is None:
            raise ValueError("model has no loss: compile it (dp_model.compile(optimizer=..., loss=...)) first.")
        return model.model, model._loss_fn
    if isinstance(model, tf.keras.Model):
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError("model is not compiled: call model.compile(loss=...) so its per-example loss is known.")
        if isinstance(loss, (dict, list, tuple)):
            raise ValueError("model has several losses (one per output); audit supports single-output models.")
        return model, per_example_loss(loss)
    raise TypeError(f"model must be a PrivateKerasModel or a tf.keras Model, got {type(model).__name__}.")


def _evaluate(keras_model: tf.keras.Model, loss_fn, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    shape = tuple(keras_model.input_shape[1:])
    if shape and None not in shape:
        if math.prod(shape) != x.shape[1]:
            raise ValueError(
                f"the frames have {x.shape[1]} feature column(s) but the model expects inputs of shape {shape}; "
                "check label_column and the columns."
            )
        x = x.reshape((len(x), *shape))
    outputs = keras_model.predict(x, batch_size=1024, verbose=0)
    losses = clipping.per_example_losses(loss_fn, tf.constant(y), tf.constant(outputs)).numpy().astype(np.float64)
    outputs = np.asarray(outputs, dtype=np.float64).reshape((len(x), -1))
    if not (np.isfinite(losses).all() and np.isfinite(outputs).all()):
        raise FloatingPointError("the model produced non-finite outputs or losses on the audit rows.")
    return losses, outputs


def _accountant_epsilon(model, delta: float, accountant: str) -> float | None:
    if not isinstance(model, PrivateKerasModel):
        return None
    privacy = model.privacy
    if not privacy.get("steps"):
        return 0.0  # never trained on private data: its weights do not depend on it
    if privacy.get("delta") is not None and math.isclose(privacy["delta"], delta, rel_tol=1e-12, abs_tol=0.0):
        return float(privacy["epsilon"])
    events = list(model._events)
    if not events:  # loaded from a file: the recorded totals (exact when every fit used one sampling rate)
        events = [accounting.dp_sgd_event(privacy["sampling_rate"], privacy["noise_multiplier"], privacy["steps"])]
    return accounting.epsilon_for_event(dp_accounting.ComposedDpEvent(events), delta, accountant)


def audit(
    model,
    train_pdf: PrivateDataFrame,
    holdout_pdf: PrivateDataFrame,
    *,
    target_delta: float,
    label_column: str | Sequence[str] | None = None,
    attack_types: str | Sequence[str] | None = None,
    accountant: str = "rdp",
    seed: int | None = 0,
) -> AuditReport:
    """Audits a trained model's privacy empirically with membership-inference attacks.

    **Not differentially private.** The audit reads the raw rows of both frames (it is a
    tool for the data owner), charges nothing to the ledger, and its numbers depend on
    individual rows: keep them with the data; never release them as DP answers.

    Members and non-members must be disjoint rows of one dataset drawn the same way (e.g.
    the two parts of ``train_test_split``), the model trained on exactly ``train_pdf``'s
    rows. The empirical lower bound is then a sound lower bound on the epsilon that the
    training achieved (up to sampling error), whatever the attack: if it exceeds the
    accountant's epsilon, something is wrong. A bound far below the accountant's epsilon is
    normal (these attacks are weak and DP accounting is worst-case) and proves nothing.

    Args:
        model: A trained ``PrivateKerasModel``, or a compiled plain ``tf.keras.Model`` (for
            a non-private comparison).
        train_pdf: ``PrivateDataFrame`` of the members: feature columns and label column(s).
        holdout_pdf: ``PrivateDataFrame`` of non-members, with the same columns.
        target_delta: The delta in (0, 1) of the lower bound and the accountant's epsilon.
        label_column: The label column name (or names, e.g. one-hot columns); default the
            last column. The other columns, in order, are the model's features.
        attack_types: ``"threshold"`` (default), ``"logistic_regression"``, or a list of
            both; TF Privacy's ``AttackType`` members are accepted too. Every number of the
            report is the maximum over the attacks run.
        accountant: ``"rdp"`` or ``"pld"``, used when the accountant's epsilon must be
            recomputed because the model's recorded delta differs from ``target_delta``.
        seed: Seeds the trained attack's balancing and folds: TF Privacy shuffles with numpy's
            global generator, which is seeded for the call and then restored (so concurrent
            threads using it are not isolated). None: the global generator as it stands. The
            threshold attack and the bounds are deterministic. It is not a privacy parameter.

    Returns:
        An ``AuditReport``: ``summary()`` for text, ``to_dict()`` for plain values.

    Raises:
        TypeError: ``model`` or a frame has the wrong type.
        ValueError: The frames have different columns, ``label_column`` is not a column, a
            frame is empty or has non-numeric or missing values, the model's input does not
            fit the features, ``target_delta`` is not in (0, 1), or an attack is unknown.

    Example:
        >>> train, holdout = train_test_split(pdf[["x1", "x2", "y"]], test_size=0.5)
        >>> dp_model.fit(PrivateDataLoader(train[["x1", "x2"]], train["y"], batch_size=32), epochs=10)
        >>> report = audit(dp_model, train, holdout, target_delta=1e-5)
        >>> print(report.summary())
    """
    target_delta = _checks.open_unit("target_delta", target_delta)
    accountant = _checks.one_of("accountant", accountant, accounting.ACCOUNTANTS)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"seed must be None or an integer >= 0, got {seed!r}.")
    keras_model, loss_fn = _loss_fn(model)
    for arg, frame in (("train_pdf", train_pdf), ("holdout_pdf", holdout_pdf)):
        if not isinstance(frame, PrivateDataFrame):
            raise TypeError(
                f"{arg} must be a PrivateDataFrame with the feature and label columns, got {type(frame).__name__}."
            )
        if len(frame) == 0:
            raise ValueError(f"{arg} is empty; it needs at least one row.")
    if train_pdf.columns != holdout_pdf.columns:
        raise ValueError(
            f"holdout_pdf has columns {holdout_pdf.columns} but train_pdf has {train_pdf.columns}: members and "
            "non-members must come from the same dataset, with the same columns in the same order."
        )
    attacks = _attack_types(attack_types)
    labels = _label_columns(label_column, train_pdf.columns)
    train_raw, holdout_raw = _raw(train_pdf), _raw(holdout_pdf)
    if train_pdf._source is holdout_pdf._source and train_raw.index.is_unique and holdout_raw.index.is_unique:
        if train_raw.index.intersection(holdout_raw.index).size:
            raise ValueError("holdout_pdf shares rows with train_pdf; non-members must be rows the model never saw.")
    n_train, n_holdout = len(train_raw), len(holdout_raw)
    for name in attacks:
        if min(n_train, n_holdout) < _MIN_ROWS[name]:
            raise ValueError(
                f"attack_types: the {name} attack needs at least {_MIN_ROWS[name]} rows in each of train_pdf and "
                f"holdout_pdf, got {n_train} and {n_holdout}."
            )

    x_train, y_train = _arrays("train_pdf", train_raw, labels)
    x_test, y_test = _arrays("holdout_pdf", holdout_raw, labels)
    loss_train, out_train = _evaluate(keras_model, loss_fn, x_train, y_train)
    loss_test, out_test = _evaluate(keras_model, loss_fn, x_test, y_test)

    tf_results = _run_attacks(attacks, loss_train, loss_test, out_train, out_test, seed)
    results = []
    for name in attacks:
        r = tf_results[name]
        fpr, tpr = np.asarray(r.roc_curve.fpr, dtype=np.float64), np.asarray(r.roc_curve.tpr, dtype=np.float64)
        results.append(
            AttackResult(
                attack_type=name,
                auc=float(r.get_auc()),
                advantage=float(r.get_attacker_advantage()),
                epsilon_lower_bound=epsilon_lower_bound(fpr, tpr, delta=target_delta),
                epsilon_lower_bound_ci=_tf_privacy_bound(r),
            )
        )
    return AuditReport(
        attack_auc=max(r.auc for r in results),
        attacker_advantage=max(r.advantage for r in results),
        empirical_epsilon_lower_bound=max(r.epsilon_lower_bound for r in results),
        accountant_epsilon=_accountant_epsilon(model, target_delta, accountant),
        target_delta=target_delta,
        n_train=n_train,
        n_holdout=n_holdout,
        empirical_epsilon_lower_bound_ci=max(r.epsilon_lower_bound_ci for r in results),
        confidence=CONFIDENCE,
        attacks=tuple(results),
    )
