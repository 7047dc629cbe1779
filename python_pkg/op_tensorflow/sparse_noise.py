"""Sparsity-preserving noise for embedding tables (DP-AdaFEST; Ghazi et al., NeurIPS 2023).

Dense DP-SGD adds ``N(0, (C sigma)^2)`` to every coordinate of an embedding table, so a ``V x d`` table gets a
dense ``V x d`` update at every step even when the batch looked up a few hundred rows. DP-AdaFEST releases the
table's gradient on a *privately selected* set of rows only. Per step and per table:

1. **Contribution map.** Example ``i`` contributes ``min(1, 1 / sqrt(k_i))`` to each of the ``k_i`` distinct
   rows it looks up (L2 norm <= 1). Examples the engine left out (``ok`` False) contribute nothing.
   :func:`row_counts` returns the rows touched and their summed weights.
2. **Selection.** Row ``r`` is selected iff ``count_r + N(0, sigma_sel^2) > tau``. Rows of count zero are
   selected independently with probability ``p = P(N(0, sigma_sel^2) > tau)``; :func:`select_rows` draws them
   sparsely (a binomial number of them, then a uniform subset of the untouched rows), so no ``V``-sized
   noise is drawn.
3. **Gradient.** :func:`noisy_sparse_gradient` sums the clipped per-lookup gradients on the selected rows and
   adds ``N(0, (C sigma_grad)^2)`` to each of their coordinates; every other row of the table gets exactly
   zero. The model's other (dense) variables get noise ``C sigma_grad``.

The two noise scales satisfy ``1/sigma_sel^2 + 1/sigma_grad^2 = 1/sigma^2`` (``sigma`` the user's
``noise_multiplier``), so a step is one Gaussian mechanism of noise multiplier ``sigma`` on one Poisson sample,
and the accountant's event ``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))`` is unchanged.
``docs/privacy.md`` ("Sparse embedding noise (DP-AdaFEST)") gives the derivation.

Every function is plain TensorFlow: it runs inside ``tf.function`` with an unknown batch dimension (including
an empty batch) without retracing, and draws only stateless random numbers from a ``[2]`` integer seed
(sub-seeds by ``stateless_fold_in``). The selected row set is released (it is a DP output); the noisy counts
are not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

__all__ = [
    "DEFAULT_SELECTION_SHARE",
    "DEFAULT_THRESHOLD_SIGMAS",
    "SparseEmbeddingNoise",
    "noisy_embedding_gradient",
    "noisy_selected_rows",
    "noisy_sparse_gradient",
    "row_counts",
    "select_rows",
]

DEFAULT_SELECTION_SHARE = 0.2
"""Share ``rho`` of ``1/sigma^2`` spent on row selection: ``sigma_sel = sigma / sqrt(0.2) ~ 2.24 sigma`` and
``sigma_grad = sigma / sqrt(0.8) ~ 1.118 sigma`` (the dense variables' noise std grows by 11.8%)."""

DEFAULT_THRESHOLD_SIGMAS = 3.0
"""Default threshold ``tau = 3 sigma_sel``: an untouched row is selected with probability
``P(Z > 3) ~ 1.35e-3``, so false positives cost ~0.135% of the table's rows per step, whatever ``sigma``."""

_FP_SEED, _COUNT_SEED = 1, 0  # sub-seeds of select_rows
_SELECT_SEED, _GRAD_SEED = 0, 1  # sub-seeds of noisy_selected_rows


def _normal_sf(z: float) -> float:
    """``P(Z > z)`` for a standard normal ``Z``."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _positive_number(name: str, value, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}; {fix}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}; {fix}")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class SparseEmbeddingNoise:
    """The noise scales and threshold of sparsity-preserving embedding noise for one DP-SGD run.

    ``1/sigma_selection^2 = selection_share / noise_multiplier^2`` and
    ``1/sigma_gradient^2 = (1 - selection_share) / noise_multiplier^2``, so the step is one Gaussian mechanism
    of multiplier ``noise_multiplier`` and is accounted as such.

    The threshold is set by one of two rules: ``threshold`` (absolute, in units of the contribution map: an
    example adds at most 1 to a row's count, and ``1/sqrt(k)`` when it looks up ``k`` distinct rows), or
    ``threshold_sigmas`` (``tau = threshold_sigmas * sigma_selection``, which fixes the false-positive rate at
    ``P(Z > threshold_sigmas)`` whatever the noise). With neither, ``threshold_sigmas = 3.0``.

    Attributes:
        noise_multiplier: The run's noise multiplier ``sigma`` (> 0), as given to the accountant.
        selection_share: ``rho`` in (0, 1), the share of ``1/sigma^2`` spent on selecting rows. Larger values
            select rows more accurately and add more noise to the gradients (dense variables included).
        threshold_sigmas: The threshold in units of ``sigma_selection`` (any finite number); exclusive with
            ``threshold``.
        threshold: The absolute threshold ``tau`` on the noisy counts (any finite number); exclusive with
            ``threshold_sigmas``.

    Raises:
        TypeError: An argument is not a number.
        ValueError: An argument is out of range, or both threshold rules are given.
    """

    noise_multiplier: float
    selection_share: float = DEFAULT_SELECTION_SHARE
    threshold_sigmas: float | None = None
    threshold: float | None = None

    def __post_init__(self):
        _positive_number("noise_multiplier", self.noise_multiplier, "pass the run's noise_multiplier, e.g. 1.1")
        rho = self.selection_share
        if isinstance(rho, bool) or not isinstance(rho, int | float):
            raise TypeError(f"selection_share must be a number in (0, 1), got {type(rho).__name__}")
        if not (0.0 < rho < 1.0):
            raise ValueError(
                f"selection_share must be strictly between 0 and 1, got {rho!r}; it is the share of 1/sigma^2 "
                f"spent on row selection (default {DEFAULT_SELECTION_SHARE}): 0 would select at random, 1 would "
                "leave no budget for the gradient"
            )
        if self.threshold is not None and self.threshold_sigmas is not None:
            raise ValueError(
                "threshold and threshold_sigmas are two rules for the same threshold; pass one of them "
                f"(threshold = threshold_sigmas * sigma_selection; default threshold_sigmas={DEFAULT_THRESHOLD_SIGMAS})"
            )
        for name in ("threshold", "threshold_sigmas"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number or None, got {type(value).__name__}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}; pass a finite number or None")

    @property
    def sigma_selection(self) -> float:
        """``sigma_sel = noise_multiplier / sqrt(selection_share)``, the noise std of the row counts."""
        return self.noise_multiplier / math.sqrt(self.selection_share)

    @property
    def sigma_gradient(self) -> float:
        """``sigma_grad = noise_multiplier / sqrt(1 - selection_share)``: multiply by ``l2_norm_clip`` for the
        noise std of the selected rows and of every dense variable."""
        return self.noise_multiplier / math.sqrt(1.0 - self.selection_share)

    @property
    def selection_threshold(self) -> float:
        """The absolute threshold ``tau`` on the noisy counts."""
        if self.threshold is not None:
            return float(self.threshold)
        sigmas = DEFAULT_THRESHOLD_SIGMAS if self.threshold_sigmas is None else self.threshold_sigmas
        return float(sigmas) * self.sigma_selection

    def selection_probability(self, count: float) -> float:
        """``P(count + N(0, sigma_sel^2) > tau)``: the probability that a row of this count is selected."""
        return _normal_sf((self.selection_threshold - float(count)) / self.sigma_selection)

    def false_positive_rate(self) -> float:
        """``P(N(0, sigma_sel^2) > tau)``: the probability that a row no example looked up is selected."""
        return self.selection_probability(0.0)

    def expected_false_positives(self, *, vocab_size: int, touched_rows: int = 0) -> float:
        """The expected number of selected rows that no example looked up: ``(V - touched) * p``."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be an int >= 1 (the table's row count), got {vocab_size!r}")
        if isinstance(touched_rows, bool) or not isinstance(touched_rows, int) or not 0 <= touched_rows <= vocab_size:
            raise ValueError(f"touched_rows must be an int in [0, vocab_size], got {touched_rows!r}")
        return (vocab_size - touched_rows) * self.false_positive_rate()


def _check_vocab_size(vocab_size) -> None:
    if isinstance(vocab_size, bool):
        raise TypeError("vocab_size must be an int >= 1 (the table's row count), got a bool")
    if isinstance(vocab_size, int) and vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1 (the table's row count), got {vocab_size}")


def row_counts(ids, ok=None) -> tuple[tf.Tensor, tf.Tensor]:
    """The rows a batch looks up and their summed contribution-map weights.

    Example ``i`` adds ``min(1, 1 / sqrt(k_i))`` to each of the ``k_i`` distinct rows among its ids (a row
    looked up several times by one example counts once), so its contribution map has L2 norm <= 1 (exactly 1
    when it looks anything up). Examples with ``ok`` False contribute nothing, and rows only they look up are
    not returned.

    Args:
        ids: Integer tensor of shape ``(batch, ...)`` (static rank >= 1, any batch size including 0): every
            row id each example looks up in the table, all lookups of the table concatenated. Ids must lie in
            ``[0, vocab_size)`` for :func:`select_rows`.
        ok: Optional boolean tensor of shape ``(batch,)``: False for examples the engine left out.

    Returns:
        ``(rows, counts)``: ``rows`` int64 of shape ``(n,)``, the distinct rows looked up by ``ok`` examples,
        in order of first appearance (unsorted); ``counts`` float32 of shape ``(n,)``, each > 0.

    Raises:
        TypeError: ``ids`` is not an integer tensor.
        ValueError: ``ids`` has no static rank >= 1.
    """
    ids = tf.convert_to_tensor(ids)
    if not ids.dtype.is_integer:
        raise TypeError(f"ids must be an integer tensor of row ids, got dtype {ids.dtype.name}; cast it first")
    if ids.shape.rank is None or ids.shape.rank < 1:
        raise ValueError(f"ids must have a static rank >= 1 with the batch first, got shape {ids.shape}")
    ids = tf.cast(ids, tf.int64)
    shape = tf.shape(ids, out_type=tf.int64)
    batch, per_example = shape[0], tf.reduce_prod(shape[1:])
    flat = tf.reshape(ids, [-1])
    example = tf.repeat(tf.range(batch, dtype=tf.int64), per_example)
    if ok is not None:
        keep = tf.gather(tf.reshape(tf.cast(ok, tf.bool), [-1]), example)
        flat, example = tf.boolean_mask(flat, keep), tf.boolean_mask(example, keep)
    # One key per (example, row) pair; exact for any ids while batch * (id range) fits in int64.
    low = tf.minimum(tf.reduce_min(flat), tf.reduce_max(flat))  # both extremes of an empty tensor: low > high
    span = tf.maximum(tf.reduce_max(flat) - low, 0) + 1
    pairs, _ = tf.unique(example * span + (flat - low))
    pair_example, pair_row = pairs // span, pairs % span + low
    distinct = tf.math.unsorted_segment_sum(tf.ones_like(pair_example, tf.float32), pair_example, batch)
    weight = tf.math.minimum(1.0, tf.math.rsqrt(tf.gather(distinct, pair_example)))  # distinct >= 1 here
    rows, row_of_pair = tf.unique(pair_row)
    counts = tf.math.unsorted_segment_sum(weight, row_of_pair, tf.size(rows))
    return rows, counts


def select_rows(rows, counts, *, vocab_size, sigma_selection, threshold, seed) -> tf.Tensor:
    """The rows whose Gaussian-noised count exceeds the threshold, drawn sparsely.

    A touched row is selected iff ``count + N(0, sigma_selection^2) > threshold``. Each of the
    ``V - n`` untouched rows would be selected independently with probability
    ``p = P(N(0, sigma_selection^2) > threshold)``; the same distribution is drawn as
    ``m ~ Binomial(V - n, p)`` and then a uniform ``m``-subset of the untouched rows: by rejection (uniform
    candidate ids, touched rows and repeats dropped, first occurrences kept) in ``O(m log n)`` work, or, when
    ``m > (V - n) / 2`` or ``n > V / 2``, by the ``m`` smallest of ``V`` uniform scores (``O(V log m)``, never
    ``O(V d)``). Candidate ids are drawn with TensorFlow's stateless int64 uniform, whose modulo bias is below
    ``V / 2**64``.

    Args:
        rows: Integer tensor ``(n,)`` of distinct touched rows in ``[0, vocab_size)`` (from :func:`row_counts`).
        counts: Float tensor ``(n,)``, their counts.
        vocab_size: The table's row count ``V`` (Python int or int scalar tensor).
        sigma_selection: Noise std of the counts (``SparseEmbeddingNoise.sigma_selection``), > 0.
        threshold: The threshold ``tau`` (``SparseEmbeddingNoise.selection_threshold``).
        seed: ``[2]`` integer seed. Sub-seeds: ``fold_in(seed, 0)`` for the counts' noise,
            ``fold_in(seed, 1)`` (folded again per draw) for the false positives.

    Returns:
        int64 tensor ``(s,)`` of distinct selected rows, sorted ascending.
    """
    _check_vocab_size(vocab_size)
    if isinstance(sigma_selection, int | float) and not sigma_selection > 0:
        raise ValueError(f"sigma_selection must be > 0, got {sigma_selection!r}; use SparseEmbeddingNoise(...)")
    fold_in = tf.random.experimental.stateless_fold_in
    rows = tf.reshape(tf.cast(rows, tf.int64), [-1])
    counts = tf.reshape(tf.cast(counts, tf.float32), [-1])
    vocab = tf.cast(vocab_size, tf.int64)
    sigma = tf.cast(sigma_selection, tf.float64)
    tau = tf.cast(threshold, tf.float64)
    n = tf.size(rows, out_type=tf.int64)

    noise = tf.random.stateless_normal(tf.shape(counts), seed=fold_in(seed, _COUNT_SEED), dtype=tf.float32)
    noisy = counts + noise * tf.cast(sigma, tf.float32)
    touched = tf.boolean_mask(rows, noisy > tf.cast(tau, tf.float32))

    free = vocab - n
    p = 0.5 * tf.math.erfc(tau / (sigma * math.sqrt(2.0)))
    fp_seed = fold_in(seed, _FP_SEED)
    m = tf.random.stateless_binomial(
        [], seed=fold_in(fp_seed, 0), counts=tf.cast(free, tf.float64), probs=p, output_dtype=tf.int64
    )

    def by_rejection():
        sentinel = tf.concat([tf.sort(rows), tf.reshape(vocab, [1])], 0)  # vocab exceeds every candidate

        def body(i, got):
            need = m - tf.size(got, out_type=tf.int64)
            # Expected acceptance >= 1/2 (n <= V/2); draw ~1.5x what is needed so one pass usually suffices.
            k = (3 * need * vocab) // (2 * tf.maximum(free, 1)) + 16
            candidates = tf.random.stateless_uniform(
                tf.reshape(k, [1]), seed=fold_in(fp_seed, i), minval=0, maxval=vocab, dtype=tf.int64
            )
            hit = tf.gather(sentinel, tf.searchsorted(sentinel, candidates)) == candidates
            got, _ = tf.unique(tf.concat([got, tf.boolean_mask(candidates, ~hit)], 0))
            return i + 1, got

        _, got = tf.while_loop(
            lambda i, got: tf.size(got, out_type=tf.int64) < m,
            body,
            (tf.constant(1, tf.int64), tf.zeros([0], tf.int64)),
            shape_invariants=(tf.TensorShape([]), tf.TensorShape([None])),
        )
        return got[:m]

    def by_scores():
        scores = tf.random.stateless_uniform(tf.reshape(vocab, [1]), seed=fold_in(fp_seed, 0), dtype=tf.float64)
        scores = tf.tensor_scatter_nd_update(
            scores, rows[:, None], tf.fill(tf.shape(rows), tf.constant(2.0, tf.float64))
        )
        _, smallest = tf.math.top_k(-scores, k=tf.cast(m, tf.int32))
        return tf.cast(smallest, tf.int64)

    dense = tf.logical_or(2 * m > free, 2 * n > vocab)
    false_positives = tf.cond(dense, by_scores, by_rejection)
    return tf.sort(tf.concat([touched, false_positives], 0))


def noisy_sparse_gradient(grad, selected, *, stddev, seed, vocab_size, divide_by=1.0) -> tf.IndexedSlices:
    """The table's gradient on the selected rows plus Gaussian noise; zero (absent) on every other row.

    Args:
        grad: ``tf.IndexedSlices`` of the clipped gradient sum: ``values`` ``(lookups, d...)``, one row per
            lookup already multiplied by its example's clip factor, ``indices`` the looked-up rows (repeats
            allowed).
        selected: Integer tensor ``(s,)`` of distinct rows (from :func:`select_rows`), any order.
        stddev: Noise std per coordinate, ``l2_norm_clip * sigma_gradient``; 0 gives the exact sum.
        seed: ``[2]`` integer seed of the noise (drawn with ``tf.random.stateless_normal``).
        vocab_size: The table's row count ``V``: the result's ``dense_shape[0]``.
        divide_by: The engine's divisor (the expected batch ``q n``), applied after the noise.

    Returns:
        ``tf.IndexedSlices`` with ``indices = selected`` (unique, same order, ``grad.indices``' dtype), values
        ``(sum of grad.values over the lookups of each selected row + N(0, stddev^2)) / divide_by``
        (``(s, d...)``, ``grad.values``' dtype), ``dense_shape = [V, d...]``.

    Raises:
        TypeError: ``grad`` is not a ``tf.IndexedSlices``.
    """
    if not isinstance(grad, tf.IndexedSlices):
        raise TypeError(
            f"grad must be a tf.IndexedSlices (the table's clipped gradient sum), got {type(grad).__name__}; "
            "convert a dense gradient with tf.IndexedSlices(values=g, indices=tf.range(V))"
        )
    _check_vocab_size(vocab_size)
    if isinstance(stddev, int | float) and not stddev >= 0:
        raise ValueError(f"stddev must be >= 0, got {stddev!r}; pass l2_norm_clip * sigma_gradient")
    values = grad.values
    lookups = tf.reshape(tf.cast(grad.indices, tf.int64), [-1])
    wanted = tf.reshape(tf.cast(selected, tf.int64), [-1])
    s = tf.size(wanted, out_type=tf.int64)
    order = tf.argsort(wanted, stable=True)
    sorted_rows = tf.concat([tf.gather(wanted, order), [tf.int64.max]], 0)  # sentinel matches no valid row
    slot_of_sorted = tf.concat([tf.cast(order, tf.int64), tf.reshape(s, [1])], 0)
    position = tf.searchsorted(sorted_rows, lookups)
    found = tf.gather(sorted_rows, position) == lookups
    segment = tf.where(found, tf.gather(slot_of_sorted, position), s)  # unselected lookups go to slot s, dropped
    summed = tf.math.unsorted_segment_sum(values, segment, s + 1)[:s]
    noise = tf.random.stateless_normal(tf.shape(summed), seed=seed, dtype=values.dtype)
    noisy = (summed + noise * tf.cast(stddev, values.dtype)) / tf.cast(divide_by, values.dtype)
    dense_shape = tf.concat(
        [tf.reshape(tf.cast(vocab_size, tf.int64), [1]), tf.shape(values, out_type=tf.int64)[1:]], 0
    )
    return tf.IndexedSlices(noisy, tf.cast(wanted, grad.indices.dtype), dense_shape=dense_shape)


def noisy_embedding_gradient(
    grad, ids, *, config: SparseEmbeddingNoise, l2_norm_clip, vocab_size, seed, ok=None, divide_by=1.0
) -> tf.IndexedSlices:
    """One table's whole sparse release: :func:`row_counts`, :func:`select_rows`, :func:`noisy_sparse_gradient`.

    Args:
        grad: The table's clipped gradient sum as ``tf.IndexedSlices`` (see :func:`noisy_sparse_gradient`).
        ids: The ids each example looked up in the table, ``(batch, ...)`` (see :func:`row_counts`).
        config: The run's :class:`SparseEmbeddingNoise`.
        l2_norm_clip: The engine's clip norm ``C``; the selected rows get noise std ``C * sigma_gradient``.
        vocab_size: The table's row count ``V``.
        seed: ``[2]`` integer seed for this table and step, disjoint from the dense variables' noise seeds.
            ``fold_in(seed, 0)`` selects, ``fold_in(seed, 1)`` draws the gradient noise.
        ok: Optional ``(batch,)`` boolean mask of the examples the engine kept.
        divide_by: The engine's divisor (the expected batch ``q n``).

    Returns:
        The noisy ``tf.IndexedSlices`` on the selected rows.

    Raises:
        TypeError: ``config`` is not a :class:`SparseEmbeddingNoise`.
    """
    rows, counts = row_counts(ids, ok)
    return noisy_selected_rows(
        grad,
        rows,
        counts,
        config=config,
        l2_norm_clip=l2_norm_clip,
        vocab_size=vocab_size,
        seed=seed,
        divide_by=divide_by,
    )


def noisy_selected_rows(
    grad, rows, counts, *, config: SparseEmbeddingNoise, l2_norm_clip, vocab_size, seed, divide_by=1.0
) -> tf.IndexedSlices:
    """:func:`select_rows` from precomputed :func:`row_counts`, then :func:`noisy_sparse_gradient` on them.

    Args:
        grad: The table's clipped gradient sum as ``tf.IndexedSlices`` (see :func:`noisy_sparse_gradient`).
        rows: The rows the batch touched, from :func:`row_counts`.
        counts: Their contribution-map counts, from :func:`row_counts`.
        config: The run's :class:`SparseEmbeddingNoise`.
        l2_norm_clip: The engine's clip norm ``C``; the selected rows get noise std ``C * sigma_gradient``.
        vocab_size: The table's row count ``V``.
        seed: ``[2]`` integer seed for this table and step, disjoint from the dense variables' noise seeds.
            ``fold_in(seed, 0)`` selects, ``fold_in(seed, 1)`` draws the gradient noise.
        divide_by: The engine's divisor (the expected batch ``q n``).

    Returns:
        The noisy ``tf.IndexedSlices`` on the selected rows.

    Raises:
        TypeError: ``config`` is not a :class:`SparseEmbeddingNoise`.
    """
    if not isinstance(config, SparseEmbeddingNoise):
        raise TypeError(f"config must be a SparseEmbeddingNoise, got {type(config).__name__}")
    fold_in = tf.random.experimental.stateless_fold_in
    selected = select_rows(
        rows,
        counts,
        vocab_size=vocab_size,
        sigma_selection=config.sigma_selection,
        threshold=config.selection_threshold,
        seed=fold_in(seed, _SELECT_SEED),
    )
    return noisy_sparse_gradient(
        grad,
        selected,
        stddev=l2_norm_clip * config.sigma_gradient,
        seed=fold_in(seed, _GRAD_SEED),
        vocab_size=vocab_size,
        divide_by=divide_by,
    )
