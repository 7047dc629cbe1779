"""The DP mechanisms behind private aggregates: Laplace and Gaussian noise, and their checks.

A :class:`Mechanism` releases one statistic of sensitivity 1 at privacy parameter ``eps``
(scaled by the statistic's real sensitivity when noise is drawn) and carries the
``DpEvent`` to charge for it. Noise comes from a generator seeded from OS entropy on every
release.
"""

from __future__ import annotations

import functools
import math

import dp_accounting
import numpy as np

from op_tensorflow import _checks
from op_tensorflow.budget import PrivacyBudget

__all__ = [
    "MECHANISMS",
    "Mechanism",
    "check_eps",
    "check_float_range",
    "fresh_rng",
    "gaussian_noise_multiplier",
    "laplace_event",
]

MECHANISMS = ("laplace", "gaussian")


def laplace_event(eps: float) -> dp_accounting.DpEvent:
    """The event of the Laplace mechanism at ``eps`` for sensitivity 1."""
    return dp_accounting.LaplaceDpEvent(1.0 / eps)  # scale / sensitivity = 1 / eps


@functools.lru_cache(maxsize=256)
def gaussian_noise_multiplier(eps: float, delta: float, accountant: str) -> float:
    """The Gaussian noise multiplier giving (``eps``, ``delta``)-DP for sensitivity 1 (cached)."""
    from op_tensorflow.accounting import MIN_NOISE_MULTIPLIER as floor
    from op_tensorflow.accounting import make_accountant

    try:
        sigma = dp_accounting.calibrate_dp_mechanism(
            lambda: make_accountant(accountant),
            dp_accounting.GaussianDpEvent,
            eps,
            delta,
            dp_accounting.LowerEndpointAndGuess(floor, 1.0),
            tol=1e-6,
        )
    except dp_accounting.mechanism_calibration.NoBracketIntervalFoundError:
        raise ValueError(
            f"eps={eps:g} is too large for the Gaussian mechanism at delta={delta:g} (its noise would be below "
            f"{floor:g} times the sensitivity, the least accounted for); use "
            "mechanism='laplace' or a smaller eps."
        ) from None
    return sigma + 1e-6  # stay on the safe side of the tolerance


class Mechanism:
    """Noise for one released statistic of sensitivity 1, at privacy parameter ``eps``."""

    def __init__(self, eps: float, mechanism: str, budget: PrivacyBudget):
        _checks.one_of("mechanism", mechanism, MECHANISMS)
        if mechanism == "laplace":
            self.event = laplace_event(eps)
            self.scale = 1.0 / eps
        else:
            sigma = gaussian_noise_multiplier(eps, budget.delta, budget.accountant)
            self.event = dp_accounting.GaussianDpEvent(sigma)
            self.scale = sigma
        self.mechanism = mechanism

    def noise(self, rng: np.random.Generator, sensitivity: float) -> float:
        if self.mechanism == "laplace":
            return float(rng.laplace(0.0, self.scale * sensitivity))
        return float(rng.normal(0.0, self.scale * sensitivity))


def fresh_rng() -> np.random.Generator:
    """A new generator for one release."""
    return np.random.default_rng()  # seeded from OS entropy on every release


def check_eps(eps) -> float:
    """``eps`` as a float in [1e-100, 1e6]; raises TypeError or ValueError otherwise."""
    eps = _checks.positive_float("eps", eps)
    if eps < 1e-100:
        raise ValueError(f"eps must be at least 1e-100 (the answer would be noise beyond float range), got {eps!r}.")
    if eps > 1e6:
        raise ValueError(
            f"eps must be at most 1e6 (the noise would be below a millionth of the sensitivity, and dp_accounting "
            f"overflows beyond), got {eps!r}."
        )
    return eps


def check_float_range(what: str, name, n_rows: int, sensitivity: float, mech: Mechanism) -> None:
    """Refuses, before charging, a sum whose clamped total or noise could overflow float64.

    Depends on public facts only (row count, bounds, eps), so the refusal reveals nothing.
    """
    if not (math.isfinite(n_rows * sensitivity) and math.isfinite(1e3 * mech.scale * sensitivity)):
        raise ValueError(
            f"{what} of {name!r}: bounds of magnitude {sensitivity:g} over {n_rows} rows with noise scale "
            f"{mech.scale:g} (from eps) overflow float64; use narrower bounds (metadata or .clip) or a larger eps."
        )
