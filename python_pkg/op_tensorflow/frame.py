"""Private data: ``PrivateDataFrame`` and ``PrivateSeries``.

The data owner wraps a pandas DataFrame once; from then on its user sees the schema
(columns, dtypes, metadata bounds), the row count and the budget, and gets numbers out
only through differentially private aggregates charged to the dataset's ledger, or by
training a model on it. Selections, arithmetic and splits give private results that share
the parent's ledger.

Every public path that would hand out raw values (``values``, ``to_numpy``,
``np.asarray``, iteration, ``iloc``/``loc``/``head``, ``to_pandas``, ``to_csv``, pickling,
deep copies) raises ``PrivacyError``. This guards against *accidental* release: Python
cannot stop a determined user of the same process from reading private attributes.

The pieces live in their own modules, re-exported here: :mod:`op_tensorflow.private_base`
(what both classes share, and the refused paths), :mod:`op_tensorflow.series`
(:class:`PrivateSeries`), :mod:`op_tensorflow.bounds` (bounds arithmetic) and
:mod:`op_tensorflow.mechanisms` (the Laplace and Gaussian mechanisms).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from op_tensorflow import _checks
from op_tensorflow.bounds import ARITH, Bounds, is_scalar, scalar_bounds, validate_bounds
from op_tensorflow.budget import as_budget
from op_tensorflow.errors import PrivacyError
from op_tensorflow.mechanisms import Mechanism, check_eps, fresh_rng
from op_tensorflow.private_base import (
    AGGREGATE_HINT,
    REPR_COLUMNS,
    REPR_WIDTH,
    _PrivateBase,
    _raw,
    _Source,
    budget_lines,
    budget_summary,
    public_dtype,
    short_metadata,
)
from op_tensorflow.series import PrivateSeries

__all__ = ["PrivateDataFrame", "PrivateSeries", "test_train_split", "train_test_split"]


class PrivateDataFrame(_PrivateBase):
    """A pandas DataFrame whose rows stay private.

    Args:
        df: The data, a pandas DataFrame (the data owner's copy is taken, not referenced).
        metadata: Public facts about columns: ``{"col": (lower, upper)}`` for numeric
            columns or ``{"col": ["a", "b"]}`` for categories. DP sums and means need
            bounds; they are never guessed from the data.
        budget: A ``PrivacyBudget``, an ``(epsilon, delta)`` tuple, or None for an unlimited
            ledger (still recording every charge) at ``delta = 1 / (10 n)``.

    Example:
        >>> pdf = PrivateDataFrame(df, metadata={"age": (0, 100)}, budget=(3.0, 1e-6))
        >>> X, y = pdf[["feature1", "feature2"]], pdf["target"]
    """

    __slots__ = ()

    def __init__(
        self, df=None, *, metadata: Mapping | None = None, budget=None, _source=None, _data=None, _layout=None
    ):
        if _source is not None:  # internal derivation: shares the parent's source
            super().__init__(_data, _source, dict(metadata or {}), _layout)
            return
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}.")
        if len(df) == 0:
            raise ValueError("df must have at least one row.")
        if df.columns.duplicated().any():
            raise ValueError(f"df has duplicate column names: {sorted(set(df.columns[df.columns.duplicated()]))}.")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(
                f"metadata must be a dict {{column: (lower, upper) or [categories]}}, got {type(metadata).__name__}."
            )
        checked = {}
        for name, meta in dict(metadata or {}).items():
            if name not in df.columns:
                raise ValueError(f"metadata names column {name!r}, which is not in df (columns: {list(df.columns)}).")
            if isinstance(meta, (list, set)) or (isinstance(meta, tuple) and meta and isinstance(meta[0], str)):
                checked[name] = list(meta)
            else:
                checked[name] = validate_bounds(name, meta)
        ledger = as_budget(budget, default_delta=1.0 / (10 * len(df)))
        super().__init__(df.copy(deep=True), _Source(ledger, len(df)), checked)

    @classmethod
    def from_csv(cls, path, *, metadata: Mapping | None = None, budget=None, **read_csv_kwargs) -> PrivateDataFrame:
        """Reads a CSV file straight into a private frame (the raw frame is never returned).

        ``path`` is a file name (str or os.PathLike) or an open text file; ``read_csv_kwargs``
        go to ``pandas.read_csv``.
        """
        if not hasattr(path, "read"):
            path = _checks.file_path("path", path, "CSV file")
        return cls(pd.read_csv(path, **read_csv_kwargs), metadata=metadata, budget=budget)

    # -- schema ---------------------------------------------------------------------------
    @property
    def columns(self) -> list:
        return list(self._data.columns)

    @property
    def dtypes(self) -> pd.Series:
        dtypes = self._data.dtypes
        return pd.Series([public_dtype(t) for t in dtypes], index=dtypes.index, dtype=object)

    @property
    def metadata(self) -> dict:
        return {c: self._metadata[c] for c in self._data.columns if c in self._metadata}

    @property
    def example_shape(self) -> tuple[int, ...] | None:
        """The per-example shape of private arrays (see ``private_arrays``), e.g. ``(12, 6)``, else None.

        The columns are the examples' values flattened in row-major (C) order; the shape is kept
        through splits, clipping and arithmetic, and dropped once columns are selected, dropped,
        reordered or added. ``PrivateDataLoader`` uses it when no ``feature_shape`` is given.
        """
        layout = self._layout
        if layout is None or tuple(self._data.columns) != layout[1]:
            return None
        return layout[0]

    def __repr__(self) -> str:
        """Schema and budget state only: one line if short, else at most about 20 lines."""
        dtypes = [(c, public_dtype(t)) for c, t in self._data.dtypes.items()]
        shape = self.example_shape
        cols = ", ".join(f"{c}: {t}" for c, t in dtypes)
        line = f"PrivateDataFrame(rows={len(self)}, columns=[{cols}], budget: {budget_summary(self.budget)})"
        if shape is None and len(line) <= REPR_WIDTH:
            return line
        lines = [f"PrivateDataFrame(rows={len(self)}, columns={len(dtypes)})"]
        if shape is not None:
            lines.append(f"  per-example shape: {shape} (columns in row-major order)")
        lines.append("  columns (dtype, public metadata):")
        for c, t in dtypes[:REPR_COLUMNS]:
            lines.append(f"    {str(c)[:40]}: {t}, {short_metadata(self._metadata.get(c))}")
        if len(dtypes) > REPR_COLUMNS:
            lines.append(f"    ... and {len(dtypes) - REPR_COLUMNS} more columns")
        return "\n".join(lines + budget_lines(self.budget))

    __str__ = __repr__

    def _repr_html_(self) -> str:
        return f"<pre>{self!r}</pre>"

    # -- selection and derivation ---------------------------------------------------
    def _derive(self, data: pd.DataFrame, metadata: dict | None = None) -> PrivateDataFrame:
        return PrivateDataFrame(
            metadata=self._metadata if metadata is None else metadata,
            _source=self._source,
            _data=data,
            _layout=self._layout,  # example_shape checks that the columns still match it
        )

    def _check_columns(self, names: Sequence) -> None:
        def known(name) -> bool:
            try:
                return name in self._data.columns
            except TypeError:  # unhashable: no column has that name
                return False

        missing = [n for n in names if not known(n)]
        if missing:
            raise KeyError(f"unknown column(s) {missing}; available: {self.columns}")

    def __getitem__(self, key):
        if isinstance(key, (list, tuple, pd.Index)):
            self._check_columns(list(key))
            return self._derive(self._data[list(key)])
        if isinstance(key, slice):
            raise PrivacyError(f"row slicing would release raw private rows of a PrivateDataFrame. {AGGREGATE_HINT}")
        if isinstance(key, PrivateSeries):
            raise PrivacyError(
                "Filtering rows by a private condition would make the row count data-dependent; "
                "use a DP aggregate of the condition instead (e.g. (pdf['x'] > 0).sum(eps=...))."
            )
        self._check_columns([key])
        return PrivateSeries(self._data[key], self._source, {key: self._metadata[key]} if key in self._metadata else {})

    def __setitem__(self, key, value):
        if isinstance(value, PrivateSeries):
            self._same_source(value, "column assignment")
            data = value._data
            meta = value.metadata
        elif is_scalar(value):
            data, meta = value, scalar_bounds(value)
        else:
            raise TypeError(
                f"columns can be set from a PrivateSeries of the same dataset or a scalar, not {type(value).__name__}."
            )
        self._data[key] = data
        if meta is None:
            self._metadata.pop(key, None)
        else:
            self._metadata[key] = meta

    def drop(self, columns) -> PrivateDataFrame:
        columns = list(columns) if isinstance(columns, (list, tuple, set, pd.Index)) else [columns]
        self._check_columns(columns)
        return self._derive(self._data.drop(columns=columns))

    def clip(self, bounds: Mapping[str, Bounds]) -> PrivateDataFrame:
        """Clamps the named columns to public bounds, which become their metadata."""
        if not isinstance(bounds, Mapping):
            raise TypeError(f"bounds must be a dict {{column: (lower, upper)}}, got {type(bounds).__name__}.")
        data, meta = self._data.copy(), dict(self._metadata)
        for col, b in bounds.items():
            self._check_columns([col])
            meta[col] = validate_bounds(col, b)
            data[col] = data[col].clip(*meta[col])
        return self._derive(data, meta)

    def _columnwise(self, method: str, other) -> PrivateDataFrame:
        if not is_scalar(other):
            return NotImplemented
        out = {c: getattr(self[c], method)(other) for c in self.columns}
        data = pd.DataFrame({c: s._data for c, s in out.items()}, index=self._data.index)
        meta = {c: s.metadata for c, s in out.items() if s.metadata is not None}
        return self._derive(data, meta)

    # -- DP aggregates ----------------------------------------------------------------
    def count(self, *, eps: float, mechanism: str = "laplace") -> float:
        """DP row count (sensitivity 1 under add/remove one row)."""
        eps = check_eps(eps)
        mech = Mechanism(eps, mechanism, self.budget)
        self._charge(mech.event, f"count(rows, eps={eps:g}, {mechanism})")
        return float(len(self._data)) + mech.noise(fresh_rng(), 1.0)

    def _per_column(self, what: str, eps: float, mechanism: str) -> pd.Series:
        eps = check_eps(eps)
        share = eps / len(self.columns)
        columns = [self[c] for c in self.columns]
        for col in columns:
            col._needs_bounds(what) if what != "count" else None
        return pd.Series({c.name: getattr(c, what)(eps=share, mechanism=mechanism) for c in columns})

    def sum(self, *, eps: float, mechanism: str = "laplace") -> pd.Series:
        """DP clamped sum of every column; ``eps`` is split evenly across columns."""
        return self._per_column("sum", eps, mechanism)

    def mean(self, *, eps: float, mechanism: str = "laplace") -> pd.Series:
        """DP mean of every column; ``eps`` is split evenly across columns."""
        return self._per_column("mean", eps, mechanism)

    def describe(self, *, eps: float, mechanism: str = "laplace") -> pd.DataFrame:
        """DP count and mean of every column (``eps`` split evenly), with the public bounds."""
        eps = check_eps(eps)
        columns = [self[c] for c in self.columns]
        for col in columns:
            col._needs_bounds("describe")
        share = eps / len(columns)
        return pd.DataFrame({c.name: c.describe(eps=share, mechanism=mechanism) for c in columns})


for _method in ARITH:
    setattr(PrivateDataFrame, _method, lambda self, other, _m=_method: self._columnwise(_m, other))


def train_test_split(*frames, test_size: float = 0.25, random_state=None) -> list:
    """Splits private frames/series of one dataset row-consistently, like scikit-learn's.

    Returns ``[a_train, a_test, b_train, b_test, ...]``; every part keeps the original
    ledger. The split is random but independent of the data values.
    """
    if not frames:
        raise ValueError("train_test_split needs at least one PrivateDataFrame or PrivateSeries.")
    for f in frames:
        if not isinstance(f, _PrivateBase):
            raise TypeError(f"train_test_split takes private objects, got {type(f).__name__}.")
    first = frames[0]
    for f in frames[1:]:
        first._same_source(f, "train_test_split")
    test_size = _checks.open_unit("test_size", test_size)
    n = len(first)
    n_test = max(1, min(n - 1, int(math.ceil(test_size * n))))
    if n < 2:
        raise ValueError("train_test_split needs at least 2 rows.")
    try:
        rng = np.random.default_rng(random_state)
    except (TypeError, ValueError):
        raise TypeError(f"random_state must be None or an integer >= 0, got {random_state!r}.") from None
    perm = rng.permutation(n)
    test_pos, train_pos = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    parts = []
    for f in frames:
        data = _raw(f)
        for pos in (train_pos, test_pos):
            piece = data.iloc[pos]
            if isinstance(f, PrivateDataFrame):
                parts.append(f._derive(piece))
            else:
                parts.append(f._derive(piece, f.metadata))
    return parts


test_train_split = train_test_split
