"""TF Privacy's accounting functions under their own signatures, as the R blog calls them.

``compute_rdp``, ``get_privacy_spent`` and ``compute_dp_sgd_privacy`` keep TF Privacy's
arguments and results; every number comes from dp_accounting (see ``accounting``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from dp_accounting import rdp

from op_tensorflow import _checks
from op_tensorflow.accounting import (
    ACCOUNTANT_ORDERS,
    ACCOUNTANTS,
    MAX_ORDER,
    _numerical_range,
    _validate_training,
    check_noise_range,
    dp_sgd_event,
    pld_epsilon,
    steps_for,
)

__all__ = ["BLOG_ORDERS", "CONVERSIONS", "compute_dp_sgd_privacy", "compute_rdp", "get_privacy_spent"]

CONVERSIONS = ("current", "classic")

#: The RDP orders of the R blog and TF Privacy's tutorials: 1.1, 1.2, ..., 10.9, 12, ..., 63.
BLOG_ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))


def _float_array(name: str, values) -> np.ndarray:
    try:
        return np.atleast_1d(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a list of numbers, got {values!r}.") from None


def _validate_orders(orders: Sequence[float] | None) -> np.ndarray:
    orders = _float_array("orders", BLOG_ORDERS if orders is None else orders)
    # dp_accounting's cost grows with the order (an order of 1e9 runs for hours), and useful orders are small
    if orders.size == 0 or not np.all(np.isfinite(orders)) or np.any(orders <= 1) or np.any(orders > MAX_ORDER):
        raise ValueError(
            f"orders must be a non-empty list of RDP orders in (1, {MAX_ORDER:g}], got {orders.tolist()!r}."
        )
    return orders


def compute_rdp(q: float, noise_multiplier: float, steps: int, orders: Sequence[float] | None = None) -> np.ndarray:
    """RDP of ``steps`` Poisson-subsampled Gaussian steps at each order (TF Privacy's signature).

    Args:
        q: Sampling probability, in (0, 1].
        noise_multiplier: Noise standard deviation divided by the clipping norm, > 0.
        steps: Number of steps, an integer >= 1.
        orders: RDP orders > 1; defaults to ``BLOG_ORDERS``.

    Returns:
        A numpy array with the RDP epsilon at each order.
    """
    if isinstance(q, bool) or not isinstance(q, (int, float, np.floating, np.integer)) or not 0 < q <= 1:
        raise ValueError(f"q must be a sampling probability in (0, 1], got {q!r}.")
    noise_multiplier = _checks.positive_float("noise_multiplier", noise_multiplier)
    steps = _checks.positive_int("steps", steps)
    orders = _validate_orders(orders)
    accountant = rdp.RdpAccountant(orders)
    event = dp_sgd_event(float(q), noise_multiplier, steps)
    check_noise_range(event)
    # NaN from an overflow (handled below) comes with numpy's RuntimeWarning: silenced, not lost
    what = f"q={q!r}, noise_multiplier={noise_multiplier!r}, steps={steps!r}"
    with _numerical_range(what), np.errstate(all="ignore"):
        rdp_values = accountant.compose(event).rdp
    # dp_accounting's round-off can give -1e-15 for huge noise, and NaN (an overflow) at fractional orders
    # above about 2000: an unknown RDP is reported as infinite, which is never the optimal order.
    return np.where(np.isnan(rdp_values), np.inf, np.maximum(rdp_values, 0.0))


def get_privacy_spent(
    orders: Sequence[float],
    rdp_values: Sequence[float],
    target_eps: float | None = None,
    target_delta: float | None = None,
    *,
    conversion: str = "current",
) -> tuple[float, float, float]:
    """Converts RDP values to (epsilon, delta) (TF Privacy's signature).

    Give exactly one of ``target_eps`` and ``target_delta``.

    Args:
        orders: RDP orders, as passed to ``compute_rdp``.
        rdp_values: RDP at each order, as returned by ``compute_rdp``.
        target_eps: Compute delta for this epsilon.
        target_delta: Compute epsilon for this delta.
        conversion: ``"current"`` uses dp_accounting's conversion (Balle et al. 2020, as TF
            Privacy does today). ``"classic"`` uses Mironov's original
            ``eps = min(rdp - log(delta) / (order - 1))``, behind older published numbers
            such as the R blog's 2.73.

    Returns:
        ``(eps, delta, optimal_order)``.
    """
    _checks.one_of("conversion", conversion, CONVERSIONS)
    orders = _validate_orders(orders)
    rdp_values = _float_array("rdp_values", rdp_values)
    if rdp_values.shape != orders.shape:
        raise ValueError(
            f"rdp_values must have one value per order: got {rdp_values.size} values for {orders.size} orders."
        )
    if np.any(np.isnan(rdp_values)) or np.any(rdp_values < 0):
        raise ValueError("rdp_values must be non-negative numbers (as returned by compute_rdp).")
    if (target_eps is None) == (target_delta is None):
        raise ValueError("give exactly one of target_eps and target_delta.")
    if target_delta is not None:
        delta = _checks.open_unit("target_delta", target_delta)
        if conversion == "classic":
            eps_per_order = rdp_values - math.log(delta) / (orders - 1)
            best = int(np.nanargmin(eps_per_order))
            return float(eps_per_order[best]), delta, float(orders[best])
        eps, order = rdp.rdp_privacy_accountant.compute_epsilon(orders, rdp_values, delta)
        return float(eps), delta, float(order)
    eps = _checks.positive_float("target_eps", target_eps)
    if conversion == "classic":
        log_delta = (rdp_values - eps) * (orders - 1)
        best = int(np.nanargmin(log_delta))
        return eps, float(min(math.exp(log_delta[best]), 1.0)), float(orders[best])
    delta, order = rdp.rdp_privacy_accountant.compute_delta(orders, rdp_values, eps)
    return eps, float(delta), float(order)


def compute_dp_sgd_privacy(
    n: int,
    batch_size: int,
    noise_multiplier: float,
    epochs: float,
    delta: float,
    *,
    accountant: str = "rdp",
    conversion: str = "current",
) -> tuple[float, float | None]:
    """Epsilon of DP-SGD with per-example clipping (TF Privacy's ``compute_dp_sgd_privacy``).

    Unlike TF Privacy's ``compute_dp_sgd_privacy_statement``, no microbatching factor is
    applied: op_tensorflow clips every example on its own.

    Returns:
        ``(eps, optimal_order)``; the order is ``None`` for the PLD accountant.
    """
    n, batch_size, epochs, noise_multiplier, delta = _validate_training(n, batch_size, epochs, noise_multiplier, delta)
    _checks.one_of("accountant", accountant, ACCOUNTANTS)
    _checks.one_of("conversion", conversion, CONVERSIONS)
    steps = steps_for(n, batch_size, epochs)
    if accountant == "pld":
        if conversion != "current":
            raise ValueError("conversion='classic' applies to accountant='rdp' only.")
        return pld_epsilon(dp_sgd_event(batch_size / n, noise_multiplier, steps), delta)[0], None
    orders = np.asarray(ACCOUNTANT_ORDERS)
    rdp_values = compute_rdp(batch_size / n, noise_multiplier, steps, orders)
    eps, _, order = get_privacy_spent(orders, rdp_values, target_delta=delta, conversion=conversion)
    return eps, order
