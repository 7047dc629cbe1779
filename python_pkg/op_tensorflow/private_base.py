"""What every private object shares: the dataset's identity and ledger, and the refused paths.

:class:`_PrivateBase` is the base of ``PrivateDataFrame`` and ``PrivateSeries``: it holds
the wrapped pandas object, the :class:`_Source` (the original dataset: its ledger and row
count) and the public metadata, and refuses every public path that would hand out raw
values with ``PrivacyError``. :func:`_raw` gives op_tensorflow's own trusted code (loader,
model) the wrapped pandas object.
"""

from __future__ import annotations

import dp_accounting
import pandas as pd

from op_tensorflow.budget import PrivacyBudget
from op_tensorflow.errors import PrivacyError

__all__ = ["AGGREGATE_HINT", "budget_lines", "budget_summary", "public_dtype", "refuse", "short_metadata"]

#: Reprs longer than this many characters become a multi-line summary (at most ~20 lines).
REPR_WIDTH = 200
#: Columns listed by a multi-line repr before "... and N more columns".
REPR_COLUMNS = 10


class _Source:
    """Identity of one original private dataset: every derived object points at it."""

    __slots__ = ("budget", "n_rows", "__weakref__")

    def __init__(self, budget: PrivacyBudget, n_rows: int):
        self.budget = budget
        self.n_rows = n_rows


def _raw(obj: _PrivateBase) -> pd.DataFrame | pd.Series:
    """The wrapped pandas object, for op_tensorflow's own trusted code (loader, model)."""
    if not isinstance(obj, _PrivateBase):
        raise TypeError(f"expected a PrivateDataFrame or PrivateSeries, got {type(obj).__name__}")
    return object.__getattribute__(obj, "_data")


def budget_summary(budget: PrivacyBudget) -> str:
    """The one-line account of ``budget`` shown in reprs."""
    return f"epsilon spent {budget.spent():.4g} of {budget.epsilon:g} at delta={budget.delta:g}"


def budget_lines(budget: PrivacyBudget) -> list[str]:
    """The budget state of a multi-line repr: epsilon total, spent and remaining, and delta."""
    spent = budget.spent()
    remaining = max(budget.epsilon - spent, 0.0)
    return [
        f"  budget: epsilon total {budget.epsilon:g}, spent {spent:.4g}, remaining {remaining:.4g}; "
        f"delta {budget.delta:g} ({budget.accountant})"
    ]


def short_metadata(meta) -> str:
    """Public metadata for a repr line: bounds as ``[lower, upper]``, a long category list shortened."""
    if meta is None:
        return "no bounds"
    if isinstance(meta, tuple):
        return f"[{meta[0]:g}, {meta[1]:g}]"
    shown = ", ".join(repr(c) for c in meta[:5])
    return f"categories [{shown}{', ...' if len(meta) > 5 else ''}] ({len(meta)})"


def refuse(what: str, instead: str):
    """A method raising ``PrivacyError`` for ``what``, suggesting ``instead``."""

    def method(self, *args, **kwargs):
        raise PrivacyError(f"{what} would release raw private rows of this {type(self).__name__}. {instead}")

    method.__name__ = what
    return method


AGGREGATE_HINT = "Use a DP aggregate (count, sum, mean, describe with eps=...) or train a model instead."


class _PrivateBase:
    """What PrivateDataFrame and PrivateSeries share: source, ledger and refused paths."""

    __slots__ = ("_data", "_source", "_metadata", "_layout")

    def __init__(self, data, source: _Source, metadata: dict, layout: tuple | None = None):
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "_metadata", metadata)
        # (per-example shape, the flat columns in C order) of private arrays; see PrivateDataFrame.example_shape
        object.__setattr__(self, "_layout", layout)

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
    values = property(refuse("values", AGGREGATE_HINT))
    to_numpy = refuse("to_numpy()", AGGREGATE_HINT)
    __array__ = refuse("np.asarray()", AGGREGATE_HINT)
    __iter__ = refuse("iteration", AGGREGATE_HINT)
    iloc = property(refuse("iloc", AGGREGATE_HINT))
    loc = property(refuse("loc", AGGREGATE_HINT))
    at = property(refuse("at", AGGREGATE_HINT))
    iat = property(refuse("iat", AGGREGATE_HINT))
    index = property(refuse("index", "Row labels are private; use len() for the row count."))
    head = refuse("head()", AGGREGATE_HINT)
    tail = refuse("tail()", AGGREGATE_HINT)
    sample = refuse("sample()", "Use PrivateDataLoader for Poisson-sampled training batches.")
    to_pandas = refuse("to_pandas()", AGGREGATE_HINT)
    to_csv = refuse("to_csv()", "Private data cannot be written out; the data owner keeps the file.")
    to_dict = refuse("to_dict()", AGGREGATE_HINT)
    to_list = tolist = refuse("to_list()", AGGREGATE_HINT)
    to_json = refuse("to_json()", AGGREGATE_HINT)
    __reduce__ = refuse("pickling", "Private objects cannot be serialized; share the source file instead.")
    __reduce_ex__ = refuse("pickling", "Private objects cannot be serialized; share the source file instead.")
    __getstate__ = refuse("pickling", "Private objects cannot be serialized; share the source file instead.")
    __deepcopy__ = refuse("copy.deepcopy()", "Select or derive a new private object instead.")
    __bool__ = refuse("bool()", AGGREGATE_HINT)
    __contains__ = refuse("`in`", AGGREGATE_HINT)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is read-only; use item assignment pdf['col'] = ... for columns.")

    def __copy__(self):
        clone = object.__new__(type(self))
        # a shallow copy: assigning a column to the clone leaves the original as it was
        _PrivateBase.__init__(clone, self._data.copy(deep=False), self._source, dict(self._metadata), self._layout)
        return clone

    # -- DP aggregates ----------------------------------------------------------------
    def _charge(self, event: dp_accounting.DpEvent, description: str) -> None:
        self._source.budget.charge(event, description=description)

    def _same_source(self, other: _PrivateBase, what: str) -> None:
        if other._source is not self._source:
            raise ValueError(f"{what}: both operands must come from the same private dataset.")
        if not _raw(self).index.equals(_raw(other).index):
            raise ValueError(f"{what}: operands are not row-aligned (select them from the same frame or split).")


_PrivateBase.__module__ = "op_tensorflow.frame"  # its public home: reprs and R class names say so


def public_dtype(dtype):
    """``dtype`` without data: a categorical's categories are the distinct values of the column
    (public only when given as metadata), so only the kind ``category`` is shown."""
    if isinstance(dtype, pd.CategoricalDtype):
        return pd.CategoricalDtype(ordered=dtype.ordered)
    return dtype
