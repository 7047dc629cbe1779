"""The columns behind a ``PrivateDataLoader``: alignment, numeric checks, public bounds, clamping, shapes.

Helpers of :mod:`op_tensorflow.loader` (also used by the model's inference on private data);
they read private frames for op_tensorflow's own trusted code and return nothing public.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd

from op_tensorflow.frame import PrivateDataFrame, PrivateSeries, _raw

__all__ = ["as_frame", "check_aligned", "check_numeric", "clamp", "column_bounds", "float64", "validate_feature_shape"]


def as_frame(obj: PrivateDataFrame | PrivateSeries) -> pd.DataFrame:
    data = _raw(obj)
    return data.to_frame() if isinstance(data, pd.Series) else data


def check_numeric(arg: str, frame: pd.DataFrame) -> None:
    for col, dtype in frame.dtypes.items():
        if pd.api.types.is_bool_dtype(dtype):
            continue
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_complex_dtype(dtype):
            raise ValueError(
                f"{arg} column {col!r} has dtype {dtype}, which is not numeric: encode it numerically first "
                "(e.g. one-hot or integer codes for categories; bool columns are used as 0/1)."
            )


def float64(frame: pd.DataFrame) -> np.ndarray:
    return frame.to_numpy(dtype=np.float64, na_value=np.nan)


def column_bounds(obj: PrivateDataFrame | PrivateSeries, columns) -> list[tuple[float, float] | None]:
    """The public ``(lower, upper)`` metadata bounds of each column (numeric categories give their range)."""
    bounds = []
    for col in columns:
        meta = obj._metadata.get(col)
        if isinstance(meta, tuple) and len(meta) == 2:
            bounds.append((float(meta[0]), float(meta[1])))
        elif isinstance(meta, (list, tuple)) and meta and all(isinstance(c, numbers.Real) for c in meta):
            bounds.append((float(min(meta)), float(max(meta))))
        else:
            bounds.append(None)
    return bounds


def clamp(x: np.ndarray, bounds: list[tuple[float, float] | None]) -> None:
    """Clamps feature columns in place to their declared public bounds (NaN stays NaN, for the checks below)."""
    for j, b in enumerate(bounds):
        if b is not None:
            np.clip(x[:, j], b[0], b[1], out=x[:, j])


def validate_feature_shape(feature_shape, n_features: int) -> tuple[int, ...]:
    if feature_shape is None:
        return (n_features,)
    if isinstance(feature_shape, (str, bytes)) or not isinstance(feature_shape, Sequence):
        raise TypeError(
            f"feature_shape must be a tuple of positive integers, got {feature_shape!r} "
            f"({type(feature_shape).__name__})."
        )
    dims = []
    for dim in feature_shape:
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
            raise ValueError(f"feature_shape must be a tuple of positive integers, got {tuple(feature_shape)!r}.")
        dims.append(int(dim))
    if not dims:
        raise ValueError("feature_shape must have at least one dimension, got ().")
    if math.prod(dims) != n_features:
        raise ValueError(
            f"feature_shape {tuple(dims)!r} holds {math.prod(dims)} values per example, but feature_df has "
            f"{n_features} feature column(s); the product of feature_shape must equal the number of columns."
        )
    return tuple(dims)


def check_aligned(feature_df, label_df) -> None:
    """Raises ValueError unless the labels come from the features' dataset, row-aligned with them."""
    if label_df._source is not feature_df._source:
        raise ValueError(
            "label_df comes from a different private dataset than feature_df; select features and labels "
            "from the same PrivateDataFrame (e.g. pdf[['x1', 'x2']] and pdf['y'])."
        )
    fx, fy = _raw(feature_df).index, _raw(label_df).index
    if not fx.equals(fy):
        raise ValueError(
            "label_df is not row-aligned with feature_df (different rows or row order); select both from "
            "the same frame, or split them together in one train_test_split(X, y) call."
        )
    if not fx.is_unique and len(fx) != feature_df._source.n_rows:
        # Derived parts are subsets of the original rows in order; with repeated row labels two different
        # subsets can carry equal labels, so alignment cannot be verified.
        raise ValueError(
            "label_df's row alignment with feature_df cannot be verified because the dataset's row index has "
            "repeated labels; reset the index (df.reset_index(drop=True)) before wrapping it in PrivateDataFrame."
        )
