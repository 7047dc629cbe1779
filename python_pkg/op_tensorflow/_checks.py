"""Argument validation shared by the public API.

Every check raises ``ValueError`` (or ``TypeError`` for a wrong kind of value) whose
message names the argument, the value received and the allowed range.
"""

import math
import numbers
import os
import sys
import warnings

import numpy as np

from op_tensorflow.errors import PrivacyWarning

MAX_INT = 2**53  # larger counts lose integer precision in float64 and overflow int64 in numpy


def positive_int(name: str, value) -> int:
    """Returns ``value`` as an int, or raises if it is not an integer in [1, 2**53]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be an integer >= 1, got {value!r} ({type(value).__name__}).")
    if not 1 <= value <= MAX_INT or not float(value).is_integer():
        raise ValueError(f"{name} must be an integer >= 1 (and at most 2**53), got {value!r}.")
    return int(value)


def _as_float(name: str, value, allowed: str) -> float:
    try:
        return float(value)
    except OverflowError:  # an int beyond float range
        raise ValueError(f"{name} must be {allowed}, got {value!r}.") from None


def positive_float(name: str, value) -> float:
    """Returns ``value`` as a float, or raises if it is not a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number > 0, got {value!r} ({type(value).__name__}).")
    value = _as_float(name, value, "a finite number > 0")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return value


def open_unit(name: str, value) -> float:
    """Returns ``value`` as a float, or raises if it is not in the open interval (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in (0, 1), got {value!r} ({type(value).__name__}).")
    value = _as_float(name, value, "in the open interval (0, 1)")
    if not 0 < value < 1:
        raise ValueError(f"{name} must be in the open interval (0, 1), got {value!r}.")
    return value


def one_of(name: str, value, allowed) -> str:
    """Returns ``value`` if it is one of ``allowed``, else raises naming the choices."""
    try:  # an array or Series is never a choice (its == compares elementwise)
        found = np.ndim(value) == 0 and value in allowed
    except (TypeError, ValueError):  # e.g. an unhashable value against a set of choices
        found = False
    if not found:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
    return value


FLOAT32_TINY, FLOAT32_MAX = 1.1754944e-38, 3.4028235e38  # the normal float32 range, where the graph computes


def clip_and_noise(l2_norm_clip: float, noise_multiplier: float) -> None:
    """Raises unless the clip bound and the noise std are normal float32 numbers (the graph is float32).

    Below the range the bound underflows to 0 (every gradient is zeroed); above it the noise is inf.
    """
    if not FLOAT32_TINY <= l2_norm_clip <= FLOAT32_MAX:
        raise ValueError(f"l2_norm_clip must be within float32's range [1.2e-38, 3.4e38], got {l2_norm_clip!r}.")
    stddev = l2_norm_clip * noise_multiplier
    if noise_multiplier > 0 and not FLOAT32_TINY <= stddev <= FLOAT32_MAX:
        raise ValueError(
            f"l2_norm_clip * noise_multiplier (the noise std, {stddev:g}) must be within float32's range "
            f"[1.2e-38, 3.4e38]; got l2_norm_clip={l2_norm_clip!r}, noise_multiplier={noise_multiplier!r}."
        )


def file_path(name: str, value, what: str) -> str:
    """Returns ``value`` as a str path, or raises if it is not a str/PathLike a file name can hold."""
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"{name} must be a str or os.PathLike naming the {what}, got {type(value).__name__}.")
    path = os.fspath(value)
    if not isinstance(path, str):  # a PathLike that returns bytes
        raise TypeError(f"{name} must be a str or os.PathLike naming the {what}, got a bytes path {path!r}.")
    if "\x00" in path or not path:
        raise ValueError(f"{name} {path!r} is not a file name (it is empty or holds a null byte).")
    return path


def batch_within_sample(batch_size: int, sample_size: int) -> None:
    if batch_size > sample_size:
        raise ValueError(
            f"batch_size must be <= sample_size ({sample_size}), got {batch_size}: "
            "the sampling rate batch_size / sample_size cannot exceed 1."
        )


def warn_if_weak_delta(delta: float, sample_size: int) -> None:
    """Warns when delta >= 1/n: such a guarantee allows releasing one whole row."""
    if delta >= 1.0 / sample_size:
        warnings.warn(
            f"target_delta={delta:g} is >= 1/sample_size={1.0 / sample_size:g}. A mechanism that "
            "publishes one random row in full satisfies (0, 1/n)-DP, so this delta permits "
            "releasing individual records; choose target_delta well below 1/sample_size "
            "(e.g. 1/(10*sample_size)).",
            PrivacyWarning,
            stacklevel=_caller_stacklevel(),
        )


def _caller_stacklevel() -> int:
    """The ``warnings`` stacklevel of the first frame outside this package (the user's call)."""
    package_dir = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package_dir):
        frame, level = frame.f_back, level + 1
    return level
