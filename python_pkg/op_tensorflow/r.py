"""Exchange with R through rpy2: R data.frames in as private data, public results out.

``from_r`` and ``read_rds`` turn an R ``data.frame`` (an rpy2 object, or an ``.rds`` file)
into a :class:`~op_tensorflow.PrivateDataFrame`; the raw pandas frame is never returned.
``to_r`` turns *public* results (a Keras ``History``, a budget report or ledger entries,
predictions on public data) into R ``data.frame``\\ s. Private objects are refused.

Missing values: R's ``NA`` (of every type) and ``NaN`` both become pandas missing values.

=====================  ==========================================================
R column               pandas column
=====================  ==========================================================
double                 float64 (``NA`` and ``NaN`` -> NaN); ``Date`` -> datetime64
integer                int64, or float64 with NaN if it has ``NA``
logical                bool, or float64 (1.0, 0.0, NaN) if it has ``NA``
character              object (str, ``None`` for ``NA``)
factor                 categorical with the factor's levels (ordered if ordered),
                       NaN for ``NA``; the levels become the column's metadata
                       categories when ``metadata`` is not given
=====================  ==========================================================

R's row names are dropped (a private frame's row labels are never visible anyway).

rpy2 is an optional dependency (``pip install op-tensorflow[r]``) and is imported only
when a function of this module is called.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping

import numpy as np
import pandas as pd

from op_tensorflow import _checks
from op_tensorflow.budget import LedgerEntry, PrivacyBudget
from op_tensorflow.errors import PrivacyError
from op_tensorflow.frame import PrivateDataFrame, _PrivateBase

__all__ = ["from_r", "read_rds", "to_r"]

_INSTALL_HINT = "install the R extra with `pip install op-tensorflow[r]` (it needs R itself installed, with R_HOME set)"
_ENTRY_COLUMNS = ("id", "status", "description", "timestamp", "committed_at", "event", "reserved_event")


def _rpy2():
    """Imports rpy2 on first use; returns ``(robjects, pandas2ri, localconverter)``."""
    try:
        import rpy2.robjects as ro
        from rpy2.robjects import pandas2ri
        from rpy2.robjects.conversion import localconverter
    except ImportError as err:
        raise ImportError(f"op_tensorflow.r needs rpy2, which is not installed: {_INSTALL_HINT}.") from err
    except (OSError, RuntimeError, ValueError) as err:  # rpy2 is there but cannot find or start R
        raise ImportError(f"op_tensorflow.r could not start R through rpy2 ({err}); {_INSTALL_HINT}.") from err
    return ro, pandas2ri, localconverter


def _r_classes(ro, obj) -> list[str]:
    return list(ro.baseenv["class"](obj))


# --- R -> pandas ------------------------------------------------------------------------


def _as_r_data_frame(ro, obj, what: str):
    if isinstance(obj, pd.DataFrame):
        raise TypeError(
            f"{what} is already a pandas DataFrame; wrap it with PrivateDataFrame(df, metadata=..., budget=...)."
        )
    if isinstance(obj, ro.vectors.DataFrame):
        return obj
    from rpy2.rinterface_lib.sexp import Sexp

    if isinstance(obj, Sexp):
        classes = _r_classes(ro, obj)
        if "data.frame" in classes:
            return ro.vectors.DataFrame(obj)
        raise TypeError(f"{what} must be an R data.frame, got an R object of class {classes}.")
    raise TypeError(f"{what} must be an R data.frame (rpy2.robjects.vectors.DataFrame), got {type(obj).__name__}.")


def _column_from_r(ro, r_col, converted: pd.Series) -> tuple[object, list | None]:
    """One column as pandas values, with R's NA mapped to missing; and the factor levels, if a factor."""
    classes = _r_classes(ro, r_col)
    rtype = ro.baseenv["typeof"](r_col)[0]
    na = np.asarray(ro.baseenv["is.na"](r_col), dtype=bool)
    if "factor" in classes:
        levels = [str(level) for level in ro.baseenv["levels"](r_col)]
        codes = np.asarray(r_col, dtype=np.int64) - 1  # R codes are 1-based; NA (INT_MIN) is masked below
        codes[na] = -1
        return pd.Categorical.from_codes(codes, categories=levels, ordered="ordered" in classes), levels
    if rtype == "logical":
        raw = np.asarray(r_col, dtype=np.int64)
        if na.any():
            return np.where(na, np.nan, raw.astype(np.float64)), None
        return raw.astype(bool), None
    if rtype == "integer":
        raw = np.asarray(r_col, dtype=np.int64)
        if na.any():
            return np.where(na, np.nan, raw.astype(np.float64)), None
        return raw, None
    if rtype == "double" and "Date" in classes:
        days = np.where(na, np.nan, np.asarray(r_col, dtype=np.float64))
        return pd.to_datetime(days, unit="D"), None
    if rtype == "double" and not ({"POSIXct", "difftime"} & set(classes)):
        return np.where(na, np.nan, np.asarray(r_col, dtype=np.float64)), None
    if rtype == "character":
        values = np.empty(len(na), dtype=object)
        for i, (value, missing) in enumerate(zip(converted, na, strict=True)):
            values[i] = None if missing else str(value)
        return values, None
    return converted.to_numpy(), None  # other types (POSIXct, complex, ...): as rpy2's converter gives them


def _pandas_from_r(obj, what: str) -> tuple[pd.DataFrame, dict[str, list]]:
    """An R data.frame as a pandas DataFrame with a RangeIndex, and the levels of its factor columns."""
    ro, pandas2ri, localconverter = _rpy2()
    r_frame = _as_r_data_frame(ro, obj, what)
    with localconverter(ro.default_converter + pandas2ri.converter):
        converted = ro.conversion.get_conversion().rpy2py(r_frame)
    names = [str(n) for n in ro.baseenv["names"](r_frame)]
    if len(set(names)) != len(names):
        duplicated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{what} has duplicate column names: {duplicated}.")
    if len(names) != converted.shape[1]:
        raise ValueError(f"{what} has {len(names)} columns but rpy2 converted {converted.shape[1]} (matrix columns?).")
    columns, levels = {}, {}
    for i, name in enumerate(names):
        columns[name], factor_levels = _column_from_r(ro, r_frame[i], converted.iloc[:, i])
        if factor_levels is not None:
            levels[name] = factor_levels
    return pd.DataFrame(columns, index=pd.RangeIndex(r_frame.nrow)), levels


def _private(frame: pd.DataFrame, levels: dict[str, list], metadata: Mapping | None, budget) -> PrivateDataFrame:
    """The private frame; without ``metadata``, factor levels become the factors' categories."""
    if metadata is None and levels:
        metadata = levels
    return PrivateDataFrame(frame, metadata=metadata, budget=budget)


def from_r(obj, *, metadata: Mapping | None = None, budget=None) -> PrivateDataFrame:
    """Wraps an R data.frame (from rpy2) as a private frame.

    Args:
        obj: An R ``data.frame``: an ``rpy2.robjects.vectors.DataFrame`` (or another rpy2
            object whose R class includes ``"data.frame"``, e.g. a tibble).
        metadata: Public column facts, as for :class:`PrivateDataFrame`. If None, every
            factor column gets its levels as categories (and other columns get none); if
            given, it is used as is (add factor levels yourself if they are public).
        budget: A ``PrivacyBudget``, an ``(epsilon, delta)`` pair, or None, as for
            :class:`PrivateDataFrame`.

    Returns:
        A ``PrivateDataFrame``. Missing values follow the table in this module's docstring.

    Raises:
        ImportError: rpy2 (or R) is not available.
        TypeError: ``obj`` is not an R data.frame.
        ValueError: The data.frame is empty, has duplicate column names, or ``metadata`` is
            invalid.
    """
    return _private(*_pandas_from_r(obj, "obj"), metadata, budget)


def read_rds(path: str | os.PathLike, *, metadata: Mapping | None = None, budget=None) -> PrivateDataFrame:
    """Reads an ``.rds`` file holding an R data.frame straight into a private frame.

    Args:
        path: The ``.rds`` file (written by R's ``saveRDS``).
        metadata: As for :func:`from_r`.
        budget: As for :func:`from_r`.

    Returns:
        A ``PrivateDataFrame``; the raw data is never returned.

    Raises:
        ImportError: rpy2 (or R) is not available.
        FileNotFoundError: There is no file at ``path``.
        ValueError: ``path`` is not a readable ``.rds`` file.
        TypeError: The file holds something other than a data.frame.
    """
    path = _checks.file_path("path", path, ".rds file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path {path!r}: no such .rds file.")
    ro, _, _ = _rpy2()
    from rpy2.rinterface_lib.embedded import RRuntimeError

    try:
        obj = ro.baseenv["readRDS"](path)
    except RRuntimeError as err:
        raise ValueError(f"path {path!r} is not a readable .rds file: {str(err).strip()}") from None
    classes = _r_classes(ro, obj)
    if "data.frame" not in classes:
        raise TypeError(
            f"path {path!r} holds an R object of class {classes}, not a data.frame; save a data.frame with "
            "saveRDS(as.data.frame(x), path)."
        )
    return _private(*_pandas_from_r(obj, f"the data.frame in {path!r}"), metadata, budget)


# --- public results -> R ------------------------------------------------------------------


def _is_history(value) -> bool:
    """A Keras ``History`` (duck-typed, so that TensorFlow is not imported here)."""
    return (
        any(cls.__name__ == "History" for cls in type(value).__mro__)
        and isinstance(getattr(value, "history", None), dict)
        and isinstance(getattr(value, "epoch", None), list)
    )


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, str | bool | numbers.Number | np.generic)


def _history_frame(history) -> pd.DataFrame:
    metrics = {str(k): [_plain_float(v) for v in values] for k, values in history.history.items()}
    n = max([len(history.epoch), *(len(v) for v in metrics.values())], default=0)
    epochs = [int(e) + 1 for e in history.epoch] if len(history.epoch) == n else list(range(1, n + 1))
    columns = {"epoch": np.asarray(epochs, dtype=np.int64)}
    for name, values in metrics.items():
        columns[name] = np.asarray(values + [math.nan] * (n - len(values)), dtype=np.float64)
    return pd.DataFrame(columns)


def _plain_float(value) -> float:
    if value is None:
        return math.nan
    return float(np.asarray(value).reshape(-1)[0]) if np.ndim(value) else float(value)


def _entries_frame(entries) -> pd.DataFrame:
    rows = [e.to_dict() for e in entries]
    columns = {}
    for key in _ENTRY_COLUMNS:
        values = [row[key] for row in rows]
        if key in ("event", "reserved_event"):
            values = [None if v is None else json.dumps(v, sort_keys=True) for v in values]
        columns[key] = pd.Series(values, dtype=object)
    return pd.DataFrame(columns)


def _array_frame(array: np.ndarray) -> pd.DataFrame:
    if array.ndim == 0:
        raise ValueError("value: to_r needs an array with at least one dimension, got a 0-d array.")
    matrix = array.reshape((array.shape[0], -1)) if array.ndim != 1 else array.reshape((-1, 1))
    return pd.DataFrame(matrix, columns=[f"V{i + 1}" for i in range(matrix.shape[1])])


def _r_scalar(key, value):
    """``value``, as a double if it is an integer beyond 64 bits (R has no larger integers)."""
    if isinstance(value, numbers.Integral) and not -(2**63) <= value < 2**63:
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"value[{key!r}] = {value} is beyond the range of R's numbers.") from None
    return value


def _public_frame(value) -> pd.DataFrame:
    if isinstance(value, PrivacyBudget):
        return pd.DataFrame([value.report()])
    if isinstance(value, LedgerEntry):
        return _entries_frame([value])
    if isinstance(value, list | tuple) and all(isinstance(e, LedgerEntry) for e in value):
        return _entries_frame(value)
    if _is_history(value):
        return _history_frame(value)
    if isinstance(value, Mapping) and value and all(_is_scalar(v) for v in value.values()):
        return pd.DataFrame([{str(k): _r_scalar(k, v) for k, v in value.items()}])
    if isinstance(value, np.ndarray):
        return _array_frame(value)
    if isinstance(value, pd.Series):
        return value.to_frame(name=str(value.name) if value.name is not None else "V1")
    if isinstance(value, pd.DataFrame):
        return value
    raise TypeError(
        f"value: to_r converts a Keras History, a PrivacyBudget, ledger entries (budget.entries), a dict of scalars "
        f"(e.g. budget.report()), a numpy array, or a pandas Series/DataFrame; got {type(value).__name__}."
    )


def _string_column(ro, series: pd.Series):
    """An R character vector if ``series`` holds only strings and missing values, else None."""
    if series.dtype != object:
        return None
    missing = series.isna().to_numpy()
    if not all(m or isinstance(v, str) for v, m in zip(series, missing, strict=True)):
        return None
    return ro.StrVector([ro.NA_Character if m else v for v, m in zip(series, missing, strict=True)])


def _fits_r(series: pd.Series) -> pd.Series:
    """``series``, as float64 if it holds integers beyond R's integer range (R has no 64-bit integers)."""
    if pd.api.types.is_integer_dtype(series.dtype) and len(series):
        values = series.dropna()
        if len(values) and (values.min() <= -(2**31) or values.max() > 2**31 - 1):
            return series.astype("float64")
    return series


def _pandas_to_r(frame: pd.DataFrame):
    ro, pandas2ri, localconverter = _rpy2()
    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        raise ValueError(f"column names must be unique as strings for R, got {names}.")
    vectors = []
    with localconverter(ro.default_converter + pandas2ri.converter):
        conversion = ro.conversion.get_conversion()
        for i in range(frame.shape[1]):
            series = frame.iloc[:, i].reset_index(drop=True)
            vector = _string_column(ro, series)
            if vector is None:
                vector = conversion.py2rpy(_fits_r(series))
            vectors.append(vector)
    index = frame.index
    default_rows = isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1
    row_names = ro.NULL if default_rows else ro.StrVector([str(r) for r in index])
    build = ro.r(
        "function(columns, names, n, row_names) {"
        "  columns <- lapply(columns, function(v) { names(v) <- NULL; v });"
        "  df <- structure(columns, names = names, row.names = .set_row_names(as.integer(n)), class = 'data.frame');"
        "  if (!is.null(row_names)) row.names(df) <- row_names;"
        "  df }"
    )
    return build(ro.baseenv["list"](*vectors), ro.StrVector(names), len(frame), row_names)


def to_r(value):
    """Converts a *public* result to an R data.frame.

    Args:
        value: One of

            * a Keras ``History`` (``model.fit``'s result): a data.frame with an integer
              ``epoch`` column (1-based, as in R) and one numeric column per entry of
              ``history.history`` (e.g. ``epsilon``);
            * a ``PrivacyBudget``: a one-row data.frame of ``budget.report()``;
            * ``budget.entries`` (a list of ``LedgerEntry``) or one entry: a data.frame with
              ``id``, ``status``, ``description``, ``timestamp``, ``committed_at`` and the
              events as JSON text (``event``, ``reserved_event``); missing values are ``NA``;
            * a dict of scalars (e.g. ``budget.report()``): a one-row data.frame;
            * a numpy array (e.g. predictions on public data): rows by the first axis, other
              axes flattened into columns ``V1``, ``V2``, ...;
            * a pandas Series or DataFrame.

    Returns:
        An ``rpy2.robjects.vectors.DataFrame``.

    Raises:
        PrivacyError: ``value`` is a ``PrivateDataFrame``, ``PrivateSeries`` or
            ``PrivateDataLoader``: private data never leaves as a plain data.frame.
        TypeError: ``value`` is of another kind.
        ImportError: rpy2 (or R) is not available.
    """
    from op_tensorflow.loader import PrivateDataLoader

    if isinstance(value, _PrivateBase | PrivateDataLoader):
        raise PrivacyError(
            f"to_r would release the raw private rows of this {type(value).__name__} to R. Use DP aggregates "
            "(count, sum, mean, describe with eps=...) and convert their results, or train a model and convert "
            "its History or its predictions on public data."
        )
    return _pandas_to_r(_public_frame(value))
