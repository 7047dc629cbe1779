"""Group privacy: the (epsilon, delta) protecting any ``k`` examples together.

Two valid conversions are computed and the smaller epsilon is reported:

* **The Poisson-sampled mixture of Gaussians** (dp-accounting >= 0.5). Poisson sampling includes
  each of the group's ``k`` examples independently with probability ``q``, so a step adds the
  clipped gradients of ``J ~ Binomial(k, q)`` of them, of norm at most ``J * l2_norm_clip``: the
  step is a Gaussian mechanism whose sensitivity is ``J`` noise units with probability
  ``P(J = j)``. dp_accounting's ``MixtureOfGaussiansDpEvent`` (Choquette-Choo et al. 2023,
  arXiv:2310.15526) composes exactly that, with its PLD accountant; the aligned worst case of
  the group's gradients is the tight dominating pair for groups under Poisson sampling
  (Schuchardt et al., "Unified Mechanism-Specific Amplification by Subsampling and Group Privacy
  Amplification", NeurIPS 2024). For ``k = 1`` it is the usual Poisson-sampled Gaussian.
* **The (epsilon, delta) group-privacy lemma**, on dp_accounting's per-example guarantee (any
  dp-accounting version; much looser, and often no guarantee at all for long runs):

    an (eps, delta)-DP mechanism is (k * eps, k * exp((k - 1) * eps) * delta)-DP for groups of
    size k (Dwork & Roth, *The Algorithmic Foundations of Differential Privacy*, 2014, Sec. 2.3,
    after Theorem 2.2; Vadhan, *The Complexity of Differential Privacy*, 2017, Lemma 2.2).

For a target group delta the per-example delta' must satisfy
``k * exp((k - 1) * eps(delta')) * delta' <= target_delta``, where ``eps(delta')`` is
dp_accounting's epsilon of the run at ``delta'``; the group epsilon is then ``k * eps(delta')``.
Every feasible delta' gives a valid guarantee, and a larger one a smaller epsilon, so the
largest feasible delta' is searched for (bisection in ``log delta'``) and a feasible one is
always returned. Use it when one person's data can appear in several examples, e.g. sliding
windows over a time series, where one observation is in up to ``window`` training examples.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import dp_accounting

__all__ = ["MIXTURE_AVAILABLE", "check_group_size", "group_epsilon", "mixture_epsilon"]

try:  # dp-accounting >= 0.5
    from dp_accounting.dp_event import MixtureOfGaussiansDpEvent
except ImportError:  # pragma: no cover - dp-accounting 0.4.3 (the TF 2.15 stack)
    MixtureOfGaussiansDpEvent = None

MIXTURE_AVAILABLE = MixtureOfGaussiansDpEvent is not None
# A pessimistic PLD at 1e-3 nats per bucket: ~10x faster than dp_accounting's 1e-4 for a 12-way
# mixture over thousands of steps, and still an upper bound (the epsilon moves in the 4th digit).
_MIXTURE_DISCRETIZATION = 1e-3

_BISECTION_STEPS = 60
_LOG_TOLERANCE = 1e-6  # stop when the bracket of log(delta') is this narrow


def check_group_size(group_size, sample_size: int | None = None) -> int:
    """``group_size`` as an int >= 1 (and at most ``sample_size``), or a ValueError/TypeError naming it."""
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Real):
        raise TypeError(
            f"group_size must be a whole number >= 1 (how many examples one individual can appear in), got "
            f"{group_size!r} ({type(group_size).__name__})."
        )
    if not (math.isfinite(group_size) and float(group_size).is_integer() and group_size >= 1):
        raise ValueError(
            f"group_size must be a whole number >= 1 (how many examples one individual can appear in), got "
            f"{group_size!r}; group_size=1 is the usual per-example guarantee."
        )
    if sample_size is not None and group_size > sample_size:
        raise ValueError(
            f"group_size={group_size!r} is larger than sample_size={sample_size!r}: a group cannot hold more "
            "examples than the data set."
        )
    return int(group_size)


def mixture_epsilon(
    sampling_rate: float, noise_multiplier: float, steps: int, group_size: int, target_delta: float
) -> float | None:
    """The group epsilon of ``steps`` Poisson-sampled Gaussian steps by the binomial mixture of Gaussians.

    Returns None when dp_accounting has no ``MixtureOfGaussiansDpEvent`` (versions before 0.5).
    """
    if not MIXTURE_AVAILABLE:
        return None
    k, q = group_size, sampling_rate
    sensitivities = [float(j) for j in range(k + 1)]
    probabilities = [math.comb(k, j) * q**j * (1.0 - q) ** (k - j) for j in range(k + 1)]
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=_MIXTURE_DISCRETIZATION)
    accountant.compose(
        dp_accounting.SelfComposedDpEvent(
            MixtureOfGaussiansDpEvent(float(noise_multiplier), sensitivities, probabilities), int(steps)
        )
    )
    return float(accountant.get_epsilon(target_delta))


def group_epsilon(epsilon_at: Callable[[float], float], group_size: int, target_delta: float) -> tuple[float, float]:
    """The group epsilon at ``target_delta`` for groups of ``group_size`` examples.

    Args:
        epsilon_at: The per-example epsilon of the mechanism at a given delta (from
            dp_accounting), non-increasing in delta.
        group_size: ``k >= 1``; ``k = 1`` gives ``(epsilon_at(target_delta), target_delta)``.
        target_delta: The delta of the group guarantee, in (0, 1).

    Returns:
        ``(k * epsilon_at(delta'), delta')`` with ``k * exp((k - 1) * epsilon_at(delta')) * delta'``
        at most ``target_delta``.
    """
    k = group_size
    if k == 1:
        return float(epsilon_at(target_delta)), float(target_delta)
    log_target = math.log(target_delta) - math.log(k)

    def slack(log_delta: float) -> tuple[float, float]:
        """``(log(group delta) - log(target_delta), epsilon)`` at per-example delta ``exp(log_delta)``."""
        eps = float(epsilon_at(math.exp(log_delta)))
        return (k - 1) * eps + log_delta - log_target, eps

    high = log_target  # delta' = target / k: infeasible unless epsilon is 0
    gap, eps = slack(high)
    if gap <= 0:
        return k * eps, math.exp(high)
    step = 1.0
    while True:  # step down until feasible: epsilon grows far slower than log(1/delta') falls
        low = high - step
        if low < -700:  # delta' below 1e-304: no group guarantee at this target_delta
            raise ValueError(
                f"no per-example delta makes the group guarantee reach target_delta={target_delta:g} for "
                f"group_size={k}: the per-example epsilon is too large; add noise, train less or use a smaller group."
            )
        gap_low, eps_low = slack(low)
        if gap_low <= 0:
            break
        high, step = low, 2 * step
    for _ in range(_BISECTION_STEPS):
        if high - low < _LOG_TOLERANCE:
            break
        mid = (low + high) / 2
        gap_mid, eps_mid = slack(mid)
        if gap_mid <= 0:
            low, eps_low = mid, eps_mid
        else:
            high = mid
    return k * eps_low, math.exp(low)
