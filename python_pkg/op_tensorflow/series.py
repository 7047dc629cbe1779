"""``PrivateSeries``: one private column, with bounds arithmetic and DP aggregates."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pandas as pd

from op_tensorflow.bounds import ARITH, COMPARE, Bounds, is_scalar, scalar_bounds, validate_bounds
from op_tensorflow.mechanisms import Mechanism, check_eps, check_float_range, fresh_rng
from op_tensorflow.private_base import (
    AGGREGATE_HINT,
    REPR_WIDTH,
    _PrivateBase,
    budget_lines,
    budget_summary,
    public_dtype,
    refuse,
    short_metadata,
)

__all__ = ["PrivateSeries"]


class PrivateSeries(_PrivateBase):
    """One private column. Created by selecting ``pdf["col"]``; never from raw data directly."""

    __slots__ = ()

    __getitem__ = refuse("indexing", AGGREGATE_HINT)

    @property
    def name(self):
        return self._data.name

    @property
    def dtype(self):
        return public_dtype(self._data.dtype)

    @property
    def metadata(self):
        """Bounds ``(lower, upper)`` or a list of categories, or None if unknown."""
        return self._metadata.get(self._data.name)

    @property
    def bounds(self) -> Bounds | None:
        meta = self.metadata
        return meta if isinstance(meta, tuple) else None

    def __repr__(self) -> str:
        """Schema and budget state only: one line if short, else a few lines."""
        line = (
            f"PrivateSeries(name={self.name!r}, dtype={self.dtype}, rows={len(self)}, "
            f"metadata={self.metadata!r}, budget: {budget_summary(self.budget)})"
        )
        if len(line) <= REPR_WIDTH:
            return line
        lines = [
            f"PrivateSeries(name={str(self.name)[:40]!r}, dtype={self.dtype}, rows={len(self)})",
            f"  metadata: {short_metadata(self.metadata)}",
        ]
        return "\n".join(lines + budget_lines(self.budget))

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
        bounds = validate_bounds(str(self.name), (lower, upper))
        return self._derive(self._numeric("clip").clip(*bounds), bounds)

    def _numeric(self, what: str) -> pd.Series:
        if not pd.api.types.is_numeric_dtype(self._data.dtype) or pd.api.types.is_bool_dtype(self._data.dtype):
            if pd.api.types.is_bool_dtype(self._data.dtype):
                return self._data.astype(float)
            raise TypeError(f"{what} needs a numeric column; {self.name!r} has dtype {self.dtype}.")
        return self._data

    def _binary(self, other, method: str) -> PrivateSeries:
        op, bound_op = ARITH[method]
        if isinstance(other, PrivateSeries):
            self._same_source(other, method.strip("_"))
            data = op(self._numeric(method), other._numeric(method))
            bounds = bound_op(self.bounds, other.bounds)
        elif is_scalar(other):
            try:
                other = float(other)  # beyond int64, pandas would fall back to Python arithmetic (ZeroDivisionError)
            except OverflowError:
                raise ValueError(f"{method.strip('_')}: the scalar {other!r} is beyond float range.") from None
            data = op(self._numeric(method), other)
            bounds = bound_op(self.bounds, scalar_bounds(other))
        else:
            return NotImplemented
        return self._derive(data.rename(self.name), bounds)

    def _compare(self, other, method: str) -> PrivateSeries:
        op = COMPARE[method]
        if isinstance(other, PrivateSeries):
            self._same_source(other, method.strip("_"))
            data = op(self._data, other._data)
        elif is_scalar(other) or isinstance(other, str):
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
        eps = check_eps(eps)
        mech = Mechanism(eps, mechanism, self.budget)
        self._charge(mech.event, f"count({self.name!r}, eps={eps:g}, {mechanism})")
        return float(self._data.notna().sum()) + mech.noise(fresh_rng(), 1.0)

    def sum(self, *, eps: float, mechanism: str = "laplace") -> float:
        """DP sum of values clamped to the column's bounds (sensitivity max(|lower|, |upper|))."""
        lower, upper = self._needs_bounds("sum")
        eps = check_eps(eps)
        mech = Mechanism(eps, mechanism, self.budget)
        check_float_range("sum", self.name, len(self), max(abs(lower), abs(upper)), mech)
        self._charge(mech.event, f"sum({self.name!r}, eps={eps:g}, {mechanism})")
        total = float(self._numeric("sum").clip(lower, upper).sum(skipna=True))
        return total + mech.noise(fresh_rng(), max(abs(lower), abs(upper)))

    def mean(self, *, eps: float, mechanism: str = "laplace") -> float:
        """DP mean: a noisy clamped sum over a noisy count, each spending ``eps / 2``, clamped to bounds."""
        lower, upper = self._needs_bounds("mean")
        eps = check_eps(eps)
        mech = Mechanism(eps / 2, mechanism, self.budget)
        check_float_range("mean", self.name, len(self), max(abs(lower), abs(upper)), mech)
        event = dp_accounting.ComposedDpEvent([mech.event, mech.event])
        self._charge(event, f"mean({self.name!r}, eps={eps:g}, {mechanism})")
        rng = fresh_rng()
        values = self._numeric("mean").clip(lower, upper)
        noisy_sum = float(values.sum(skipna=True)) + mech.noise(rng, max(abs(lower), abs(upper)))
        noisy_count = float(values.notna().sum()) + mech.noise(rng, 1.0)
        if noisy_count <= 1.0:
            return float((lower + upper) / 2)
        return float(np.clip(noisy_sum / noisy_count, lower, upper))

    def describe(self, *, eps: float, mechanism: str = "laplace") -> pd.Series:
        """DP count and mean (half of ``eps`` each) with the public bounds, as a pandas Series."""
        eps = check_eps(eps)
        count = self.count(eps=eps / 2, mechanism=mechanism)
        mean = self.mean(eps=eps / 2, mechanism=mechanism)
        lower, upper = self.bounds
        return pd.Series({"count": count, "mean": mean, "lower": lower, "upper": upper}, name=self.name)


for _method in ARITH:
    setattr(PrivateSeries, _method, lambda self, other, _m=_method: self._binary(other, _m))
for _method in COMPARE:
    setattr(PrivateSeries, _method, lambda self, other, _m=_method: self._compare(other, _m))

PrivateSeries.__module__ = "op_tensorflow.frame"  # its public home: reprs and R class names say so
