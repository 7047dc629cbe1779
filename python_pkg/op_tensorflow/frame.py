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
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
from collections.abc import Callable, Mapping, Sequence

import dp_accounting
import numpy as np
import pandas as pd

from op_tensorflow import _checks
from op_tensorflow.budget import PrivacyBudget, as_budget
from op_tensorflow.errors import PrivacyError

Bounds = tuple[float, float]
MECHANISMS = ("laplace", "gaussian")


class _Source:
    """Identity of one original private dataset: every derived object points at it."""

    __slots__ = ("budget", "n_rows", "__weakref__")

    def __init__(self, budget: PrivacyBudget, n_rows: int):
        self.budget = budget
        self.n_rows = n_rows


def _raw(obj: PrivateDataFrame | PrivateSeries) -> pd.DataFrame | pd.Series:
    """The wrapped pandas object, for op_tensorflow's own trusted code (loader, model)."""
    if not isinstance(obj, _PrivateBase):
        raise TypeError(f"expected a PrivateDataFrame or PrivateSeries, got {type(obj).__name__}")
    return object.__getattribute__(obj, "_data")


def _budget_summary(budget: PrivacyBudget) -> str:
    return f"epsilon spent {budget.spent():.4g} of {budget.epsilon:g} at delta={budget.delta:g}"


def _refuse(what: str, instead: str):
    def method(self, *args, **kwargs):
        raise PrivacyError(f"{what} would release raw private rows of this {type(self).__name__}. {instead}")

    method.__name__ = what
    return method


_AGGREGATE_HINT = "Use a DP aggregate (count, sum, mean, describe with eps=...) or train a model instead."


class _PrivateBase:
    """What PrivateDataFrame and PrivateSeries share: source, ledger and refused paths."""

    __slots__ = ("_data", "_source", "_metadata")

    def __init__(self, data, source: _Source, metadata: dict):
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "_metadata", metadata)

    # -- public, data-independent facts ---------------------------------------------
    @property
    def budget(self) -> PrivacyBudget:
        """The dataset's privacy-budget ledger, shared by every derived object."""
        return self._source.budget

    @property
    def shape(self) -> tuple:
        return self._data.shape

    def __len__(self) -> int:
        return len(self._data)

    # -- refused paths ------------------------------------------------------------------
    values = property(_refuse("values", _AGGREGATE_HINT))
    to_numpy = _refuse("to_numpy()", _AGGREGATE_HINT)
    __array__ = _refuse("np.asarray()", _AGGREGATE_HINT)
    __iter__ = _refuse("iteration", _AGGREGATE_HINT)
    iloc = property(_refuse("iloc", _AGGREGATE_HINT))
    loc = property(_refuse("loc", _AGGREGATE_HINT))
    at = property(_refuse("at", _AGGREGATE_HINT))
    iat = property(_refuse("iat", _AGGREGATE_HINT))
    index = property(_refuse("index", "Row labels are private; use len() for the row count."))
    head = _refuse("head()", _AGGREGATE_HINT)
    tail = _refuse("tail()", _AGGREGATE_HINT)
    sample = _refuse("sample()", "Use PrivateDataLoader for Poisson-sampled training batches.")
    to_pandas = _refuse("to_pandas()", _AGGREGATE_HINT)
    to_csv = _refuse("to_csv()", "Private data cannot be written out; the data owner keeps the file.")
    to_dict = _refuse("to_dict()", _AGGREGATE_HINT)
    to_list = tolist = _refuse("to_list()", _AGGREGATE_HINT)
    to_json = _refuse("to_json()", _AGGREGATE_HINT)
    __reduce__ = _refuse("pickling", "Private objects cannot be serialized; share the source file instead.")
    __reduce_ex__ = _refuse("pickling", "Private objects cannot be serialized; share the source file instead.")
    __getstate__ = _refuse("pickling", "Private objects cannot be serialized; share the source file instead.")
    __deepcopy__ = _refuse("copy.deepcopy()", "Select or derive a new private object instead.")
    __bool__ = _refuse("bool()", _AGGREGATE_HINT)
    __contains__ = _refuse("`in`", _AGGREGATE_HINT)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is read-only; use item assignment pdf['col'] = ... for columns.")

    def __copy__(self):
        clone = object.__new__(type(self))
        _PrivateBase.__init__(clone, self._data, self._source, dict(self._metadata))
        return clone

    # -- DP aggregates ----------------------------------------------------------------
    def _charge(self, event: dp_accounting.DpEvent, description: str) -> None:
        self._source.budget.charge(event, description=description)

    def _same_source(self, other: _PrivateBase, what: str) -> None:
        if other._source is not self._source:
            raise ValueError(f"{what}: both operands must come from the same private dataset.")
        if not _raw(self).index.equals(_raw(other).index):
            raise ValueError(f"{what}: operands are not row-aligned (select them from the same frame or split).")


# ---------------------------------------------------------------------------------------
# Interval arithmetic for bounds: a result keeps bounds where they follow from the inputs.


def _interval(op: Callable, a: Bounds | None, b: Bounds | None) -> Bounds | None:
    if a is None or b is None:
        return None
    corners = [op(x, y) for x in a for y in b]
    if not all(math.isfinite(c) for c in corners):  # NaN or an overflow: no usable bound
        return None
    return (float(min(corners)), float(max(corners)))


def _div_bounds(a: Bounds | None, b: Bounds | None) -> Bounds | None:
    if b is None or b[0] <= 0 <= b[1]:
        return None  # division by something that can be zero: no finite bound
    return _interval(operator.truediv, a, b)


_ARITH = {
    "__add__": (operator.add, lambda a, b: _interval(operator.add, a, b)),
    "__sub__": (operator.sub, lambda a, b: _interval(operator.sub, a, b)),
    "__mul__": (operator.mul, lambda a, b: _interval(operator.mul, a, b)),
    "__truediv__": (operator.truediv, _div_bounds),
    "__radd__": (lambda x, y: y + x, lambda a, b: _interval(operator.add, b, a)),
    "__rsub__": (lambda x, y: y - x, lambda a, b: _interval(operator.sub, b, a)),
    "__rmul__": (lambda x, y: y * x, lambda a, b: _interval(operator.mul, b, a)),
    "__rtruediv__": (lambda x, y: y / x, lambda a, b: _div_bounds(b, a)),
}
_COMPARE = {
    "__lt__": operator.lt,
    "__le__": operator.le,
    "__gt__": operator.gt,
    "__ge__": operator.ge,
    "__eq__": operator.eq,
    "__ne__": operator.ne,
}


def _scalar_bounds(value) -> Bounds:
    return (float(value), float(value))


def _is_scalar(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _validate_bounds(name: str, bounds) -> Bounds:
    try:
        if isinstance(bounds, (str, bytes)) or np.ndim(bounds[0]) or np.ndim(bounds[1]):
            raise TypeError
        lower, upper = (float(bounds[0]), float(bounds[1]))
    except (TypeError, ValueError, IndexError, KeyError, OverflowError):
        raise ValueError(f"metadata for {name!r} must be (lower, upper) numbers or a list of categories.") from None
    if not (math.isfinite(lower) and math.isfinite(upper)) or lower > upper:
        raise ValueError(f"metadata bounds for {name!r} must be finite with lower <= upper, got {bounds!r}.")
    return (lower, upper)


def _laplace_event(eps: float) -> dp_accounting.DpEvent:
    return dp_accounting.LaplaceDpEvent(1.0 / eps)  # scale / sensitivity = 1 / eps


@functools.lru_cache(maxsize=256)
def _gaussian_noise_multiplier(eps: float, delta: float, accountant: str) -> float:
    from op_tensorflow.accounting import MIN_NOISE_MULTIPLIER as floor
    from op_tensorflow.accounting import make_accountant

    try:
        sigma = dp_accounting.calibrate_dp_mechanism(
            lambda: make_accountant(accountant),
            dp_accounting.GaussianDpEvent,
            eps,
            delta,
            dp_accounting.LowerEndpointAndGuess(floor, 1.0),
            tol=1e-6,
        )
    except dp_accounting.mechanism_calibration.NoBracketIntervalFoundError:
        raise ValueError(
            f"eps={eps:g} is too large for the Gaussian mechanism at delta={delta:g} (its noise would be below "
            f"{floor:g} times the sensitivity, the least accounted for); use "
            "mechanism='laplace' or a smaller eps."
        ) from None
    return sigma + 1e-6  # stay on the safe side of the tolerance


class _Mechanism:
    """Noise for one released statistic of sensitivity 1, at privacy parameter ``eps``."""

    def __init__(self, eps: float, mechanism: str, budget: PrivacyBudget):
        _checks.one_of("mechanism", mechanism, MECHANISMS)
        if mechanism == "laplace":
            self.event = _laplace_event(eps)
            self.scale = 1.0 / eps
        else:
            sigma = _gaussian_noise_multiplier(eps, budget.delta, budget.accountant)
            self.event = dp_accounting.GaussianDpEvent(sigma)
            self.scale = sigma
        self.mechanism = mechanism

    def noise(self, rng: np.random.Generator, sensitivity: float) -> float:
        if self.mechanism == "laplace":
            return float(rng.laplace(0.0, self.scale * sensitivity))
        return float(rng.normal(0.0, self.scale * sensitivity))


def _rng() -> np.random.Generator:
    return np.random.default_rng()  # seeded from OS entropy on every release


def _public_dtype(dtype):
    """``dtype`` without data: a categorical's categories are the distinct values of the column
    (public only when given as metadata), so only the kind ``category`` is shown."""
    if isinstance(dtype, pd.CategoricalDtype):
        return pd.CategoricalDtype(ordered=dtype.ordered)
    return dtype


def _check_eps(eps) -> float:
    eps = _checks.positive_float("eps", eps)
    if eps < 1e-100:
        raise ValueError(f"eps must be at least 1e-100 (the answer would be noise beyond float range), got {eps!r}.")
    if eps > 1e6:
        raise ValueError(
            f"eps must be at most 1e6 (the noise would be below a millionth of the sensitivity, and dp_accounting "
            f"overflows beyond), got {eps!r}."
        )
    return eps


def _check_float_range(what: str, name, n_rows: int, sensitivity: float, mech: _Mechanism) -> None:
    """Refuses, before charging, a sum whose clamped total or noise could overflow float64.

    Depends on public facts only (row count, bounds, eps), so the refusal reveals nothing.
    """
    if not (math.isfinite(n_rows * sensitivity) and math.isfinite(1e3 * mech.scale * sensitivity)):
        raise ValueError(
            f"{what} of {name!r}: bounds of magnitude {sensitivity:g} over {n_rows} rows with noise scale "
            f"{mech.scale:g} (from eps) overflow float64; use narrower bounds (metadata or .clip) or a larger eps."
        )


class PrivateSeries(_PrivateBase):
    """One private column. Created by selecting ``pdf["col"]``; never from raw data directly."""

    __slots__ = ()

    __getitem__ = _refuse("indexing", _AGGREGATE_HINT)

    @property
    def name(self):
        return self._data.name

    @property
    def dtype(self):
        return _public_dtype(self._data.dtype)

    @property
    def metadata(self):
        """Bounds ``(lower, upper)`` or a list of categories, or None if unknown."""
        return self._metadata.get(self._data.name)

    @property
    def bounds(self) -> Bounds | None:
        meta = self.metadata
        return meta if isinstance(meta, tuple) else None

    def __repr__(self) -> str:
        return (
            f"PrivateSeries(name={self.name!r}, dtype={self.dtype}, rows={len(self)}, "
            f"metadata={self.metadata!r}, budget: {_budget_summary(self.budget)})"
        )

    __str__ = __repr__

    def _repr_html_(self) -> str:
        return f"<pre>{self!r}</pre>"

    def _derive(self, data: pd.Series, meta) -> PrivateSeries:
        metadata = {data.name: meta} if meta is not None else {}
        return PrivateSeries(data, self._source, metadata)

    def rename(self, name) -> PrivateSeries:
        return self._derive(self._data.rename(name), self.metadata)

    def clip(self, lower: float, upper: float) -> PrivateSeries:
        """Clamps values to public bounds ``[lower, upper]``, which become the new metadata."""
        bounds = _validate_bounds(str(self.name), (lower, upper))
        return self._derive(self._numeric("clip").clip(*bounds), bounds)

    def _numeric(self, what: str) -> pd.Series:
        if not pd.api.types.is_numeric_dtype(self._data.dtype) or pd.api.types.is_bool_dtype(self._data.dtype):
            if pd.api.types.is_bool_dtype(self._data.dtype):
                return self._data.astype(float)
            raise TypeError(f"{what} needs a numeric column; {self.name!r} has dtype {self.dtype}.")
        return self._data

    def _binary(self, other, method: str) -> PrivateSeries:
        op, bound_op = _ARITH[method]
        if isinstance(other, PrivateSeries):
            self._same_source(other, method.strip("_"))
            data = op(self._numeric(method), other._numeric(method))
            bounds = bound_op(self.bounds, other.bounds)
        elif _is_scalar(other):
            try:
                other = float(other)  # beyond int64, pandas would fall back to Python arithmetic (ZeroDivisionError)
            except OverflowError:
                raise ValueError(f"{method.strip('_')}: the scalar {other!r} is beyond float range.") from None
            data = op(self._numeric(method), other)
            bounds = bound_op(self.bounds, _scalar_bounds(other))
        else:
            return NotImplemented
        return self._derive(data.rename(self.name), bounds)

    def _compare(self, other, method: str) -> PrivateSeries:
        op = _COMPARE[method]
        if isinstance(other, PrivateSeries):
            self._same_source(other, method.strip("_"))
            data = op(self._data, other._data)
        elif _is_scalar(other) or isinstance(other, str):
            data = op(self._data, other)
        else:
            return NotImplemented
        return self._derive(data.astype(float).rename(self.name), (0.0, 1.0))

    def __neg__(self) -> PrivateSeries:
        b = self.bounds
        return self._derive(-self._numeric("negation"), (-b[1], -b[0]) if b else None)

    def __abs__(self) -> PrivateSeries:
        b = self.bounds
        bounds = None if b is None else (0.0 if b[0] <= 0 <= b[1] else min(abs(b[0]), abs(b[1])), max(map(abs, b)))
        return self._derive(self._numeric("abs").abs(), bounds)

    __hash__ = None

    # -- DP aggregates ----------------------------------------------------------------
    def _needs_bounds(self, what: str) -> Bounds:
        if self.bounds is None:
            raise ValueError(
                f"{what} of {self.name!r} needs public bounds: pass metadata={{{self.name!r}: (lower, upper)}} "
                f"when creating the PrivateDataFrame, or call .clip(lower, upper) first. Bounds are never "
                "guessed from the data."
            )
        return self.bounds

    def count(self, *, eps: float, mechanism: str = "laplace") -> float:
        """DP number of non-missing values (sensitivity 1 under add/remove one row)."""
        eps = _check_eps(eps)
        mech = _Mechanism(eps, mechanism, self.budget)
        self._charge(mech.event, f"count({self.name!r}, eps={eps:g}, {mechanism})")
        return float(self._data.notna().sum()) + mech.noise(_rng(), 1.0)

    def sum(self, *, eps: float, mechanism: str = "laplace") -> float:
        """DP sum of values clamped to the column's bounds (sensitivity max(|lower|, |upper|))."""
        lower, upper = self._needs_bounds("sum")
        eps = _check_eps(eps)
        mech = _Mechanism(eps, mechanism, self.budget)
        _check_float_range("sum", self.name, len(self), max(abs(lower), abs(upper)), mech)
        self._charge(mech.event, f"sum({self.name!r}, eps={eps:g}, {mechanism})")
        total = float(self._numeric("sum").clip(lower, upper).sum(skipna=True))
        return total + mech.noise(_rng(), max(abs(lower), abs(upper)))

    def mean(self, *, eps: float, mechanism: str = "laplace") -> float:
        """DP mean: a noisy clamped sum over a noisy count, each spending ``eps / 2``, clamped to bounds."""
        lower, upper = self._needs_bounds("mean")
        eps = _check_eps(eps)
        mech = _Mechanism(eps / 2, mechanism, self.budget)
        _check_float_range("mean", self.name, len(self), max(abs(lower), abs(upper)), mech)
        event = dp_accounting.ComposedDpEvent([mech.event, mech.event])
        self._charge(event, f"mean({self.name!r}, eps={eps:g}, {mechanism})")
        rng = _rng()
        values = self._numeric("mean").clip(lower, upper)
        noisy_sum = float(values.sum(skipna=True)) + mech.noise(rng, max(abs(lower), abs(upper)))
        noisy_count = float(values.notna().sum()) + mech.noise(rng, 1.0)
        if noisy_count <= 1.0:
            return float((lower + upper) / 2)
        return float(np.clip(noisy_sum / noisy_count, lower, upper))

    def describe(self, *, eps: float, mechanism: str = "laplace") -> pd.Series:
        """DP count and mean (half of ``eps`` each) with the public bounds, as a pandas Series."""
        eps = _check_eps(eps)
        count = self.count(eps=eps / 2, mechanism=mechanism)
        mean = self.mean(eps=eps / 2, mechanism=mechanism)
        lower, upper = self.bounds
        return pd.Series({"count": count, "mean": mean, "lower": lower, "upper": upper}, name=self.name)


for _method in _ARITH:
    setattr(PrivateSeries, _method, lambda self, other, _m=_method: self._binary(other, _m))
for _method in _COMPARE:
    setattr(PrivateSeries, _method, lambda self, other, _m=_method: self._compare(other, _m))


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

    def __init__(self, df=None, *, metadata: Mapping | None = None, budget=None, _source=None, _data=None):
        if _source is not None:  # internal derivation: shares the parent's source
            super().__init__(_data, _source, dict(metadata or {}))
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
                checked[name] = _validate_bounds(name, meta)
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
        return pd.Series([_public_dtype(t) for t in dtypes], index=dtypes.index, dtype=object)

    @property
    def metadata(self) -> dict:
        return {c: self._metadata[c] for c in self._data.columns if c in self._metadata}

    def __repr__(self) -> str:
        cols = ", ".join(f"{c}: {t}" for c, t in self._data.dtypes.items())
        return f"PrivateDataFrame(rows={len(self)}, columns=[{cols}], budget: {_budget_summary(self.budget)})"

    __str__ = __repr__

    def _repr_html_(self) -> str:
        return f"<pre>{self!r}</pre>"

    # -- selection and derivation ---------------------------------------------------
    def _derive(self, data: pd.DataFrame, metadata: dict | None = None) -> PrivateDataFrame:
        return PrivateDataFrame(
            metadata=self._metadata if metadata is None else metadata, _source=self._source, _data=data
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
            raise PrivacyError(f"row slicing would release raw private rows of a PrivateDataFrame. {_AGGREGATE_HINT}")
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
        elif _is_scalar(value):
            data, meta = value, _scalar_bounds(value)
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
            meta[col] = _validate_bounds(col, b)
            data[col] = data[col].clip(*meta[col])
        return self._derive(data, meta)

    def _columnwise(self, method: str, other) -> PrivateDataFrame:
        if not _is_scalar(other):
            return NotImplemented
        out = {c: getattr(self[c], method)(other) for c in self.columns}
        data = pd.DataFrame({c: s._data for c, s in out.items()}, index=self._data.index)
        meta = {c: s.metadata for c, s in out.items() if s.metadata is not None}
        return self._derive(data, meta)

    # -- DP aggregates ----------------------------------------------------------------
    def count(self, *, eps: float, mechanism: str = "laplace") -> float:
        """DP row count (sensitivity 1 under add/remove one row)."""
        eps = _check_eps(eps)
        mech = _Mechanism(eps, mechanism, self.budget)
        self._charge(mech.event, f"count(rows, eps={eps:g}, {mechanism})")
        return float(len(self._data)) + mech.noise(_rng(), 1.0)

    def _per_column(self, what: str, eps: float, mechanism: str) -> pd.Series:
        eps = _check_eps(eps)
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
        eps = _check_eps(eps)
        columns = [self[c] for c in self.columns]
        for col in columns:
            col._needs_bounds("describe")
        share = eps / len(columns)
        return pd.DataFrame({c.name: c.describe(eps=share, mechanism=mechanism) for c in columns})


for _method in _ARITH:
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
