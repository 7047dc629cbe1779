"""Private data from arrays: ``private_arrays(x, y, ...)``.

Sequences (``n x timesteps x features``), images (``n x height x width x channels``) or plain
matrices (``n x features``) with their labels become a private ``(features, labels)`` pair on
one ledger, as ``PrivateDataFrame(df)`` does for a table. The features are a
:class:`~op_tensorflow.PrivateDataFrame` whose columns are the examples' values flattened in
row-major (C) order (column ``"x[t,f]"`` holds ``x[:, t, f]``), and which remembers the
per-example shape (:attr:`PrivateDataFrame.example_shape`), so ``PrivateDataLoader`` and
``train_test_split`` need no ``feature_shape``.

The same guarantees as for frames hold: the bounds are public metadata, given by the data
owner and never computed from the data; values outside them are clamped where the data is
used (the loader clamps features before training, DP aggregates clamp to the bounds), as for
frames. Nothing of the arrays is returned or shown except their shape, dtype and the bounds.
The arrays are copied once; the caller's arrays are not referenced.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd

from op_tensorflow.bounds import Bounds, validate_bounds
from op_tensorflow.budget import PrivacyBudget, as_budget
from op_tensorflow.frame import PrivateDataFrame, PrivateSeries, _PrivateBase, _raw

__all__ = ["private_arrays"]

_NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats


def _numeric_array(name: str, values) -> np.ndarray:
    if isinstance(values, _PrivateBase):
        raise TypeError(
            f"{name} is already private data; pass it to PrivateDataLoader(features, labels, batch_size=...) "
            "directly instead of private_arrays()."
        )
    if values is None or isinstance(values, (str, bytes, numbers.Number)):
        raise TypeError(f"{name} must be an array (numpy, R array, tensor, nested lists), got {values!r}.")
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a rectangular numeric array: {err}") from None
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(
            f"{name} must hold numbers (or booleans), got dtype {array.dtype}; encode categories as integers "
            "or one-hot vectors first."
        )
    if array.ndim == 0 or array.shape[0] == 0:
        raise ValueError(f"{name} must have at least one example along its first axis, got shape {array.shape}.")
    return array


def _feature_bounds(feature_bounds, example_shape: tuple[int, ...]) -> list[Bounds]:
    """One ``(lower, upper)`` per feature (the last axis of an example): given once, or per feature."""
    n_features = example_shape[-1]
    hint = (
        "feature_bounds must be (lower, upper) for every value, or one (lower, upper) per feature (the last "
        f"axis, {n_features} here), e.g. [(0, 1)] * {n_features}; bounds are public and never guessed from the data"
    )
    if feature_bounds is None:
        raise ValueError(f"{hint}: none were given.")
    if isinstance(feature_bounds, (str, bytes)):
        raise TypeError(f"{hint}; got {feature_bounds!r}.")
    try:
        table = np.asarray(feature_bounds, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{hint}; got {feature_bounds!r}.") from None
    if table.shape == (2,):
        return [validate_bounds("feature_bounds", tuple(table))] * n_features
    if table.shape == (n_features, 2):
        return [validate_bounds(f"feature_bounds[{j}]", tuple(row)) for j, row in enumerate(table)]
    raise ValueError(f"{hint}; got an array of shape {table.shape}.")


def _label_metadata(label_bounds, label_categories):
    if (label_bounds is None) == (label_categories is None):
        raise ValueError(
            "give exactly one of label_bounds=(lower, upper) (e.g. for regression targets) and "
            "label_categories=[0, 1, ...] (the class codes); they are public and never guessed from the data."
        )
    if label_bounds is not None:
        return validate_bounds("label_bounds", label_bounds)
    if isinstance(label_categories, (str, bytes)) or not hasattr(label_categories, "__iter__"):
        raise TypeError(f"label_categories must be a list of numeric class codes, got {label_categories!r}.")
    categories = list(np.asarray(list(label_categories)).tolist())
    if not categories or not all(isinstance(c, numbers.Real) and math.isfinite(c) for c in categories):
        raise ValueError(
            f"label_categories must be a non-empty list of finite numeric class codes (labels are numeric for "
            f"training), got {list(label_categories)!r}."
        )
    if len(set(categories)) != len(categories):
        raise ValueError(f"label_categories has repeated values: {categories!r}.")
    return categories


def _ledger(budget, epsilon, delta, n: int) -> PrivacyBudget:
    if budget is not None:
        if epsilon is not None or delta is not None:
            raise ValueError("give either budget= or epsilon=/delta=, not both.")
        return as_budget(budget, default_delta=1.0 / (10 * n))
    if epsilon is not None and delta is None:
        raise ValueError(f"delta must be given with epsilon=, e.g. delta={1 / (10 * n):.2g} (well below 1/n).")
    if delta is not None:
        return PrivacyBudget(math.inf if epsilon is None else epsilon, delta)
    return as_budget(None, default_delta=1.0 / (10 * n))


def _column_names(prefix: str, shape: tuple[int, ...]) -> list[str]:
    return [f"{prefix}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]


def private_arrays(
    x,
    y,
    *,
    feature_bounds,
    label_bounds=None,
    label_categories=None,
    epsilon: float | None = None,
    delta: float | None = None,
    budget=None,
) -> tuple[PrivateDataFrame, PrivateSeries | PrivateDataFrame]:
    """Wraps example arrays and their labels as private data on one ledger.

    Args:
        x: The examples, an array of shape ``(n, *example_shape)``: e.g. ``(n, features)``,
            sequences ``(n, timesteps, features)`` or images ``(n, height, width, channels)``.
            numpy arrays, R arrays (through reticulate, index order kept: R's ``x[i, j, k]``
            is example ``i``, timestep ``j``, feature ``k``), tensors and nested lists work.
            Numbers or booleans only.
        y: The labels, ``n`` of them: shape ``(n,)`` (one label per example) or ``(n, k)``
            (e.g. one-hot or several targets).
        feature_bounds: Public bounds of the feature values: one ``(lower, upper)`` pair for
            every value, or one pair per feature, i.e. per entry of the last axis (a feature
            of a sequence, a channel of an image), as a list or an array of shape
            ``(features, 2)``. Required: bounds are never guessed from the data.
        label_bounds: Public ``(lower, upper)`` of the labels (e.g. for regression targets).
        label_categories: Public class codes of the labels, e.g. ``[0, 1]``. Give exactly one
            of ``label_bounds`` and ``label_categories``.
        epsilon: The dataset's privacy budget (with ``delta``); omitted, the ledger is
            unlimited but still records every charge.
        delta: The delta at which the ledger accounts everything; default ``1 / (10 n)`` for
            an unlimited ledger, required with ``epsilon``.
        budget: Instead of ``epsilon``/``delta``: a ``PrivacyBudget`` (e.g. with a ledger
            file) or an ``(epsilon, delta)`` pair.

    Returns:
        ``(features, labels)``: a ``PrivateDataFrame`` of the flattened examples (columns
        ``"x[i,j,...]"`` in row-major order, each with its feature's bounds as metadata,
        ``example_shape`` the per-example shape) and a ``PrivateSeries`` ``"y"`` (or a
        ``PrivateDataFrame`` of columns ``"y[j]"`` for 2-D labels), sharing one ledger and
        row-aligned. Values outside the bounds are kept but clamped wherever they are used
        (``PrivateDataLoader`` clamps features; DP aggregates clamp to the bounds).

    Raises:
        TypeError: ``x`` or ``y`` is not an array, or is already private.
        ValueError: Non-numeric values, ``x`` and ``y`` with different numbers of examples,
            missing or malformed bounds, or a bad budget; the message names the argument.

    Example:
        >>> x = np.random.rand(1000, 12, 6)  # 1000 sequences of 12 steps of 6 features in [0, 1]
        >>> y = np.random.rand(1000)
        >>> features, labels = private_arrays(x, y, feature_bounds=(0, 1), label_bounds=(0, 1),
        ...                                   epsilon=3.0, delta=1e-5)
        >>> features.example_shape
        (12, 6)
        >>> x_train, x_test, y_train, y_test = train_test_split(features, labels, test_size=0.2)
        >>> loader = PrivateDataLoader(x_train, y_train, batch_size=32)  # input_shape (12, 6)
    """
    x = _numeric_array("x", x)
    y = _numeric_array("y", y)
    if x.ndim < 2:
        raise ValueError(
            f"x must have shape (n, ...) with one example per entry of the first axis, got shape {x.shape}; "
            "for one feature per example use x.reshape(-1, 1)."
        )
    if y.ndim > 2:
        raise ValueError(f"y must have shape (n,) or (n, k), got shape {y.shape}.")
    n, example_shape = x.shape[0], tuple(int(d) for d in x.shape[1:])
    if y.shape[0] != n:
        raise ValueError(f"x has {n} examples but y has {y.shape[0]} labels; give one label (row) per example.")
    if 0 in example_shape:
        raise ValueError(f"x's examples must not be empty, got shape {x.shape}.")
    per_feature = _feature_bounds(feature_bounds, example_shape)
    label_meta = _label_metadata(label_bounds, label_categories)
    ledger = _ledger(budget, epsilon, delta, n)

    columns = _column_names("x", example_shape)
    flat = pd.DataFrame(x.reshape(n, -1), columns=columns)  # row-major: column "x[t,f]" is x[:, t, f]
    metadata = {c: per_feature[i % example_shape[-1]] for i, c in enumerate(columns)}
    wrapped = PrivateDataFrame(flat, metadata=metadata, budget=ledger)  # copies the data
    source = wrapped._source
    features = PrivateDataFrame(
        metadata=metadata, _source=source, _data=_raw(wrapped), _layout=(example_shape, tuple(columns))
    )
    if y.ndim == 1:
        labels = PrivateSeries(pd.Series(y.copy(), name="y"), source, {"y": label_meta})
    else:
        names = _column_names("y", y.shape[1:])
        frame = pd.DataFrame(y.copy(), columns=names)
        labels = PrivateDataFrame(metadata={c: label_meta for c in names}, _source=source, _data=frame)
    return features, labels
