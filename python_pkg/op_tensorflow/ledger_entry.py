"""Ledger records: :class:`LedgerEntry` and the checks of what a privacy ledger holds.

A ledger stores its entries as plain dicts (``ENTRY_KEYS``); :func:`to_record` turns one
into the read-only :class:`LedgerEntry` that ``PrivacyBudget.entries`` hands out.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import math
import numbers

from op_tensorflow.event_json import event_from_dict

__all__ = ["LedgerEntry"]

MAX_DESCRIPTION_LENGTH = 500

COMMITTED = "committed"
RESERVED = "reserved"
STATUSES = (COMMITTED, RESERVED)
ENTRY_KEYS = {"id", "status", "description", "timestamp", "committed_at", "event", "reserved_event"}


@dataclasses.dataclass(frozen=True)
class LedgerEntry:
    """One read-only ledger record.

    Attributes:
        id: Unique id of the entry.
        status: ``"committed"`` or ``"reserved"`` (both count fully in ``spent()``).
        description: The short description given when charging.
        timestamp: When the entry was charged or reserved (ISO 8601, UTC).
        committed_at: When it was committed, or ``None`` while reserved.
        event: The serialized ``DpEvent`` that counts (see :func:`event_to_dict`).
        reserved_event: The event originally reserved, when ``commit`` replaced it by
            what really ran; ``None`` otherwise.
    """

    id: str
    status: str
    description: str
    timestamp: str
    committed_at: str | None
    event: dict
    reserved_event: dict | None = None

    def to_dict(self) -> dict:
        """The record as a plain dict (a copy), e.g. for pandas or R."""
        return copy.deepcopy(dataclasses.asdict(self))


LedgerEntry.__module__ = "op_tensorflow.budget"  # its public home: reprs, pickles and R class names say so


def utc_now() -> str:
    """The current UTC time in ISO 8601, to the millisecond."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def to_record(entry: dict) -> LedgerEntry:
    """A stored entry as a read-only :class:`LedgerEntry` (a deep copy)."""
    return LedgerEntry(**copy.deepcopy(entry))


def validate_epsilon(epsilon) -> float:
    """``epsilon`` as a float > 0 (``math.inf`` allowed); raises TypeError or ValueError otherwise."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise TypeError(
            f"epsilon must be a number > 0 (math.inf for an unlimited budget), got {epsilon!r} "
            f"({type(epsilon).__name__})."
        )
    epsilon = float(epsilon)
    if math.isnan(epsilon) or epsilon <= 0:
        raise ValueError(f"epsilon must be a number > 0 (math.inf for an unlimited budget), got {epsilon!r}.")
    return epsilon


def validate_description(description) -> str:
    """``description`` if it is a str of at most ``MAX_DESCRIPTION_LENGTH`` characters."""
    if not isinstance(description, str):
        raise TypeError(f"description must be a str, got {type(description).__name__}.")
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise ValueError(
            f"description must be at most {MAX_DESCRIPTION_LENGTH} characters (a short label, never data "
            f"values), got {len(description)}."
        )
    return description


def validate_entry(entry) -> None:
    """Raises ValueError unless ``entry`` is a well-formed stored entry (a dict of ``ENTRY_KEYS``)."""
    if not isinstance(entry, dict) or set(entry) != ENTRY_KEYS:
        raise ValueError(f"an entry must have exactly the fields {sorted(ENTRY_KEYS)}, got {entry!r}")
    if entry["status"] not in STATUSES:
        raise ValueError(f"unknown entry status {entry['status']!r}")
    for key in ("id", "description", "timestamp"):
        if not isinstance(entry[key], str):
            raise ValueError(f"entry field {key} must be a string")
    if not (entry["committed_at"] is None or isinstance(entry["committed_at"], str)):
        raise ValueError("entry field committed_at must be a string or null")
    event_from_dict(entry["event"])
    if entry["reserved_event"] is not None:
        event_from_dict(entry["reserved_event"])
