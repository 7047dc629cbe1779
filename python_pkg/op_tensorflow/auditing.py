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

The attacks and the bounds live in :mod:`op_tensorflow.audit_attacks`, the report classes in
:mod:`op_tensorflow.audit_report`; both are re-exported here.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import dp_accounting
import numpy as np
import pandas as pd
import tensorflow as tf

from op_tensorflow import _checks, accounting, clipping
from op_tensorflow.arguments import per_example_loss
from op_tensorflow.audit_attacks import (
    ATTACK_TYPES,
    MIN_ROWS,
    check_attack_types,
    epsilon_lower_bound,
    run_attacks,
    tf_privacy_bound,
)
from op_tensorflow.audit_report import CONFIDENCE, AttackResult, AuditReport
from op_tensorflow.frame import PrivateDataFrame, _raw
from op_tensorflow.model import PrivateKerasModel

__all__ = ["ATTACK_TYPES", "AttackResult", "AuditReport", "audit", "epsilon_lower_bound"]


# ---------------------------------------------------------------------------------------
# Input checks and model evaluation.


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
    attacks = check_attack_types(attack_types)
    labels = _label_columns(label_column, train_pdf.columns)
    train_raw, holdout_raw = _raw(train_pdf), _raw(holdout_pdf)
    if train_pdf._source is holdout_pdf._source and train_raw.index.is_unique and holdout_raw.index.is_unique:
        if train_raw.index.intersection(holdout_raw.index).size:
            raise ValueError("holdout_pdf shares rows with train_pdf; non-members must be rows the model never saw.")
    n_train, n_holdout = len(train_raw), len(holdout_raw)
    for name in attacks:
        if min(n_train, n_holdout) < MIN_ROWS[name]:
            raise ValueError(
                f"attack_types: the {name} attack needs at least {MIN_ROWS[name]} rows in each of train_pdf and "
                f"holdout_pdf, got {n_train} and {n_holdout}."
            )

    x_train, y_train = _arrays("train_pdf", train_raw, labels)
    x_test, y_test = _arrays("holdout_pdf", holdout_raw, labels)
    loss_train, out_train = _evaluate(keras_model, loss_fn, x_train, y_train)
    loss_test, out_test = _evaluate(keras_model, loss_fn, x_test, y_test)

    tf_results = run_attacks(attacks, loss_train, loss_test, out_train, out_test, seed)
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
                epsilon_lower_bound_ci=tf_privacy_bound(r),
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
