"""Accounting against reference values from dp_accounting, the seed and the R blog."""

import math
import warnings

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import op_tensorflow as ot
from op_tensorflow import accounting, group_privacy

SEED_EPS = 0.2778802396005823  # the seed guide's printout: n=100000, batch 4, 20 epochs, sigma 1.2
BLOG_ORDERS = [1 + x / 10 for x in range(1, 100)] + list(range(12, 64))


def reference_event(q, sigma, steps):
    step = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    return dp_accounting.SelfComposedDpEvent(step, steps)


def reference_rdp_eps(n, batch, epochs, sigma, delta):
    steps = math.ceil(epochs * n / batch)
    return rdp.RdpAccountant().compose(reference_event(batch / n, sigma, steps)).get_epsilon(delta)


@pytest.fixture(autouse=True)
def _no_weak_delta_noise():
    # The seed's own example uses delta = 1/n, which warns; tests of the warning opt back in.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ot.PrivacyWarning)
        yield


def test_seed_budget_matches_printout(capsys):
    eps = ot.get_privacy_budget(
        sample_size=100000, batch_size=4, num_epochs=20, noise_multiplier=1.2, target_delta=1e-5
    )
    assert abs(eps - SEED_EPS) / SEED_EPS < 1e-9
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"=> EPSILON_REQUIRED = {eps!r} using TARGET_DELTA = 1e-05"
    assert out[1:] == [
        "Training parameters used :-",
        "SAMPLE_SIZE = 100000",
        "BATCH_SIZE = 4",
        "NUM_EPOCHS = 20",
        "NOISE_MULTIPLIER = 1.2",
    ]


def test_seed_call_as_shown_matches_dp_accounting(capsys):
    eps = ot.get_privacy_budget(
        sample_size=100000, batch_size=32, num_epochs=1000, noise_multiplier=1.5, target_delta=1e-5
    )
    assert eps == pytest.approx(reference_rdp_eps(100000, 32, 1000, 1.5, 1e-5), rel=1e-12)
    assert "BATCH_SIZE = 32" in capsys.readouterr().out


def test_verbose_false_prints_nothing(capsys):
    ot.get_privacy_budget(1000, 10, 2, 1.0, 1e-4, verbose=False)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "n,batch,epochs,sigma,delta",
    [(60000, 256, 15, 1.1, 1e-5), (3989, 32, 20, 1.1, 1e-6), (1000, 1000, 3, 2.0, 1e-4), (500, 7, 0.5, 0.8, 1e-4)],
)
def test_rdp_budget_equals_dp_accounting(n, batch, epochs, sigma, delta):
    eps = ot.get_privacy_budget(n, batch, epochs, sigma, delta, verbose=False)
    assert eps == pytest.approx(reference_rdp_eps(n, batch, epochs, sigma, delta), rel=1e-12)


def test_step_count_is_tf_privacy_ceiling():
    assert accounting.steps_for(3989, 32, 20) == 2494
    assert accounting.steps_for(100000, 4, 20) == 500000
    assert accounting.steps_for(10, 3, 1) == 4
    assert accounting.steps_for(10, 5, 2) == 4


def test_pld_seed_case_is_converged_and_tighter_than_rdp():
    eps = ot.get_privacy_budget(100000, 4, 20, 1.2, 1e-5, accountant="pld", verbose=False)
    # Independent reference: dp_accounting's PLD at a fine discretization.
    fine = (
        pld.PLDAccountant(value_discretization_interval=3e-6)
        .compose(reference_event(4e-5, 1.2, 500000))
        .get_epsilon(1e-5)
    )
    assert eps == pytest.approx(fine, rel=0.01)
    assert eps < SEED_EPS / 3
    assert eps == pytest.approx(0.0867, rel=0.01)  # the reference at discretization 1e-5


def test_pld_blog_case_matches_fine_reference():
    eps, _ = ot.compute_dp_sgd_privacy(3989, 32, 1.1, 20, 1e-6, accountant="pld")
    fine = (
        pld.PLDAccountant(value_discretization_interval=3e-5)
        .compose(reference_event(32 / 3989, 1.1, 2494))
        .get_epsilon(1e-6)
    )
    assert eps == pytest.approx(fine, rel=0.01)
    assert eps >= fine * 0.999  # still an upper bound, not below the finer pessimistic estimate


def test_compute_rdp_matches_dp_accounting_and_blog():
    values = ot.compute_rdp(q=32 / 3989, noise_multiplier=1.1, steps=2494, orders=BLOG_ORDERS)
    assert isinstance(values, np.ndarray) and values.shape == (len(BLOG_ORDERS),)
    expected = rdp.RdpAccountant(BLOG_ORDERS).compose(reference_event(32 / 3989, 1.1, 2494)).rdp
    np.testing.assert_allclose(values, expected, rtol=1e-12)
    np.testing.assert_array_equal(ot.compute_rdp(32 / 3989, 1.1, 2494), values)  # default orders = blog's


def test_get_privacy_spent_classic_and_current():
    values = ot.compute_rdp(32 / 3989, 1.1, 2494, BLOG_ORDERS)
    classic = ot.get_privacy_spent(BLOG_ORDERS, values, target_delta=1e-6, conversion="classic")
    current = ot.get_privacy_spent(BLOG_ORDERS, values, target_delta=1e-6)
    assert classic[0] == pytest.approx(2.7338, abs=1e-4)
    assert current[0] == pytest.approx(2.3678, abs=1e-4)
    assert classic[1] == current[1] == 1e-6
    # classic is Mironov's bound, computed independently here
    orders = np.array(BLOG_ORDERS)
    assert classic[0] == pytest.approx(np.min(values - math.log(1e-6) / (orders - 1)), rel=1e-12)
    assert current[0] == pytest.approx(rdp.rdp_privacy_accountant.compute_epsilon(orders, values, 1e-6)[0])


def test_get_privacy_spent_delta_direction_round_trips():
    values = ot.compute_rdp(0.01, 1.0, 1000)
    for conversion in ("current", "classic"):
        eps, _, _ = ot.get_privacy_spent(BLOG_ORDERS, values, target_delta=1e-5, conversion=conversion)
        _, delta, _ = ot.get_privacy_spent(BLOG_ORDERS, values, target_eps=eps, conversion=conversion)
        assert delta == pytest.approx(1e-5, rel=1e-3)


def test_compute_dp_sgd_privacy_has_no_microbatch_factor():
    eps, order = ot.compute_dp_sgd_privacy(3989, 32, 1.1, 20, 1e-6)
    assert round(eps, 2) == 2.37
    assert order > 1
    classic, _ = ot.compute_dp_sgd_privacy(3989, 32, 1.1, 20, 1e-6, conversion="classic")
    assert round(classic, 2) == 2.73


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.floats(0.2, 20.0),
    n=st.integers(100, 200000),
    batch_frac=st.floats(0.001, 0.5),
    epochs=st.integers(1, 60),
)
def test_noise_calibration_never_overshoots_and_is_smallest(target, n, batch_frac, epochs):
    batch = max(1, int(n * batch_frac))
    delta = 0.1 / n
    sigma = ot.noise_multiplier_for_epsilon(target, n, batch, epochs, delta)
    assert ot.get_privacy_budget(n, batch, epochs, sigma, delta, verbose=False) <= target
    if sigma > 0.01:
        assert ot.get_privacy_budget(n, batch, epochs, round(sigma - 1e-4, 4), delta, verbose=False) > target


def test_noise_calibration_pld():
    sigma = ot.noise_multiplier_for_epsilon(1.0, 60000, 256, 10, 1e-6, accountant="pld")
    assert ot.get_privacy_budget(60000, 256, 10, sigma, 1e-6, accountant="pld", verbose=False) <= 1.0
    assert sigma < ot.noise_multiplier_for_epsilon(1.0, 60000, 256, 10, 1e-6)


BAD_BUDGET_ARGS = [
    (dict(sample_size=0), "sample_size"),
    (dict(sample_size=10.5), "sample_size"),
    (dict(sample_size="100"), "sample_size"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=2000), "batch_size must be <= sample_size"),
    (dict(num_epochs=0), "num_epochs"),
    (dict(num_epochs=-1), "num_epochs"),
    (dict(noise_multiplier=0), "noise_multiplier"),
    (dict(noise_multiplier=float("nan")), "noise_multiplier"),
    (dict(target_delta=0), "target_delta"),
    (dict(target_delta=1), "target_delta"),
    (dict(accountant="gdp"), "accountant"),
]


@pytest.mark.parametrize("override,needle", BAD_BUDGET_ARGS)
def test_bad_budget_input_names_the_argument(override, needle):
    args = dict(sample_size=1000, batch_size=10, num_epochs=1, noise_multiplier=1.0, target_delta=1e-5)
    args.update(override)
    with pytest.raises((ValueError, TypeError), match=needle):
        ot.get_privacy_budget(**args, verbose=False)


def test_bad_calibration_and_rdp_input():
    with pytest.raises(ValueError, match="target_epsilon"):
        ot.noise_multiplier_for_epsilon(0, 1000, 10, 1)
    with pytest.raises(ValueError, match="target_epsilon"):
        ot.noise_multiplier_for_epsilon(-1, 1000, 10, 1)
    with pytest.raises(ValueError, match="accountant"):
        ot.noise_multiplier_for_epsilon(1, 1000, 10, 1, accountant="moments")
    with pytest.raises(ValueError, match="q must be"):
        ot.compute_rdp(1.5, 1.0, 10)
    with pytest.raises(ValueError, match="steps"):
        ot.compute_rdp(0.1, 1.0, 0)
    with pytest.raises(ValueError, match="orders"):
        ot.compute_rdp(0.1, 1.0, 10, orders=[0.5, 2])
    with pytest.raises(ValueError, match="exactly one"):
        ot.get_privacy_spent(BLOG_ORDERS, ot.compute_rdp(0.1, 1.0, 10))
    with pytest.raises(ValueError, match="one value per order"):
        ot.get_privacy_spent([2, 3], [0.1], target_delta=1e-5)
    with pytest.raises(ValueError, match="conversion"):
        ot.get_privacy_spent([2, 3], [0.1, 0.2], target_delta=1e-5, conversion="new")


def test_weak_delta_warns_and_explains():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ot.get_privacy_budget(1000, 10, 1, 1.0, target_delta=1e-3, verbose=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, ot.PrivacyWarning)]
    assert len(messages) == 1
    assert "1/sample_size" in messages[0] and "releasing individual records" in messages[0]
    assert caught[0].filename == __file__  # points at the user's call, not at op_tensorflow
    with warnings.catch_warnings():
        warnings.simplefilter("error", ot.PrivacyWarning)
        ot.get_privacy_budget(1000, 10, 1, 1.0, target_delta=1e-4, verbose=False)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_noise_below_the_floor_is_refused_not_looped_on(accountant):
    # dp_accounting 0.4.3's RDP series turns NaN and never terminates for this noise multiplier
    with pytest.raises(ValueError, match=r"noise_multiplier=1.63138e-298 is below 0.01"):
        ot.get_privacy_budget(1000, 10, 2, 1.6313797435411952e-298, 1e-5, accountant=accountant, verbose=False)
    with pytest.raises(ValueError, match="noise_multiplier=0.005 is below 0.01"):
        ot.get_privacy_budget(1000, 10, 2, 0.005, 1e-5, accountant=accountant, verbose=False)
    assert ot.noise_multiplier_for_epsilon(1e7, 1000, 10, 1, 1e-5, accountant=accountant) == 0.01


def test_pld_reports_the_rdp_bound_where_its_own_computation_explodes():
    """At noise 0.05 the PLD's support is huge (a call took minutes): above epsilon 50 RDP's bound is used."""
    rdp_bound = ot.get_privacy_budget(1000, 10, 2, 0.05, 1e-5, verbose=False)
    assert rdp_bound > accounting.PLD_MAX_EPSILON
    assert ot.get_privacy_budget(1000, 10, 2, 0.05, 1e-5, accountant="pld", verbose=False) == rdp_bound


# -- group privacy ---------------------------------------------------------------------------
GROUP_RUN = dict(sample_size=3989, batch_size=32, num_epochs=10, noise_multiplier=2.0, target_delta=1e-6)


def test_group_size_one_is_the_per_example_epsilon(capsys):
    plain = ot.get_privacy_budget(**GROUP_RUN, verbose=True)
    plain_out = capsys.readouterr().out
    one = ot.get_privacy_budget(**GROUP_RUN, group_size=1, verbose=True)
    assert one == plain == pytest.approx(reference_rdp_eps(3989, 32, 10, 2.0, 1e-6), rel=1e-12)
    assert capsys.readouterr().out == plain_out and "GROUP_SIZE" not in plain_out
    assert accounting.training_epsilon_and_delta(*GROUP_RUN.values(), group_size=1) == (one, 1e-6)


def lemma_epsilon(k, accountant="rdp"):
    """The (eps, delta) group-privacy lemma alone, on dp_accounting's per-example curve of GROUP_RUN."""
    event = accounting.dp_sgd_event(32 / 3989, 2.0, math.ceil(10 * 3989 / 32))
    return group_privacy.group_epsilon(accounting.epsilon_curve(event, accountant, 1e-6 / k), k, 1e-6)


needs_mixture = pytest.mark.skipif(
    not group_privacy.MIXTURE_AVAILABLE, reason="dp-accounting < 0.5 has no MixtureOfGaussiansDpEvent"
)


@pytest.mark.parametrize("k", [2, 5, 12])
def test_the_lemma_gives_k_times_dp_accountings_epsilon_at_the_solved_delta(k):
    """(eps, delta')-DP per example => (k eps, k e^{(k-1) eps} delta')-DP for k examples (Dwork & Roth 2014, 2.3)."""
    eps, example_delta = lemma_epsilon(k)
    steps = math.ceil(10 * 3989 / 32)
    per_example = rdp.RdpAccountant().compose(reference_event(32 / 3989, 2.0, steps)).get_epsilon(example_delta)
    assert eps == pytest.approx(k * per_example, rel=1e-12)
    group_delta = k * math.exp((k - 1) * per_example) * example_delta
    assert group_delta <= 1e-6 * (1 + 1e-12)  # the guarantee holds at the target delta ...
    assert group_delta >= 1e-6 * 0.999  # ... and delta' is not needlessly small
    assert eps >= k * ot.get_privacy_budget(**GROUP_RUN, verbose=False)  # delta' < target: never below k eps


def test_the_lemma_with_pld_is_a_valid_bound_no_larger_than_rdps():
    pld_eps, example_delta = lemma_epsilon(4, "pld")
    assert pld_eps <= lemma_epsilon(4)[0] + 1e-9
    assert 4 * math.exp(3 * pld_eps / 4) * example_delta <= 1e-6 * (1 + 1e-12)


@needs_mixture
def test_the_mixture_for_one_example_is_dp_accountings_poisson_sampled_gaussian():
    steps = math.ceil(10 * 3989 / 32)
    mixture = group_privacy.mixture_epsilon(32 / 3989, 2.0, steps, 1, 1e-6)
    reference = pld.PLDAccountant().compose(reference_event(32 / 3989, 2.0, steps)).get_epsilon(1e-6)
    assert reference <= mixture <= reference * 1.01  # a coarser pessimistic PLD: an upper bound, close


@needs_mixture
@pytest.mark.parametrize("k", [4, 12])
def test_the_group_epsilon_is_the_smaller_valid_conversion(k):
    eps, example_delta = accounting.training_epsilon_and_delta(*GROUP_RUN.values(), group_size=k)
    mixture = group_privacy.mixture_epsilon(32 / 3989, 2.0, math.ceil(10 * 3989 / 32), k, 1e-6)
    lemma, _ = lemma_epsilon(k)
    assert eps == min(mixture, lemma)
    assert mixture < lemma and example_delta is None  # on this run the mixture is the tighter one
    assert eps > k * 0.5 * ot.get_privacy_budget(**GROUP_RUN, accountant="pld", verbose=False)


def test_group_epsilon_grows_with_the_group():
    values = [ot.get_privacy_budget(**GROUP_RUN, group_size=k, verbose=False) for k in (1, 2, 4, 8)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False)), values


def test_verbose_output_says_what_a_group_protects(capsys):
    ot.get_privacy_budget(**GROUP_RUN, group_size=12, verbose=True)
    out = capsys.readouterr().out
    assert "GROUP_SIZE = 12: protects any 12 examples together" in out
    method = "binomial mixture of Gaussians" if group_privacy.MIXTURE_AVAILABLE else "Dwork & Roth"
    assert method in out and out.startswith("=> EPSILON_REQUIRED = ")


def test_a_long_run_has_a_group_guarantee_only_by_the_mixture():
    """The blog's run (noise 1.1, 12-step windows): the lemma never reaches delta = 1e-6."""
    with pytest.raises(ValueError, match="no per-example delta makes the group guarantee reach target_delta"):
        group_privacy.group_epsilon(
            accounting.epsilon_curve(accounting.dp_sgd_event(32 / 3989, 1.1, 1247), "rdp", 1e-7), 12, 1e-6
        )
    if not group_privacy.MIXTURE_AVAILABLE:
        with pytest.raises(ValueError, match="no per-example delta"):
            ot.get_privacy_budget(3989, 32, 10, 1.1, 1e-6, group_size=12, verbose=False)
        return
    eps = ot.get_privacy_budget(3989, 32, 10, 1.1, 1e-6, group_size=12, verbose=False)
    assert 12 * ot.get_privacy_budget(3989, 32, 10, 1.1, 1e-6, accountant="pld", verbose=False) / 2 < eps < 100


@pytest.mark.parametrize(
    "group_size,error",
    [
        (0, ValueError),
        (-2, ValueError),
        (1.5, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (4000, ValueError),
        ("2", TypeError),
        (True, TypeError),
    ],
)
def test_bad_group_sizes_are_refused_naming_the_argument(group_size, error):
    with pytest.raises(error, match="group_size"):
        ot.get_privacy_budget(**GROUP_RUN, group_size=group_size, verbose=False)


def test_merged_compositions_give_dp_accountings_epsilon():
    """fit composes the same step many times; merging identical parts must not change the RDP epsilon."""
    a, b = accounting.dp_sgd_event(0.004, 1.1, 391), accounting.dp_sgd_event(0.02, 0.9, 50)
    event = dp_accounting.ComposedDpEvent([a, b, dp_accounting.ComposedDpEvent([a, a]), dp_accounting.NoOpDpEvent()])
    merged = accounting.merged_event(event)
    assert merged == dp_accounting.ComposedDpEvent([dp_accounting.SelfComposedDpEvent(a.event, a.count * 3), b])
    for delta in (1e-5, 1e-7):
        expected = dp_accounting.rdp.RdpAccountant().compose(event).get_epsilon(delta)
        assert accounting.epsilon_for_event(event, delta, "rdp") == pytest.approx(expected, rel=1e-9)
        assert accounting.epsilon_for_event(event, delta, "rdp") == pytest.approx(expected, rel=1e-9)  # cached
    assert accounting.merged_event(a) == a
