"""``dp_accounting`` ``DpEvent``\\ s to and from JSON, as the privacy ledger stores them.

Only the events the ledger records are supported (no-op, Gaussian, Laplace, Poisson
sampling, self-composition and composition); :func:`canonical` gives the byte encoding
that the ledger's checksum and its grouping of identical events are computed on.
"""

from __future__ import annotations

import json
import math
import numbers
import operator

import dp_accounting

__all__ = ["canonical", "event_from_dict", "event_to_dict"]


def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _count(value) -> int:
    if isinstance(value, bool):
        raise ValueError(f"count must be an integer >= 0, got {value!r}")
    count = operator.index(value)
    if count < 0:
        raise ValueError(f"count must be an integer >= 0, got {value!r}")
    return count


def event_to_dict(event: dp_accounting.DpEvent) -> dict:
    """Serializes a supported ``DpEvent`` to a JSON-ready dict.

    Supported: ``NoOpDpEvent``, ``GaussianDpEvent``, ``LaplaceDpEvent``,
    ``PoissonSampledDpEvent``, ``SelfComposedDpEvent`` and ``ComposedDpEvent``.

    Raises:
        TypeError: ``event`` (or an event nested in it) is of another type.
    """
    kind = type(event)
    if kind is dp_accounting.NoOpDpEvent:
        return {"type": "NoOpDpEvent"}
    if kind in (dp_accounting.GaussianDpEvent, dp_accounting.LaplaceDpEvent):
        return {"type": kind.__name__, "noise_multiplier": _real("noise_multiplier", event.noise_multiplier)}
    if kind is dp_accounting.PoissonSampledDpEvent:
        return {
            "type": "PoissonSampledDpEvent",
            "sampling_probability": _real("sampling_probability", event.sampling_probability),
            "event": event_to_dict(event.event),
        }
    if kind is dp_accounting.SelfComposedDpEvent:
        return {"type": "SelfComposedDpEvent", "event": event_to_dict(event.event), "count": _count(event.count)}
    if kind is dp_accounting.ComposedDpEvent:
        return {"type": "ComposedDpEvent", "events": [event_to_dict(e) for e in event.events]}
    raise TypeError(
        f"event must be a NoOpDpEvent, GaussianDpEvent, LaplaceDpEvent, PoissonSampledDpEvent, "
        f"SelfComposedDpEvent or ComposedDpEvent from dp_accounting, got {kind.__name__}."
    )


def event_from_dict(data: dict) -> dp_accounting.DpEvent:
    """Rebuilds a ``DpEvent`` from :func:`event_to_dict`'s output.

    Raises:
        ValueError: ``data`` is not a well-formed serialized event.
    """
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError(f"an event must be an object with a 'type', got {data!r}")
    fields = {
        "NoOpDpEvent": {"type"},
        "GaussianDpEvent": {"type", "noise_multiplier"},
        "LaplaceDpEvent": {"type", "noise_multiplier"},
        "PoissonSampledDpEvent": {"type", "sampling_probability", "event"},
        "SelfComposedDpEvent": {"type", "event", "count"},
        "ComposedDpEvent": {"type", "events"},
    }
    kind = data["type"]
    if kind not in fields:
        raise ValueError(f"unknown event type {kind!r}")
    if set(data) != fields[kind]:
        raise ValueError(f"a {kind} must have exactly the fields {sorted(fields[kind])}, got {sorted(data)}")
    if kind == "NoOpDpEvent":
        return dp_accounting.NoOpDpEvent()
    if kind == "GaussianDpEvent":
        return dp_accounting.GaussianDpEvent(_real("noise_multiplier", data["noise_multiplier"]))
    if kind == "LaplaceDpEvent":
        return dp_accounting.LaplaceDpEvent(_real("noise_multiplier", data["noise_multiplier"]))
    if kind == "PoissonSampledDpEvent":
        q = _real("sampling_probability", data["sampling_probability"])
        return dp_accounting.PoissonSampledDpEvent(q, event_from_dict(data["event"]))
    if kind == "SelfComposedDpEvent":
        if not isinstance(data["count"], int):
            raise ValueError(f"count must be an integer, got {data['count']!r}")
        return dp_accounting.SelfComposedDpEvent(event_from_dict(data["event"]), _count(data["count"]))
    if not isinstance(data["events"], list):
        raise ValueError(f"events must be a list, got {data['events']!r}")
    return dp_accounting.ComposedDpEvent([event_from_dict(e) for e in data["events"]])


def canonical(obj) -> bytes:
    """The canonical JSON bytes of ``obj`` (sorted keys, no spaces, ASCII; NaN and infinity refused)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
