"""Poisson-sampled training batches from private data: ``PrivateDataLoader``.

DP-SGD's privacy accounting (see :mod:`op_tensorflow.accounting`) assumes Poisson
sampling: at every step each row joins the batch independently with probability
``q = batch_size / sample_size``, so batch sizes vary (and can be 0), and a run of ``E``
epochs takes ``ceil(E * n / batch_size)`` steps. ``PrivateDataLoader`` produces exactly
those batches, so the epsilon charged for a run is the epsilon of what the run did.

The loader's public surface is data-independent: the row count, the batch size, the
sampling rate, step counts, column names and the per-example input shape. The rows live in
underscore attributes that only op_tensorflow's own training code reads
(``_epoch_batches``, ``_dataset``). Iterating, indexing, pickling and copying a loader
raise ``PrivacyError``. As for ``PrivateDataFrame``, this guards against accidental
release: Python cannot stop a determined user of the same process from reading private
attributes.

Sampling cost per step is O(batch size), not O(n): the batch size ``k`` is drawn from
Binomial(n, q), then ``k`` distinct rows are drawn uniformly (together exactly the Poisson
sampling distribution) and gathered from contiguous float32 arrays prepared once.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence

import dp_accounting
import numpy as np

from op_tensorflow import _checks, accounting
from op_tensorflow.arrays import private_arrays
from op_tensorflow.budget import PrivacyBudget
from op_tensorflow.errors import PrivacyError
from op_tensorflow.frame import PrivateDataFrame, PrivateSeries
from op_tensorflow.loader_columns import as_frame as _as_frame
from op_tensorflow.loader_columns import check_aligned
from op_tensorflow.loader_columns import check_numeric as _check_numeric
from op_tensorflow.loader_columns import clamp as _clamp
from op_tensorflow.loader_columns import column_bounds as _column_bounds
from op_tensorflow.loader_columns import float64 as _float64
from op_tensorflow.loader_columns import validate_feature_shape as _validate_feature_shape
from op_tensorflow.loader_sampling import graph_sampler
from op_tensorflow.private_base import REPR_COLUMNS, REPR_WIDTH

__all__ = ["PrivateDataLoader"]

_TRAIN_HINT = "Train a model on the loader with op_tensorflow instead; the loader never hands out rows."


def _refuse(what: str, instead: str = _TRAIN_HINT, *, message: str | None = None):
    text = message or f"{what} would release raw private rows of this PrivateDataLoader. {instead}"

    def method(self, *args, **kwargs):
        raise PrivacyError(text)

    method.__name__ = what
    return method


class PrivateDataLoader:
    """Poisson-sampled DP-SGD batches of a private dataset's features and labels.

    Args:
        feature_df: The features: a ``PrivateDataFrame``, or a ``PrivateSeries`` for a single
            feature. Every column must be numeric (bool columns count as 0/1).
        label_df: The labels: a ``PrivateSeries`` (labels of shape ``(batch,)``) or a
            ``PrivateDataFrame`` (labels of shape ``(batch, n_label_columns)``), from the same
            private dataset as ``feature_df`` and row-aligned with it, e.g.
            ``pdf[["x1", "x2"]]`` and ``pdf["y"]``, or parts of one ``train_test_split`` call.
        batch_size: The expected batch size, an integer in ``[1, n]``. Each row is sampled at
            every step with probability ``batch_size / n``, so actual batch sizes vary.
        seed: None draws sampling randomness from OS entropy (use this for real training).
            An integer makes the loader reproducible: the same seed gives the identical
            sequence of batches for the same sequence of calls.
        feature_shape: Optional per-example shape of the features, e.g. ``(12, 6)`` to feed 72
            flattened columns to a 1-D convnet; its product must equal the number of feature
            columns. Columns are reshaped in row-major (C) order. Default: the features'
            ``example_shape`` when they come from ``private_arrays``, else ``(n_features,)``.
        dropna: If False (default), missing or infinite values in any feature or label column
            raise ``ValueError``. If True, rows with such values are dropped and ``n`` is the
            number of remaining rows. Note that ``n`` then depends on the data's missingness
            and is public (``sample_size``, the sampling rate and the step counts reveal it);
            impute or drop rows in a data-independent way instead if that matters.

    Feature columns with public metadata bounds ``(lower, upper)`` (or numeric categories) are
    clamped to those bounds before training, so the declared bounds hold for every example.

    Attributes:
        sample_size: ``n``, the number of rows sampled from.
        batch_size: The expected batch size.
        sampling_rate: ``q = batch_size / n``.
        steps_per_epoch: ``ceil(n / batch_size)``.
        budget: The privacy-budget ledger of the dataset the data came from.
        feature_columns: The feature column names.
        label_columns: The label column names.
        input_shape: The per-example feature shape (``(n_features,)`` or ``feature_shape``).

    Raises:
        TypeError: ``feature_df``/``label_df`` is not a private object, or an argument has
            the wrong type.
        ValueError: The labels do not belong to the features' dataset or are not row-aligned,
            a column is not numeric or has missing/infinite values, ``batch_size`` is not in
            ``[1, n]``, or ``feature_shape`` does not fit the feature columns.

    Example:
        >>> X, y = pdf[["feature1", "feature2"]], pdf["target"]
        >>> loader = PrivateDataLoader(X, y, batch_size=256)
        >>> loader.dp_event(epochs=20, noise_multiplier=1.1)  # what training will charge
    """

    __slots__ = (
        "_x",
        "_y",
        "_rng",
        "_n",
        "_batch_size",
        "_budget",
        "_feature_columns",
        "_label_columns",
        "_input_shape",
        "_label_shape",
        "_feature_bounds",
        "_label_bounds",
    )

    def __init__(
        self,
        feature_df: PrivateDataFrame | PrivateSeries,
        label_df: PrivateSeries | PrivateDataFrame,
        batch_size: int,
        *,
        seed: int | None = None,
        feature_shape: Sequence[int] | None = None,
        dropna: bool = False,
    ):
        for arg, obj in (("feature_df", feature_df), ("label_df", label_df)):
            if not isinstance(obj, (PrivateDataFrame, PrivateSeries)):
                raise TypeError(
                    f"{arg} must be a PrivateDataFrame or PrivateSeries, got {type(obj).__name__}; wrap raw data "
                    "once with PrivateDataFrame(df, budget=...) and select features and labels from it."
                )
        if not isinstance(dropna, bool):
            raise TypeError(f"dropna must be True or False, got {dropna!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"seed must be None or an integer >= 0, got {seed!r}.")
        self._check_aligned(feature_df, label_df)

        features, labels = _as_frame(feature_df), _as_frame(label_df)
        if features.shape[1] == 0:
            raise ValueError("feature_df has no columns; select at least one feature column.")
        if labels.shape[1] == 0:
            raise ValueError("label_df has no columns; select at least one label column.")
        _check_numeric("feature_df", features)
        _check_numeric("label_df", labels)
        if feature_shape is None and isinstance(feature_df, PrivateDataFrame):
            feature_shape = feature_df.example_shape  # private arrays remember their per-example shape
        input_shape = _validate_feature_shape(feature_shape, features.shape[1])

        x, y = _float64(features), _float64(labels)
        feature_bounds = _column_bounds(feature_df, features.columns)
        label_bounds = _column_bounds(label_df, labels.columns)
        _clamp(x, feature_bounds)
        bad_x, bad_y = ~np.isfinite(x), ~np.isfinite(y)
        if dropna:
            keep = ~(bad_x.any(axis=1) | bad_y.any(axis=1))
            x, y = x[keep], y[keep]
        else:
            bad = [c for c, b in zip(features.columns, bad_x.any(axis=0), strict=True) if b]
            bad += [c for c, b in zip(labels.columns, bad_y.any(axis=0), strict=True) if b]
            if bad:
                raise ValueError(
                    f"column(s) {bad} contain missing (NaN) or infinite values; impute or clean them first, "
                    "or pass dropna=True to drop those rows (which makes the sample size depend on the data)."
                )
        n = x.shape[0]
        if n == 0:
            raise ValueError("no rows left after dropna=True: every row has a missing or infinite value.")
        batch_size = _checks.positive_int("batch_size", batch_size)
        _checks.batch_within_sample(batch_size, n)

        with np.errstate(over="ignore"):  # overflow to inf is reported below, naming the columns
            x32 = np.ascontiguousarray(x, dtype=np.float32)
            y32 = np.ascontiguousarray(y, dtype=np.float32)
        del x, y
        overflow = [c for c, b in zip(features.columns, ~np.isfinite(x32).all(axis=0), strict=True) if b]
        overflow += [c for c, b in zip(labels.columns, ~np.isfinite(y32).all(axis=0), strict=True) if b]
        if overflow:
            raise ValueError(f"column(s) {overflow} have values beyond float32 range; rescale them first.")

        label_shape = (labels.shape[1],) if labels.shape[1] > 1 else ()
        self._x = x32.reshape((n, *input_shape))
        self._y = y32.reshape((n, *label_shape))
        self._x.flags.writeable = False
        self._y.flags.writeable = False
        self._rng = np.random.default_rng(seed)
        self._n = n
        self._batch_size = batch_size
        self._budget = feature_df.budget
        self._feature_columns = list(features.columns)
        self._label_columns = list(labels.columns)
        self._input_shape = input_shape
        self._label_shape = label_shape
        self._feature_bounds = feature_bounds
        self._label_bounds = label_bounds

    @classmethod
    def from_arrays(
        cls,
        x,
        y,
        batch_size: int,
        *,
        feature_bounds,
        label_bounds=None,
        label_categories=None,
        epsilon: float | None = None,
        delta: float | None = None,
        budget=None,
        seed: int | None = None,
        dropna: bool = False,
    ) -> PrivateDataLoader:
        """A loader straight from example arrays and labels, like ``tf.data.Dataset.from_tensor_slices((x, y))``.

        ``private_arrays(x, y, ...)`` (same arguments) and then the loader; its input shape is
        ``x.shape[1:]``. To keep a test split for DP evaluation, call ``private_arrays`` and
        ``train_test_split`` instead.

        Example:
            >>> loader = PrivateDataLoader.from_arrays(x, y, 32, feature_bounds=(0, 1),
            ...                                        label_categories=[0, 1], epsilon=3, delta=1e-5)
        """
        features, labels = private_arrays(
            x,
            y,
            feature_bounds=feature_bounds,
            label_bounds=label_bounds,
            label_categories=label_categories,
            epsilon=epsilon,
            delta=delta,
            budget=budget,
        )
        return cls(features, labels, batch_size, seed=seed, dropna=dropna)

    _check_aligned = staticmethod(check_aligned)

    # -- public, data-independent facts ---------------------------------------------------
    @property
    def sample_size(self) -> int:
        """``n``, the number of rows sampled from."""
        return self._n

    @property
    def batch_size(self) -> int:
        """The expected batch size."""
        return self._batch_size

    @property
    def sampling_rate(self) -> float:
        """``q = batch_size / sample_size``, each row's inclusion probability per step."""
        return self._batch_size / self._n

    @property
    def steps_per_epoch(self) -> int:
        """``ceil(sample_size / batch_size)``."""
        return math.ceil(self._n / self._batch_size)

    @property
    def budget(self) -> PrivacyBudget:
        """The privacy-budget ledger of the dataset the features and labels come from."""
        return self._budget

    @property
    def feature_columns(self) -> list:
        """The feature column names."""
        return list(self._feature_columns)

    @property
    def label_columns(self) -> list:
        """The label column names."""
        return list(self._label_columns)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The per-example feature shape, e.g. for ``keras.Input(shape=loader.input_shape)``."""
        return self._input_shape

    def total_steps(self, epochs: float) -> int:
        """Steps of a run of ``epochs`` epochs: ``accounting.steps_for(n, batch_size, epochs)``."""
        epochs = _checks.positive_float("epochs", epochs)
        return accounting.steps_for(self._n, self._batch_size, epochs)

    def steps_in_epoch(self, epoch: int) -> int:
        """Steps of epoch ``epoch`` (0-based): ``ceil((epoch + 1) n / b) - ceil(epoch n / b)``.

        Epochs ``0 .. E - 1`` together take exactly ``total_steps(E)`` steps.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}.")
        n, b = self._n, self._batch_size
        return accounting.steps_for(n, b, epoch + 1) - (accounting.steps_for(n, b, epoch) if epoch else 0)

    def dp_event(self, epochs: float, noise_multiplier: float) -> dp_accounting.DpEvent:
        """The ``DpEvent`` of DP-SGD on this loader for ``epochs`` epochs at ``noise_multiplier``."""
        noise_multiplier = _checks.positive_float("noise_multiplier", noise_multiplier)
        return accounting.dp_sgd_event(self.sampling_rate, noise_multiplier, self.total_steps(epochs))

    def __repr__(self) -> str:
        """Public facts only; with many columns, a few lines listing the first columns."""
        head = f"PrivateDataLoader(sample_size={self._n}, batch_size={self._batch_size}, "
        head += f"sampling_rate={self.sampling_rate:.6g}"
        line = (
            f"{head}, feature_columns={self._feature_columns!r}, label_columns={self._label_columns!r}, "
            f"input_shape={self._input_shape!r})"
        )
        if len(line) <= REPR_WIDTH:
            return line

        def listed(columns: list) -> str:
            shown = ", ".join(str(c)[:40] for c in columns[:REPR_COLUMNS])
            more = len(columns) - REPR_COLUMNS
            return f"{len(columns)}: {shown}" + (f", ... and {more} more" if more > 0 else "")

        return "\n".join(
            [
                f"{head}, input_shape={self._input_shape!r})",
                f"  feature columns ({listed(self._feature_columns)})",
                f"  label columns ({listed(self._label_columns)})",
                f"  steps per epoch: {self.steps_per_epoch}",
            ]
        )

    __str__ = __repr__

    # -- refused paths --------------------------------------------------------------------
    __iter__ = _refuse("iteration")
    __getitem__ = _refuse("indexing")
    __array__ = _refuse("np.asarray()")
    __len__ = _refuse(
        "len()",
        message="len() of a PrivateDataLoader is refused: it has no row sequence to measure (batches are Poisson "
        "sampled). Use loader.sample_size for the row count and loader.steps_per_epoch for the number of steps.",
    )
    __reduce__ = _refuse("pickling", "Private objects cannot be serialized; build a new loader where it is needed.")
    __reduce_ex__ = _refuse("pickling", "Private objects cannot be serialized; build a new loader where it is needed.")
    __getstate__ = _refuse("pickling", "Private objects cannot be serialized; build a new loader where it is needed.")
    __copy__ = _refuse("copy.copy()", "Build a new loader from the private frames instead.")
    __deepcopy__ = _refuse("copy.deepcopy()", "Build a new loader from the private frames instead.")

    # -- for op_tensorflow's own training code --------------------------------------------
    def _sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One Poisson-sampled batch ``(x, y)`` as float32 arrays, in O(batch) time and memory."""
        k = int(self._rng.binomial(self._n, self.sampling_rate))
        # k distinct rows, uniformly, in random order. numpy 1.26's Generator.choice uses Floyd's algorithm with a
        # hash set (O(k)) unless n > 10000 and k > n / 50, where a partial Fisher-Yates over range(n) costs
        # O(n) = O(50 k): O(batch) either way.
        rows = self._rng.choice(self._n, size=k, replace=False, shuffle=True)
        return self._x[rows], self._y[rows]

    def _epoch_batches(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Internal: yields the ``steps_in_epoch(epoch)`` batches of epoch ``epoch`` (0-based).

        Each batch is ``(x, y)``: float32 arrays of shapes ``(k, *input_shape)`` and ``(k,)`` (one
        label column) or ``(k, n_label_columns)``, with ``k`` ~ Binomial(n, q), possibly 0. Every
        batch draws fresh randomness from the loader's generator.
        """
        steps = self.steps_in_epoch(epoch)
        for _ in range(steps):
            yield self._sample()

    def _sampling_seed(self) -> np.ndarray:
        """Internal: a fresh ``[2]`` int64 seed for graph-side sampling, from the loader's generator."""
        return self._rng.integers(0, 2**62, size=2, dtype=np.int64)

    def _graph_sampler(self):
        """Internal: a graph-side Poisson sampler ``seed -> (x, y)`` (see ``loader_sampling.graph_sampler``)."""
        return graph_sampler(self._x, self._y, self.sampling_rate)

    def _dataset(self, epochs: float):
        """Internal: a ``tf.data.Dataset`` of the ``total_steps(epochs)`` batches of a whole run.

        Batches are sampled lazily (memory stays O(batch) beyond the data), in order across
        epochs, with fresh randomness each time the dataset is iterated. The batch dimension
        is ``None`` (Poisson batch sizes vary and can be 0); the cardinality is known, so
        ``model.fit(loader._dataset(E), epochs=1)`` runs exactly ``total_steps(E)`` steps.
        """
        import tensorflow as tf

        steps = self.total_steps(epochs)

        def generate():
            for _ in range(steps):
                yield self._sample()

        signature = (
            tf.TensorSpec(shape=(None, *self._input_shape), dtype=tf.float32),
            tf.TensorSpec(shape=(None, *self._label_shape), dtype=tf.float32),
        )
        dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
        return dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(2)
