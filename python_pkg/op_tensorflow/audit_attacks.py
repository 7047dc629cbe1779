"""The membership-inference attacks of an audit and the empirical epsilon lower bound.

:func:`run_attacks` runs TF Privacy's attacks (``membership_inference_attack.run_attacks``,
shipped by ``tensorflow-empirical-privacy``) on members' and non-members' losses and model
outputs; :func:`epsilon_lower_bound` is the hypothesis-testing bound of DP over the points
of a ROC curve; :func:`tf_privacy_bound` takes TF Privacy's high-confidence bound of one
attack. See :mod:`op_tensorflow.auditing` for what the numbers mean.
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning

__all__ = ["ATTACK_TYPES", "MIN_ROWS", "check_attack_types", "epsilon_lower_bound", "run_attacks", "tf_privacy_bound"]

#: The membership-inference attacks ``audit`` can run.
ATTACK_TYPES = ("threshold", "logistic_regression")
_ATTACK_ALIASES = {
    "threshold": "threshold",
    "threshold_attack": "threshold",
    "logistic_regression": "logistic_regression",
    "lr": "logistic_regression",
}


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

#: The fewest rows of members, and of non-members, that each attack needs.
MIN_ROWS = {"threshold": 1, "logistic_regression": 6}
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


def run_attacks(attacks, loss_train, loss_test, out_train, out_test, seed) -> dict:
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


def tf_privacy_bound(result) -> float:
    """The largest of TF Privacy's high-confidence epsilon lower bounds of one attack, clamped at 0."""
    values = [np.asarray(v, dtype=np.float64) for v in result.epsilon_lower_bound_value.bounds.values()]
    values = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    return max(0.0, float(values.max())) if values.size else 0.0


# ---------------------------------------------------------------------------------------
# Which attacks to run.


def check_attack_types(attack_types) -> tuple[str, ...]:
    """The attacks named by ``audit``'s ``attack_types`` (default: the threshold attack), without repeats."""
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
