"""Public bounds of private columns, and interval arithmetic on them.

A column's bounds ``(lower, upper)`` are public metadata (never computed from the data).
Arithmetic on private series keeps bounds wherever they follow from the operands' bounds:
``ARITH`` maps each arithmetic dunder to its pandas operation and its bounds operation,
``COMPARE`` each comparison to its operator (a comparison's result is bounded by (0, 1)).
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable

import numpy as np

__all__ = ["ARITH", "COMPARE", "Bounds", "is_scalar", "scalar_bounds", "validate_bounds"]

Bounds = tuple[float, float]


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


ARITH = {
    "__add__": (operator.add, lambda a, b: _interval(operator.add, a, b)),
    "__sub__": (operator.sub, lambda a, b: _interval(operator.sub, a, b)),
    "__mul__": (operator.mul, lambda a, b: _interval(operator.mul, a, b)),
    "__truediv__": (operator.truediv, _div_bounds),
    "__radd__": (lambda x, y: y + x, lambda a, b: _interval(operator.add, b, a)),
    "__rsub__": (lambda x, y: y - x, lambda a, b: _interval(operator.sub, b, a)),
    "__rmul__": (lambda x, y: y * x, lambda a, b: _interval(operator.mul, b, a)),
    "__rtruediv__": (lambda x, y: y / x, lambda a, b: _div_bounds(b, a)),
}
COMPARE = {
    "__lt__": operator.lt,
    "__le__": operator.le,
    "__gt__": operator.gt,
    "__ge__": operator.ge,
    "__eq__": operator.eq,
    "__ne__": operator.ne,
}


def scalar_bounds(value) -> Bounds:
    """The bounds ``(value, value)`` of a public scalar."""
    return (float(value), float(value))


def is_scalar(value) -> bool:
    """Whether ``value`` is a real number (not a bool) that arithmetic with a series accepts."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def validate_bounds(name: str, bounds) -> Bounds:
    """``bounds`` of column ``name`` as finite floats ``(lower, upper)``; raises ValueError otherwise."""
    try:
        if isinstance(bounds, (str, bytes)) or np.ndim(bounds[0]) or np.ndim(bounds[1]):
            raise TypeError
        lower, upper = (float(bounds[0]), float(bounds[1]))
    except (TypeError, ValueError, IndexError, KeyError, OverflowError):
        raise ValueError(f"metadata for {name!r} must be (lower, upper) numbers or a list of categories.") from None
    if not (math.isfinite(lower) and math.isfinite(upper)) or lower > upper:
        raise ValueError(f"metadata bounds for {name!r} must be finite with lower <= upper, got {bounds!r}.")
    return (lower, upper)
