"""Privacy accounting for DP-SGD, backed by ``dp_accounting``.

Every epsilon reported by op_tensorflow comes from ``dp_accounting``'s RDP or PLD
accountant. The DP-SGD model assumed throughout: Poisson sampling with rate
``q = batch_size / sample_size``, per-example clipping and Gaussian noise with standard
deviation ``l2_norm_clip * noise_multiplier`` per step, for
``ceil(num_epochs * sample_size / batch_size)`` steps (TF Privacy's step count; the data
loader runs exactly this many steps, so an estimate equals the later charge).
Adjacency is add/remove one row.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time

import dp_accounting
import numpy as np
from dp_accounting import pld, rdp

from op_tensorflow import _checks, group_privacy

ACCOUNTANTS = ("rdp", "pld")


class _DropUnconvergedOrderWarnings(logging.Filter):
    """dp-accounting >= 0.5 logs (via absl) each fractional RDP order whose series fails to converge, then
    leaves that order out of the minimum, which keeps epsilon a valid upper bound. fit computes epsilon after
    every epoch, so each epoch would print several such lines; they are dropped here (and only they)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("_compute_log_a_frac failed to converge")


logging.getLogger("absl").addFilter(_DropUnconvergedOrderWarnings())

#: Orders used by the RDP accountant behind budgets and ledgers (dp_accounting's default).
ACCOUNTANT_ORDERS = tuple(rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS)

# PLD discretization: start at 1e-3 and refine by sqrt(10) until the bound improves by
# less than 1% or about five seconds are used (measured: the seed's case converges at 3e-6
# in ~2.8 s, which a 2-s budget cut short on a loaded machine; the blog's at 3e-4 in ~0.1 s;
# millions of steps can take tens of seconds even at 1e-3). Every pessimistic PLD estimate
# is a valid upper bound, so the smallest is reported.
_PLD_START_INTERVAL = 1e-3
_PLD_REFINE_FACTOR = math.sqrt(10.0)
_PLD_MIN_INTERVAL = 1e-6
_PLD_REL_TOL = 0.01
_PLD_TIME_BUDGET_S = 5.0
#: Above this RDP epsilon the PLD accountant reports the RDP bound (see ``pld_epsilon``).
PLD_MAX_EPSILON = 50.0


MAX_ORDER = 1e4  # RDP orders above this cost dp_accounting O(order) time and never give a smaller epsilon
MAX_STEPS = 2**53  # step counts stay exact integers in float64 and int64


def steps_for(sample_size: int, batch_size: int, num_epochs: float) -> int:
    """Number of DP-SGD steps: ``ceil(num_epochs * sample_size / batch_size)``, at least 1."""
    steps = num_epochs * sample_size / batch_size
    if not steps <= MAX_STEPS:
        raise ValueError(
            f"num_epochs * sample_size / batch_size = {num_epochs!r} * {sample_size!r} / {batch_size!r} steps is "
            f"more than the {MAX_STEPS} steps that can be accounted for; lower num_epochs or sample_size."
        )
    return max(1, math.ceil(steps - 1e-9))


@contextlib.contextmanager
def _numerical_range(what: str):
    """dp_accounting's arithmetic overflows, divides by zero or runs out of memory far outside
    useful parameter ranges (e.g. noise_multiplier=1e-300 or 1e200): report a ValueError naming
    the parameters instead of its internals."""
    try:
        yield
    except (ArithmeticError, ValueError, MemoryError) as err:
        raise ValueError(
            f"dp_accounting cannot compute the privacy of {what}: {type(err).__name__}: {err}. The noise_multiplier, "
            "sampling rate or step count is outside the range it can compute with (e.g. keep noise_multiplier "
            "between 0.01 and 1e6)."
        ) from None


#: Smallest Gaussian noise multiplier accounted for. Below it one step alone costs epsilon > 5000
#: (it protects nothing), and dp_accounting 0.4.3's RDP series can turn NaN and loop forever.
MIN_NOISE_MULTIPLIER = 0.01


def _noise_multipliers(event: dp_accounting.DpEvent):
    """Every Gaussian noise multiplier inside ``event`` (through sampling and composition)."""
    if isinstance(event, dp_accounting.GaussianDpEvent):
        yield event.noise_multiplier
    inner = getattr(event, "event", None)
    for child in ([inner] if inner is not None else []) + list(getattr(event, "events", None) or []):
        if isinstance(child, dp_accounting.DpEvent):
            yield from _noise_multipliers(child)


def check_noise_range(event: dp_accounting.DpEvent) -> None:
    """Raises a ValueError naming noise_multiplier if ``event`` has noise below ``MIN_NOISE_MULTIPLIER``."""
    for sigma in _noise_multipliers(event):
        if 0 < sigma < MIN_NOISE_MULTIPLIER:  # 0 is dp_accounting's own "no privacy" case (infinite epsilon)
            raise ValueError(
                f"noise_multiplier={sigma:g} is below {MIN_NOISE_MULTIPLIER:g}, the smallest accounted for: a "
                f"single step would cost epsilon > 5000, which protects nothing (and dp_accounting's arithmetic "
                f"can fail to terminate there). Use noise_multiplier >= {MIN_NOISE_MULTIPLIER:g}."
            )


def dp_sgd_event(sampling_rate: float, noise_multiplier: float, steps: int) -> dp_accounting.DpEvent:
    """The ``DpEvent`` of ``steps`` Poisson-sampled Gaussian DP-SGD steps."""
    step = dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier))
    return dp_accounting.SelfComposedDpEvent(step, steps)


class _RdpAccountant(rdp.RdpAccountant):
    """dp_accounting's RDP accountant, tolerant of its own floating-point round-off.

    For very large noise multipliers dp_accounting 0.4.3 can compute an RDP value of about
    -1e-13 at some order and then refuses it ("Renyi divergence cannot be negative").
    Such values are round-off of zero; they are clamped to zero before conversion.
    """

    def get_epsilon_and_optimal_order(self, target_delta: float) -> tuple[float, float]:
        return rdp.rdp_privacy_accountant.compute_epsilon(self._orders, np.maximum(self._rdp, 0.0), target_delta)

    def get_epsilon(self, target_delta: float) -> float:
        return self.get_epsilon_and_optimal_order(target_delta)[0]


def make_accountant(
    accountant: str = "rdp", *, value_discretization_interval: float = 1e-4
) -> dp_accounting.PrivacyAccountant:
    """A fresh ``dp_accounting`` accountant (add/remove-one adjacency)."""
    _checks.one_of("accountant", accountant, ACCOUNTANTS)
    if accountant == "rdp":
        return _RdpAccountant(ACCOUNTANT_ORDERS)
    return pld.PLDAccountant(value_discretization_interval=value_discretization_interval)


def pld_epsilon(event: dp_accounting.DpEvent, delta: float) -> tuple[float, float]:
    """Epsilon of ``event`` at ``delta`` from the PLD accountant, with converged discretization.

    Every pessimistic PLD estimate is a valid upper bound, so the smallest one found is
    reported. Two cases get the RDP bound instead (also a valid upper bound, and cheap):

    * the RDP bound is already above ``PLD_MAX_EPSILON``: a PLD's size grows with the privacy
      loss range (a Laplace query at eps=1000 takes dp_accounting seconds and returns inf),
      and a few percent of tightness means nothing there;
    * dp_accounting's PLD fails or returns inf at every discretization tried.

    A finer discretization that fails (dp_accounting 0.4.3 can raise "deltas are not in
    non-increasing order") ends the refinement with the coarser, valid, estimate.

    Returns:
        ``(epsilon, value_discretization_interval)`` of the bound reported.
    """
    rdp_bound = _rdp_epsilon(event, delta)  # also refuses noise below MIN_NOISE_MULTIPLIER
    if rdp_bound > PLD_MAX_EPSILON:
        return rdp_bound, _PLD_START_INTERVAL
    best, best_interval = math.inf, _PLD_START_INTERVAL
    interval = _PLD_START_INTERVAL
    started = time.perf_counter()
    while interval >= _PLD_MIN_INTERVAL * 0.999:
        try:
            with np.errstate(all="ignore"):
                eps = make_accountant("pld", value_discretization_interval=interval).compose(event).get_epsilon(delta)
        except (ArithmeticError, ValueError, MemoryError):
            break
        improved_by = (best - eps) / eps if math.isfinite(best) and eps > 0 else math.inf
        if eps < best:
            best, best_interval = eps, interval
        if improved_by < _PLD_REL_TOL or time.perf_counter() - started > _PLD_TIME_BUDGET_S:
            break
        interval /= _PLD_REFINE_FACTOR
    if not math.isfinite(best):
        return rdp_bound, _PLD_START_INTERVAL
    return float(best), float(best_interval)


def merged_event(event: dp_accounting.DpEvent) -> dp_accounting.DpEvent:
    """The same composition with identical mechanisms merged: ``[A x 391, A x 391]`` becomes ``A x 782``.

    A ledger or a model that trained several times on one loader composes the same Poisson-sampled Gaussian
    step over and over; dp_accounting's RDP accountant evaluates each composed part on its own (~30 ms each),
    but a ``SelfComposedDpEvent`` of the merged count only once. RDP composition is additive, so the epsilon
    is the same. Parts keep their order of first appearance.
    """
    counts: dict[str, list] = {}

    def visit(e, times: int) -> None:
        if isinstance(e, dp_accounting.ComposedDpEvent):
            for part in e.events:
                visit(part, times)
        elif isinstance(e, dp_accounting.SelfComposedDpEvent):
            visit(e.event, times * e.count)
        elif not isinstance(e, dp_accounting.NoOpDpEvent):
            counts.setdefault(repr(e), [e, 0])[1] += times

    visit(event, 1)
    parts = [leaf if n == 1 else dp_accounting.SelfComposedDpEvent(leaf, n) for leaf, n in counts.values()]
    if len(parts) == 1:
        return parts[0]
    return dp_accounting.ComposedDpEvent(parts) if parts else dp_accounting.NoOpDpEvent()


_RDP_EPSILONS: dict[tuple[str, float], float] = {}
_RDP_CACHE_SIZE = 512


def _cached_rdp_epsilon(key: str, event: dp_accounting.DpEvent, delta: float) -> float:
    if (key, delta) not in _RDP_EPSILONS:
        with _numerical_range(key):
            epsilon = float(make_accountant("rdp").compose(event).get_epsilon(delta))
        if len(_RDP_EPSILONS) >= _RDP_CACHE_SIZE:
            _RDP_EPSILONS.pop(next(iter(_RDP_EPSILONS)))  # the oldest
        _RDP_EPSILONS[key, delta] = epsilon
    return _RDP_EPSILONS[key, delta]


def _rdp_epsilon(event: dp_accounting.DpEvent, delta: float) -> float:
    """RDP epsilon of ``event`` (merged, see :func:`merged_event`), remembered per event and delta: ``fit``
    asks for the same figures (the plan, the epoch's report, the ledger, the model's total) several times."""
    check_noise_range(event)
    merged = merged_event(event)
    return _cached_rdp_epsilon(repr(merged), merged, float(delta))


def epsilon_for_event(event: dp_accounting.DpEvent, delta: float, accountant: str = "rdp") -> float:
    """Epsilon of any ``DpEvent`` at ``delta`` under the chosen accountant."""
    _checks.one_of("accountant", accountant, ACCOUNTANTS)
    if accountant == "pld":
        return pld_epsilon(event, delta)[0]
    return _rdp_epsilon(event, delta)


def _validate_training(sample_size, batch_size, num_epochs, noise_multiplier, target_delta):
    sample_size = _checks.positive_int("sample_size", sample_size)
    batch_size = _checks.positive_int("batch_size", batch_size)
    _checks.batch_within_sample(batch_size, sample_size)
    num_epochs = _checks.positive_float("num_epochs", num_epochs)
    noise_multiplier = _checks.positive_float("noise_multiplier", noise_multiplier)
    target_delta = _checks.open_unit("target_delta", target_delta)
    _checks.warn_if_weak_delta(target_delta, sample_size)
    return sample_size, batch_size, num_epochs, noise_multiplier, target_delta


def epsilon_curve(event: dp_accounting.DpEvent, accountant: str, delta_hint: float):
    """``delta -> epsilon`` of ``event``, composing it once (PLD at the discretization converged at ``delta_hint``;
    the smaller of the PLD and RDP bounds, both valid)."""
    rdp_at = make_accountant("rdp").compose(event).get_epsilon
    if accountant == "rdp":
        return rdp_at
    try:
        with np.errstate(all="ignore"):
            interval = pld_epsilon(event, delta_hint)[1]
            pld_at = make_accountant("pld", value_discretization_interval=interval).compose(event).get_epsilon
    except (ArithmeticError, ValueError, MemoryError):
        return rdp_at

    def epsilon_at(delta: float) -> float:
        try:
            with np.errstate(all="ignore"):
                return min(rdp_at(delta), pld_at(delta))
        except (ArithmeticError, ValueError):
            return rdp_at(delta)

    return epsilon_at


def training_epsilon_and_delta(
    sample_size, batch_size, num_epochs, noise_multiplier, target_delta=1e-5, *, accountant="rdp", group_size=1
) -> tuple[float, float]:
    """``(epsilon, per-example delta)`` of a planned run for groups of ``group_size`` (see ``group_privacy``).

    The per-example delta is the lemma's ``delta'``, or None when the binomial mixture of Gaussians
    (which accounts the group directly at ``target_delta``) gives the smaller epsilon.
    """
    n, b, e, sigma, delta = _validate_training(sample_size, batch_size, num_epochs, noise_multiplier, target_delta)
    _checks.one_of("accountant", accountant, ACCOUNTANTS)
    k = group_privacy.check_group_size(group_size, n)
    event = dp_sgd_event(b / n, sigma, steps_for(n, b, e))
    if k == 1:
        return epsilon_for_event(event, delta, accountant), delta
    check_noise_range(event)
    with _numerical_range(repr(event)):
        mixture = group_privacy.mixture_epsilon(b / n, sigma, steps_for(n, b, e), k, delta)
        curve = epsilon_curve(event, accountant, delta / k)

    def epsilon_or_inf(example_delta: float) -> float:
        """The lemma searches down to delta' = 1e-304, where dp_accounting may overflow: no guarantee there."""
        try:
            with np.errstate(all="ignore"):
                return curve(example_delta)
        except (ArithmeticError, ValueError, MemoryError):
            return math.inf

    try:
        lemma, example_delta = group_privacy.group_epsilon(epsilon_or_inf, k, delta)
    except ValueError as err:
        if mixture is None:
            raise ValueError(
                f"{err} With dp-accounting >= 0.5 the much tighter binomial-mixture bound is used instead "
                "(pip install 'dp-accounting>=0.5')."
            ) from None
        return mixture, None
    if mixture is not None and mixture <= lemma:
        return mixture, None
    return lemma, example_delta


def training_epsilon(
    sample_size: int,
    batch_size: int,
    num_epochs: float,
    noise_multiplier: float,
    target_delta: float = 1e-5,
    *,
    accountant: str = "rdp",
    group_size: int = 1,
) -> float:
    """Epsilon of a planned DP-SGD run, without printing (see ``get_privacy_budget``)."""
    return training_epsilon_and_delta(
        sample_size,
        batch_size,
        num_epochs,
        noise_multiplier,
        target_delta,
        accountant=accountant,
        group_size=group_size,
    )[0]


def get_privacy_budget(
    sample_size: int,
    batch_size: int,
    num_epochs: float,
    noise_multiplier: float,
    target_delta: float = 1e-5,
    *,
    accountant: str = "rdp",
    verbose: bool = True,
    group_size: int = 1,
) -> float:
    """Estimates the epsilon a DP-SGD training run will spend, before running it.

    Args:
        sample_size: Number of rows in the private training set.
        batch_size: Expected batch size; the Poisson sampling rate is ``batch_size / sample_size``.
        num_epochs: Number of epochs (may be fractional).
        noise_multiplier: Noise standard deviation divided by ``l2_norm_clip``.
        target_delta: The delta of the (epsilon, delta) guarantee, in (0, 1).
        accountant: ``"rdp"`` (Renyi DP, TF Privacy's default) or ``"pld"`` (privacy loss
            distributions: tighter, slower).
        verbose: Print the estimate and the parameters it used.
        group_size: Protect any ``group_size`` examples together (default 1: one example), e.g.
            the window length when each observation appears in up to that many sliding-window
            examples. The smaller of two valid conversions (see :mod:`op_tensorflow.group_privacy`):
            the Poisson-sampled binomial mixture of Gaussians, composed by dp_accounting's PLD
            accountant (dp-accounting >= 0.5), and the (epsilon, delta) group-privacy lemma
            (Dwork & Roth 2014, Sec. 2.3) on dp_accounting's per-example (eps, delta'), giving
            ``(k eps, k exp((k-1) eps) delta')`` with ``delta'`` chosen so that the group delta
            is ``target_delta``.

    Returns:
        The epsilon the run will spend at ``target_delta`` (for groups of ``group_size``).

    Raises:
        ValueError: An argument is out of range; the message names it.
    """
    if isinstance(verbose, np.bool_ | np.integer):
        verbose = bool(verbose)
    if not isinstance(verbose, bool | int):
        raise TypeError(f"verbose must be True or False, got {type(verbose).__name__}.")
    epsilon, example_delta = training_epsilon_and_delta(
        sample_size,
        batch_size,
        num_epochs,
        noise_multiplier,
        target_delta,
        accountant=accountant,
        group_size=group_size,
    )
    if verbose:
        print(
            budget_statement(
                epsilon, sample_size, batch_size, num_epochs, noise_multiplier, target_delta, group_size, example_delta
            )
        )
    return epsilon


def budget_statement(
    epsilon, sample_size, batch_size, num_epochs, noise_multiplier, target_delta, group_size=1, example_delta=None
) -> str:
    """The text ``get_privacy_budget`` prints (also used by the R package)."""

    def show(x):  # R passes whole numbers as doubles: print 20, not 20.0
        return int(x) if float(x).is_integer() else float(x)

    text = (
        f"=> EPSILON_REQUIRED = {float(epsilon)!r} using TARGET_DELTA = {float(target_delta)!r}\n"
        "Training parameters used :-\n"
        f"SAMPLE_SIZE = {show(sample_size)}\n"
        f"BATCH_SIZE = {show(batch_size)}\n"
        f"NUM_EPOCHS = {show(num_epochs)}\n"
        f"NOISE_MULTIPLIER = {show(noise_multiplier)}"
    )
    if show(group_size) == 1:
        return text
    how = (
        "by the Poisson-sampled binomial mixture of Gaussians (dp_accounting's MixtureOfGaussiansDpEvent, PLD)"
        if example_delta is None
        else f"by group privacy from the per-example guarantee at delta = {float(example_delta):.3g} "
        "(Dwork & Roth 2014, Sec. 2.3)"
    )
    return text + (
        f"\nGROUP_SIZE = {show(group_size)}: protects any {show(group_size)} examples together (e.g. all the "
        f"windows holding one observation), {how}"
    )


def noise_multiplier_for_epsilon(
    target_epsilon: float,
    sample_size: int,
    batch_size: int,
    num_epochs: float,
    target_delta: float = 1e-5,
    *,
    accountant: str = "rdp",
) -> float:
    """The smallest noise multiplier (to 1e-4) whose epsilon does not exceed ``target_epsilon``.

    Uses ``dp_accounting.calibrate_dp_mechanism``; the result never overshoots: the
    returned noise multiplier gives at most ``target_epsilon`` under ``accountant``.
    """
    target_epsilon = _checks.positive_float("target_epsilon", target_epsilon)
    n, b, e, _, delta = _validate_training(sample_size, batch_size, num_epochs, 1.0, target_delta)
    _checks.one_of("accountant", accountant, ACCOUNTANTS)
    steps = steps_for(n, b, e)
    tol = 1e-4
    lowest = MIN_NOISE_MULTIPLIER

    def event(sigma: float) -> dp_accounting.DpEvent:
        return dp_sgd_event(b / n, sigma, steps)

    def epsilon(sigma: float) -> float:
        return epsilon_for_event(event(sigma), delta, accountant)

    if accountant == "rdp":
        if epsilon(lowest) <= target_epsilon:
            return lowest
        make = lambda: make_accountant("rdp")  # noqa: E731
        bracket = dp_accounting.LowerEndpointAndGuess(lowest, 1.0)
    else:
        # Bracket around the RDP answer and calibrate at the PLD discretization that
        # converges there (every pessimistic PLD bound is valid), then confirm below with
        # the adaptive estimate that get_privacy_budget reports.
        guess = max(noise_multiplier_for_epsilon(target_epsilon, n, b, e, delta, accountant="rdp"), lowest)
        if epsilon(lowest) <= target_epsilon:
            return lowest
        interval = pld_epsilon(event(guess), delta)[1]
        make = lambda: make_accountant("pld", value_discretization_interval=interval)  # noqa: E731
        low = guess / 2
        while low > lowest and epsilon(low) <= target_epsilon:
            low /= 2
        bracket = dp_accounting.LowerEndpointAndGuess(max(low, lowest), guess * 1.5)
    try:
        sigma = dp_accounting.calibrate_dp_mechanism(make, event, target_epsilon, delta, bracket, tol=tol / 2)
    except dp_accounting.mechanism_calibration.NoBracketIntervalFoundError:
        raise ValueError(
            f"target_epsilon={target_epsilon:g} is unreachable at any noise_multiplier for {steps} steps at "
            f"sampling rate {b / n:g} and target_delta={delta:g}; raise target_epsilon or train for fewer epochs."
        ) from None
    # Snap to the 1e-4 grid: the smallest grid point whose reported epsilon fits.
    k = max(1, math.ceil(sigma / tol - 1e-9))
    while epsilon(round(k * tol, 4)) > target_epsilon:
        k += 1
    while k > 1 and epsilon(round((k - 1) * tol, 4)) <= target_epsilon:
        k -= 1
    return round(k * tol, 4)
