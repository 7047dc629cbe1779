"""Sparsity-preserving embedding noise (op_tensorflow.sparse_noise, DP-AdaFEST): the noise split and its
accounting, the contribution map, the selection statistics, the noise on the selected rows, graph behaviour
and the Keras optimizers' handling of the sparse result.

Statistical tests use fixed seeds and reject at p < 1e-6 (exact binomial tests, chi-square bounds), so each
can fail if the mechanism is wrong and a correct one fails once in ~1e6 runs per test.
"""

import math

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from op_tensorflow import accounting, keras_seam
from op_tensorflow.sparse_noise import (
    DEFAULT_SELECTION_SHARE,
    DEFAULT_THRESHOLD_SIGMAS,
    SparseEmbeddingNoise,
    noisy_embedding_gradient,
    noisy_sparse_gradient,
    row_counts,
    select_rows,
)

P_REJECT = 1e-6
INT = tf.TensorSpec([None], tf.int64)
FLOAT = tf.TensorSpec([None], tf.float32)
SEED = tf.TensorSpec([2], tf.int64)


def seed(i: int) -> tf.Tensor:
    return tf.constant([20231110, i], tf.int64)


def binomial_ok(k: int, n: int, p: float) -> float:
    return stats.binomtest(int(k), int(n), p).pvalue


def independent_binomials_chi2(observed, trials, p) -> float:
    """Two-sided p-value of sum (x - n p)^2 / (n p (1 - p)) for independent Binomial(n_b, p) counts x_b."""
    observed, trials = np.asarray(observed, float), np.asarray(trials, float)
    statistic = np.sum((observed - trials * p) ** 2 / (trials * p * (1 - p)))
    df = len(observed)
    return 2 * min(stats.chi2.cdf(statistic, df), stats.chi2.sf(statistic, df))


# --- configuration and accounting ---------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.5, 1.1, 4.0])
@pytest.mark.parametrize("share", [0.05, DEFAULT_SELECTION_SHARE, 0.5, 0.9])
def test_split_is_one_gaussian_of_the_users_multiplier(sigma, share):
    cfg = SparseEmbeddingNoise(noise_multiplier=sigma, selection_share=share)
    assert cfg.sigma_selection**-2 + cfg.sigma_gradient**-2 == pytest.approx(sigma**-2, rel=1e-12)
    assert cfg.sigma_selection**-2 == pytest.approx(share / sigma**2, rel=1e-12)
    assert cfg.sigma_gradient > sigma and cfg.sigma_selection > sigma


def test_defaults_and_threshold_rules():
    cfg = SparseEmbeddingNoise(noise_multiplier=1.0)
    assert cfg.selection_share == DEFAULT_SELECTION_SHARE == 0.2
    assert cfg.selection_threshold == pytest.approx(DEFAULT_THRESHOLD_SIGMAS * cfg.sigma_selection)
    assert cfg.false_positive_rate() == pytest.approx(stats.norm.sf(DEFAULT_THRESHOLD_SIGMAS), rel=1e-9)
    assert cfg.expected_false_positives(vocab_size=10_000, touched_rows=1000) == pytest.approx(
        9000 * stats.norm.sf(3.0), rel=1e-9
    )
    absolute = SparseEmbeddingNoise(noise_multiplier=2.0, selection_share=0.5, threshold=5.0)
    assert absolute.selection_threshold == 5.0
    assert absolute.selection_probability(4.0) == pytest.approx(stats.norm.sf(1.0 / absolute.sigma_selection))
    relative = SparseEmbeddingNoise(noise_multiplier=2.0, threshold_sigmas=2.0)
    assert relative.false_positive_rate() == pytest.approx(stats.norm.sf(2.0), rel=1e-9)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"noise_multiplier": 0.0}, ValueError, "noise_multiplier"),
        ({"noise_multiplier": "1"}, TypeError, "noise_multiplier"),
        ({"noise_multiplier": float("nan")}, ValueError, "noise_multiplier"),
        ({"noise_multiplier": 1.0, "selection_share": 1.0}, ValueError, "selection_share"),
        ({"noise_multiplier": 1.0, "selection_share": 0}, ValueError, "selection_share"),
        ({"noise_multiplier": 1.0, "selection_share": True}, TypeError, "selection_share"),
        ({"noise_multiplier": 1.0, "threshold": 2.0, "threshold_sigmas": 3.0}, ValueError, "pass one of them"),
        ({"noise_multiplier": 1.0, "threshold": float("inf")}, ValueError, "threshold"),
        ({"noise_multiplier": 1.0, "threshold_sigmas": "3"}, TypeError, "threshold_sigmas"),
    ],
)
def test_config_errors_name_the_argument(kwargs, error, words):
    with pytest.raises(error, match=words):
        SparseEmbeddingNoise(**kwargs)


def test_config_is_frozen_and_keyword_only():
    cfg = SparseEmbeddingNoise(noise_multiplier=1.0)
    with pytest.raises(AttributeError):
        cfg.noise_multiplier = 2.0
    with pytest.raises(TypeError):
        SparseEmbeddingNoise(1.0)


def _rdp(event) -> np.ndarray:
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(event)
    return np.asarray(accountant._rdp)


def _epsilon(event, delta=1e-6) -> float:
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(event)
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize("sigma, share", [(0.8, 0.2), (1.1, 0.1), (2.0, 0.5)])
def test_the_two_gaussian_releases_compose_to_exactly_one_gaussian(sigma, share):
    cfg = SparseEmbeddingNoise(noise_multiplier=sigma, selection_share=share)
    joint = dp_accounting.GaussianDpEvent(sigma)
    parts = dp_accounting.ComposedDpEvent(
        [dp_accounting.GaussianDpEvent(cfg.sigma_selection), dp_accounting.GaussianDpEvent(cfg.sigma_gradient)]
    )
    np.testing.assert_allclose(_rdp(parts), _rdp(joint), rtol=1e-9)  # alpha/(2 s1^2) + alpha/(2 s2^2)


def _pld_epsilon(event, delta=1e-6) -> float:
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    accountant.compose(event)
    return accountant.get_epsilon(delta)


def _separately_sampled(q, cfg, steps):
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.ComposedDpEvent(
            [
                dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(cfg.sigma_selection)),
                dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(cfg.sigma_gradient)),
            ]
        ),
        steps,
    )


@pytest.mark.parametrize(
    "sigma, share, q, steps", [(1.1, DEFAULT_SELECTION_SHARE, 256 / 60000, 2000), (0.8, 0.5, 0.01, 500)]
)
def test_the_step_is_accounted_with_sigma_never_as_two_separately_sampled_gaussians(sigma, share, q, steps):
    """The engine's event, one PoissonSampled Gaussian of sigma, is the exact account of the step: both releases
    use the same Poisson sample, so a present example is in both. Composing two separately Poisson-sampled
    Gaussians would be the account of two *independent* samples, a different and more private mechanism: it
    reports a smaller epsilon (here by RDP and PLD), i.e. it would under-report the real step. This test pins
    that direction so that nobody "improves" the accounting that way."""
    cfg = SparseEmbeddingNoise(noise_multiplier=sigma, selection_share=share)
    joint = accounting.dp_sgd_event(q, sigma, steps)
    assert joint == dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    separately = _separately_sampled(q, cfg, steps)
    assert math.isfinite(_epsilon(joint))
    assert _epsilon(joint) > _epsilon(separately)
    assert _pld_epsilon(joint) > _pld_epsilon(separately)


def test_without_subsampling_both_accounts_agree():
    """At q = 1 there is no sampling to share and the two accounts are the same Gaussian mechanism."""
    cfg = SparseEmbeddingNoise(noise_multiplier=1.0, selection_share=0.3)
    joint = accounting.dp_sgd_event(1.0, 1.0, 3)
    assert _epsilon(joint) == pytest.approx(_epsilon(_separately_sampled(1.0, cfg, 3)), rel=1e-9)


# --- contribution map ---------------------------------------------------------------------------------------


def reference_counts(ids: np.ndarray, ok: np.ndarray | None) -> dict[int, float]:
    counts: dict[int, float] = {}
    for i, example in enumerate(ids.reshape(len(ids), int(np.prod(ids.shape[1:])))):
        if ok is not None and not ok[i]:
            continue
        distinct = set(example.tolist())
        for row in distinct:
            counts[row] = counts.get(row, 0.0) + min(1.0, 1.0 / math.sqrt(len(distinct)))
    return counts


@pytest.mark.parametrize("shape", [(40,), (40, 7), (40, 3, 5), (0, 6)])
@pytest.mark.parametrize("with_ok", [False, True])
def test_row_counts_match_a_numpy_reference(shape, with_ok):
    rng = np.random.default_rng(len(shape) + 10 * with_ok)
    ids = rng.integers(0, 30, size=shape)  # many repeats within and across examples
    ok = rng.random(shape[0]) < 0.7 if with_ok else None
    rows, counts = tf.function(row_counts)(tf.constant(ids, tf.int32), None if ok is None else tf.constant(ok))
    rows, counts = rows.numpy(), counts.numpy()
    assert rows.dtype == np.int64 and counts.dtype == np.float32
    assert len(set(rows.tolist())) == len(rows)
    expected = reference_counts(ids, ok)
    assert set(rows.tolist()) == set(expected)
    np.testing.assert_allclose(counts, [expected[r] for r in rows], rtol=1e-6)
    assert np.all(counts > 0)


def test_each_examples_contribution_map_has_l2_norm_at_most_one():
    rng = np.random.default_rng(5)
    for length in [1, 2, 3, 17, 64]:
        for _ in range(5):
            example = rng.integers(0, 1000, size=(1, length))
            _, counts = row_counts(tf.constant(example))
            assert np.sum(counts.numpy() ** 2) == pytest.approx(1.0, rel=1e-6)  # the clip C1 = 1 is reached
            assert np.all(counts.numpy() <= 1.0)
    # adding one example to a batch moves the counts by at most 1 in L2 (the selection's sensitivity)
    batch = rng.integers(0, 50, size=(30, 8))
    extra = rng.integers(0, 50, size=(1, 8))
    before = reference_counts(batch, None)
    after = dict(zip(*(t.numpy().tolist() for t in row_counts(tf.constant(np.vstack([batch, extra])))), strict=True))
    change = [after[r] - before.get(r, 0.0) for r in after]
    assert math.sqrt(sum(c * c for c in change)) <= 1.0 + 1e-5


def test_left_out_examples_contribute_nothing():
    ids = tf.constant([[3, 4, 4], [4, 9, 1]])
    rows, counts = row_counts(ids, ok=tf.constant([False, True]))
    assert sorted(rows.numpy().tolist()) == [1, 4, 9]
    np.testing.assert_allclose(counts.numpy(), [1 / math.sqrt(3)] * 3, rtol=1e-6)
    rows, counts = row_counts(ids, ok=tf.constant([False, False]))
    assert rows.shape == (0,) and counts.shape == (0,)


def test_row_counts_refuses_non_integer_ids():
    with pytest.raises(TypeError, match="ids"):
        row_counts(tf.constant([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="ids"):
        row_counts(tf.constant(3))


# --- selection ----------------------------------------------------------------------------------------------


@tf.function(input_signature=[INT, FLOAT, SEED, tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.float64)])
def _select(rows, counts, s, vocab, threshold):
    return select_rows(rows, counts, vocab_size=vocab, sigma_selection=1.0, threshold=threshold, seed=s)


def test_touched_rows_are_selected_at_the_noisy_count_rate():
    levels = [0.5, 2.0, 3.5, 4.5]  # 50k rows each: a 5% error in sigma_selection fails at levels 0.5, 3.5 and 4.5
    per_level, vocab, tau = 50_000, 1_000_000, 2.0
    rows = np.arange(per_level * len(levels))
    counts = np.repeat(np.array(levels, np.float32), per_level)
    for trial in range(3):
        selected = _select(rows, counts, seed(trial), vocab, tau).numpy()
        assert len(np.unique(selected)) == len(selected) and np.all(np.diff(selected) > 0)
        for j, level in enumerate(levels):
            k = np.sum((selected >= j * per_level) & (selected < (j + 1) * per_level))
            p = stats.norm.sf(tau - level)
            assert binomial_ok(k, per_level, p) > P_REJECT, (level, k, per_level * p)


def _false_positive_draws(vocab, touched, tau, trials):
    """Selections when touched rows can never pass (count -1e9): every selected row is a false positive."""
    counts = np.full(len(touched), -1e9, np.float32)
    draws = [_select(touched, counts, seed(100 + t), vocab, tau).numpy() for t in range(trials)]
    touched_set = set(touched.tolist())
    for d in draws:
        assert len(np.unique(d)) == len(d)  # no duplicates
        assert not touched_set.intersection(d.tolist())  # the false-positive path never returns a touched row
        assert np.all((d >= 0) & (d < vocab))
    return draws


@pytest.mark.parametrize(
    "vocab, n_touched, tau, trials, path",
    [
        (200_000, 1000, 3.0, 40, "rejection"),  # m ~ 268 per draw
        (100_000, 20, 1.0, 10, "rejection"),  # m ~ 15.9k per draw, several rejection rounds
        (2000, 300, -0.5, 40, "scores: m > (V - n) / 2"),
        (1000, 600, 2.0, 200, "scores: n > V / 2"),
    ],
)
def test_untouched_rows_are_selected_at_the_false_positive_rate_uniformly(vocab, n_touched, tau, trials, path):
    rng = np.random.default_rng(vocab + n_touched)
    touched = np.sort(rng.choice(vocab, size=n_touched, replace=False))
    draws = _false_positive_draws(vocab, touched, tau, trials)
    p = stats.norm.sf(tau)
    free = vocab - n_touched
    total = sum(len(d) for d in draws)
    assert binomial_ok(total, trials * free, p) > P_REJECT, (path, total, trials * free * p)
    # uniformity: per-bin selection counts over the untouched rows are independent Binomial(trials * size, p)
    untouched = np.setdiff1d(np.arange(vocab), touched)
    bins = np.array_split(untouched, min(50, len(untouched)) if p < 0.1 else len(untouched))
    hits = np.zeros(vocab, np.int64)
    for d in draws:
        hits[d] += 1
    observed = [hits[b].sum() for b in bins]
    sizes = [trials * len(b) for b in bins]
    assert independent_binomials_chi2(observed, sizes, p) > P_REJECT, path


def test_a_uniform_subset_not_a_biased_one_each_row_is_marginally_bernoulli():
    """The rejection path's first-occurrence rule: low and high ids are equally likely (no order bias)."""
    vocab, tau, trials = 50_000, 1.5, 30
    touched = np.arange(0, vocab, 7)  # a regular pattern the rejection must skip
    draws = _false_positive_draws(vocab, touched, tau, trials)
    p = stats.norm.sf(tau)
    hits = np.zeros(vocab, np.int64)
    for d in draws:
        hits[d] += 1
    untouched = np.setdiff1d(np.arange(vocab), touched)
    low, high = untouched[: len(untouched) // 2], untouched[len(untouched) // 2 :]
    for part in (low, high):
        assert binomial_ok(hits[part].sum(), trials * len(part), p) > P_REJECT


def test_selection_with_nothing_touched_and_everything_touched():
    empty = _select(np.zeros([0], np.int64), np.zeros([0], np.float32), seed(1), 10_000, 2.0).numpy()
    assert len(np.unique(empty)) == len(empty) > 0  # only false positives (~228 expected)
    everything = _select(np.arange(50), np.full(50, 10.0, np.float32), seed(2), 50, 2.0).numpy()
    assert everything.tolist() == list(range(50))  # count 10 vs tau 2: all pass, no room for false positives


def test_select_rows_argument_errors():
    with pytest.raises(ValueError, match="vocab_size"):
        select_rows([1], [1.0], vocab_size=0, sigma_selection=1.0, threshold=1.0, seed=seed(0))
    with pytest.raises(ValueError, match="sigma_selection"):
        select_rows([1], [1.0], vocab_size=10, sigma_selection=0.0, threshold=1.0, seed=seed(0))


# --- noise on the selected rows -----------------------------------------------------------------------------


def _sparse_problem(rng, vocab=50_000, lookups=40_000, d=8, n_selected=10_000):
    indices = rng.integers(0, vocab // 5, size=lookups)  # repeats, and rows looked up but not selected
    values = rng.normal(size=(lookups, d)).astype(np.float32)
    selected = rng.choice(vocab // 4, size=n_selected, replace=False)  # some selected rows have no lookup
    dense = np.zeros((vocab, d), np.float64)
    np.add.at(dense, indices, values)
    return indices, values, selected, dense


@tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32), INT, INT, tf.TensorSpec([], tf.float32), SEED])
def _noisy(values, indices, selected, stddev, s):
    grad = tf.IndexedSlices(values, indices, dense_shape=tf.constant([50_000, 8], tf.int64))
    out = noisy_sparse_gradient(grad, selected, stddev=stddev, seed=s, vocab_size=50_000)
    return out.values, out.indices, out.dense_shape


def test_zero_stddev_gives_the_aggregated_gradient_on_the_selected_rows():
    indices, values, selected, dense = _sparse_problem(np.random.default_rng(1))
    out_values, out_indices, shape = _noisy(values, indices, selected, 0.0, seed(3))
    assert out_indices.numpy().tolist() == selected.tolist()  # same order, unique
    assert shape.numpy().tolist() == [50_000, 8]
    np.testing.assert_allclose(out_values.numpy(), dense[selected], rtol=1e-5, atol=1e-5)


def test_noise_std_on_selected_rows_and_exact_zero_elsewhere():
    indices, values, selected, dense = _sparse_problem(np.random.default_rng(2))
    stddev = 0.7  # 80k coordinates: a 2% error in the std moves the chi-square by ~8 of its sds
    out_values, out_indices, _ = _noisy(values, indices, selected, stddev, seed(4))
    z = ((out_values.numpy() - dense[selected]) / stddev).ravel()
    n = z.size
    chi2 = float(np.sum(z**2))
    assert 2 * min(stats.chi2.cdf(chi2, n), stats.chi2.sf(chi2, n)) > P_REJECT, chi2 / n
    assert 2 * stats.norm.sf(abs(z.mean()) * math.sqrt(n)) > P_REJECT
    assert stats.kstest(z, "norm").pvalue > P_REJECT
    released = tf.convert_to_tensor(tf.IndexedSlices(out_values, out_indices, [50_000, 8])).numpy()
    others = np.setdiff1d(np.arange(50_000), selected)
    assert np.all(released[others] == 0.0)  # exactly zero, not small
    assert np.count_nonzero(dense[others]) > 0  # ... although those rows had a gradient


def test_divide_by_and_dtypes_follow_the_gradient():
    grad = tf.IndexedSlices(tf.ones([4, 2], tf.float64), tf.constant([0, 1, 1, 5], tf.int32), dense_shape=[6, 2])
    out = noisy_sparse_gradient(grad, tf.constant([1, 3]), stddev=0.0, seed=seed(0), vocab_size=6, divide_by=4.0)
    assert out.values.dtype == tf.float64 and out.indices.dtype == tf.int32
    np.testing.assert_array_equal(out.values.numpy(), [[0.5, 0.5], [0.0, 0.0]])
    with pytest.raises(TypeError, match="IndexedSlices"):
        noisy_sparse_gradient(tf.ones([6, 2]), tf.constant([1]), stddev=0.0, seed=seed(0), vocab_size=6)


# --- the whole release in a graph ---------------------------------------------------------------------------

TRACES = []
CONFIG = SparseEmbeddingNoise(noise_multiplier=1.0, selection_share=0.5, threshold=1.5)
VOCAB, DIM = 5000, 4


@tf.function(
    input_signature=[
        tf.TensorSpec([None, DIM], tf.float32),
        tf.TensorSpec([None, 6], tf.int64),
        tf.TensorSpec([None], tf.bool),
        SEED,
    ]
)
def _release(values, ids, ok, s):
    TRACES.append(1)
    grad = tf.IndexedSlices(values, tf.reshape(ids, [-1]), dense_shape=tf.constant([VOCAB, DIM], tf.int64))
    out = noisy_embedding_gradient(
        grad, ids, config=CONFIG, l2_norm_clip=2.0, vocab_size=VOCAB, seed=s, ok=ok, divide_by=10.0
    )
    return out.values, out.indices


def _batch(rng, b):
    ids = rng.integers(0, 200, size=(b, 6))
    return rng.normal(size=(b * 6, DIM)).astype(np.float32), ids, rng.random(b) < 0.9


def test_one_trace_for_every_batch_size_including_empty():
    rng = np.random.default_rng(0)
    TRACES.clear()
    for b in [0, 1, 7, 64, 0, 300]:
        values, indices = _release(*_batch(rng, b), seed(b))
        assert values.shape[0] == indices.shape[0] and values.shape[1:] == (DIM,)
        assert len(np.unique(indices.numpy())) == len(indices)
    assert len(TRACES) == 1


def test_empty_batch_releases_only_false_positives_of_pure_noise():
    values, indices = _release(np.zeros((0, DIM), np.float32), np.zeros((0, 6), np.int64), np.zeros(0, bool), seed(9))
    expected = VOCAB * CONFIG.false_positive_rate()  # ~ 1.7% of 5000: 85 rows
    assert binomial_ok(len(indices), VOCAB, CONFIG.false_positive_rate()) > P_REJECT, (len(indices), expected)
    z = values.numpy().ravel() * 10.0 / (2.0 * CONFIG.sigma_gradient)
    chi2 = float(np.sum(z**2))
    assert 2 * min(stats.chi2.cdf(chi2, z.size), stats.chi2.sf(chi2, z.size)) > P_REJECT


def test_same_seed_same_release_other_seed_other_release():
    batch = _batch(np.random.default_rng(3), 50)
    first, again, other = (_release(*batch, s) for s in (seed(1), seed(1), seed(2)))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert other[1].numpy().tolist() != first[1].numpy().tolist()
    common = np.intersect1d(first[1].numpy(), other[1].numpy())
    assert len(common) > 0
    pick = lambda out: out[0].numpy()[np.searchsorted(out[1].numpy(), common)]  # noqa: E731  (indices sorted)
    assert not np.any(pick(first) == pick(other))


# --- Keras optimizers take the sparse gradient --------------------------------------------------------------


def _embedding_and_gradient():
    layer = tf.keras.layers.Embedding(VOCAB, DIM)
    layer.build((None, 6))
    ids = tf.constant(np.random.default_rng(4).integers(0, 30, size=(32, 6)))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(ids)))
    (grad,) = tape.gradient(loss, keras_seam.tape_variables([layer.embeddings]))
    assert isinstance(grad, tf.IndexedSlices)
    config = SparseEmbeddingNoise(noise_multiplier=0.3, selection_share=0.5, threshold=1.0)
    noisy = noisy_embedding_gradient(grad, ids, config=config, l2_norm_clip=1.0, vocab_size=VOCAB, seed=seed(5))
    return layer.embeddings, noisy


@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
@pytest.mark.parametrize("in_graph", [False, True])
def test_keras_optimizer_updates_only_the_selected_rows(optimizer, in_graph):
    variable, noisy = _embedding_and_gradient()
    selected = noisy.indices.numpy()
    assert 0 < len(selected) < VOCAB // 10
    before = np.array(variable.numpy())
    opt = getattr(tf.keras.optimizers, optimizer)(learning_rate=0.1)
    opt.build([variable])
    apply = tf.function(lambda: opt.apply_gradients([(noisy, variable)])) if in_graph else None
    (apply or (lambda: opt.apply_gradients([(noisy, variable)])))()
    after = np.array(variable.numpy())
    others = np.setdiff1d(np.arange(VOCAB), selected)
    np.testing.assert_array_equal(after[others], before[others])  # Adam too: first step from zero moments
    assert np.all(np.any(after[selected] != before[selected], axis=1))
    if optimizer == "SGD":
        np.testing.assert_allclose(after[selected], before[selected] - 0.1 * noisy.values.numpy(), rtol=1e-5, atol=1e-6)
