"""A privacy-budget ledger attached to a dataset.

A :class:`PrivacyBudget` holds an (epsilon, delta) budget and a ledger of the
``dp_accounting`` ``DpEvent``\\ s spent against it: DP-SGD training runs (Poisson-sampled
Gaussian steps), noisy aggregates (Laplace or Gaussian), and so on. The epsilon spent is
always the epsilon of the *composition* of every recorded event at the ledger's delta, as
computed by ``dp_accounting`` (RDP or PLD accountant), which is tighter than adding up
per-event epsilons. A charge that would exceed the budget is refused before anything is
recorded.

With ``path``, the ledger lives in a JSON file. Every change locks ``path + ".lock"``
(``fcntl.flock``), reloads the file, checks the budget, and replaces the file atomically,
so processes sharing a ledger never overspend it together. The file carries a sha256
checksum; a corrupt or hand-edited ledger is refused, never reset to zero.

The ledger records events, short descriptions and timestamps only, never data values.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import datetime
import fcntl
import hashlib
import json
import math
import numbers
import operator
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator

import dp_accounting

from op_tensorflow import _checks, accounting
from op_tensorflow.errors import BudgetExceededError

__all__ = ["LedgerEntry", "PrivacyBudget", "Reservation", "as_budget", "event_from_dict", "event_to_dict"]

FORMAT = "op_tensorflow.privacy_ledger"
FORMAT_VERSION = 1
MAX_DESCRIPTION_LENGTH = 500

COMMITTED = "committed"
RESERVED = "reserved"
_STATUSES = (COMMITTED, RESERVED)
_ENTRY_KEYS = {"id", "status", "description", "timestamp", "committed_at", "event", "reserved_event"}
_FILE_KEYS = {"format", "version", "epsilon", "delta", "accountant", "entries", "sha256"}


# --- DpEvent <-> JSON -------------------------------------------------------------------


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


# --- records ----------------------------------------------------------------------------


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


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _validate_epsilon(epsilon) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise TypeError(
            f"epsilon must be a number > 0 (math.inf for an unlimited budget), got {epsilon!r} "
            f"({type(epsilon).__name__})."
        )
    epsilon = float(epsilon)
    if math.isnan(epsilon) or epsilon <= 0:
        raise ValueError(f"epsilon must be a number > 0 (math.inf for an unlimited budget), got {epsilon!r}.")
    return epsilon


def _validate_path(path) -> str | None:
    if path is None:
        return None
    path = os.path.abspath(_checks.file_path("path", path, "ledger file"))
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise ValueError(f"path {path!r}: the directory {directory!r} does not exist; create it first.")
    if os.path.isdir(path):
        raise ValueError(f"path {path!r} is a directory; give the name of a ledger file inside it.")
    return path


def _validate_description(description) -> str:
    if not isinstance(description, str):
        raise TypeError(f"description must be a str, got {type(description).__name__}.")
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise ValueError(
            f"description must be at most {MAX_DESCRIPTION_LENGTH} characters (a short label, never data "
            f"values), got {len(description)}."
        )
    return description


# --- the ledger -------------------------------------------------------------------------


class PrivacyBudget:
    """An (epsilon, delta) privacy budget and the ledger of what was spent against it.

    Args:
        epsilon: The budget's epsilon, > 0; ``math.inf`` means unlimited (charges are
            still recorded).
        delta: The delta at which everything is accounted, in (0, 1).
        path: Optional JSON file holding the ledger. If it exists it is loaded (its
            epsilon, delta and accountant must equal the arguments); otherwise it is
            created. Its directory must exist.
        accountant: ``"rdp"`` or ``"pld"``: the ``dp_accounting`` accountant composing the
            recorded events.

    Raises:
        ValueError: An argument is out of range, the directory of ``path`` is missing, or
            the file at ``path`` is corrupt or holds a different budget.
        TypeError: An argument has the wrong type.
    """

    def __init__(self, epsilon: float, delta: float, *, path: str | os.PathLike | None = None, accountant: str = "rdp"):
        self._epsilon = _validate_epsilon(epsilon)
        self._delta = _checks.open_unit("delta", delta)
        self._accountant = _checks.one_of("accountant", accountant, accounting.ACCOUNTANTS)
        self._path = _validate_path(path)
        self._thread_lock = threading.Lock()
        self._memory: list[dict] = []
        if self._path is not None:
            with self._locked():
                if os.path.exists(self._path):
                    self._read_entries()
                else:
                    self._write_entries([])

    @classmethod
    def load(cls, path: str | os.PathLike) -> PrivacyBudget:
        """Opens an existing ledger file, taking epsilon, delta and accountant from it.

        Raises:
            ValueError: The file does not exist or is corrupt.
        """
        checked = _validate_path(path)
        if not os.path.exists(checked):
            raise ValueError(f"path {checked!r}: no ledger file there.")
        with open(checked, "rb") as f:
            state = _parse(checked, f.read())
        return cls(_decode_epsilon(state["epsilon"]), state["delta"], path=checked, accountant=state["accountant"])

    # -- properties

    @property
    def epsilon(self) -> float:
        """The budget's epsilon (``math.inf`` if unlimited)."""
        return self._epsilon

    @property
    def delta(self) -> float:
        """The delta at which all events are accounted."""
        return self._delta

    @property
    def accountant(self) -> str:
        """``"rdp"`` or ``"pld"``."""
        return self._accountant

    @property
    def path(self) -> str | None:
        """Absolute path of the ledger file, or ``None`` for an in-memory ledger."""
        return self._path

    @property
    def entries(self) -> list[LedgerEntry]:
        """Read-only copies of the ledger's records, oldest first."""
        return [_to_record(e) for e in self._read_entries()]

    # -- queries

    def spent(self) -> float:
        """Epsilon at ``delta`` of all recorded events (committed and reserved), composed."""
        return self._epsilon_of(self._read_entries())

    def remaining(self) -> float:
        """``epsilon - spent()``, never negative; ``math.inf`` for an unlimited budget."""
        if math.isinf(self._epsilon):
            return math.inf
        return max(self._epsilon - self.spent(), 0.0)

    def epsilon_after(self, event: dp_accounting.DpEvent) -> float:
        """What ``spent()`` would be after recording ``event``."""
        serialized = self._check_event(event)
        return self._epsilon_of(self._read_entries(), extra=serialized)

    def can_afford(self, event: dp_accounting.DpEvent) -> bool:
        """Whether ``event`` can be charged without exceeding the budget."""
        if math.isinf(self._epsilon):
            self._check_event(event)
            return True
        return self.epsilon_after(event) <= self._epsilon

    def report(self) -> dict:
        """A summary: epsilon, delta, accountant, spent, remaining, n_entries, n_reserved."""
        entries = self._read_entries()
        spent = self._epsilon_of(entries)
        remaining = math.inf if math.isinf(self._epsilon) else max(self._epsilon - spent, 0.0)
        return {
            "epsilon": self._epsilon,
            "delta": self._delta,
            "accountant": self._accountant,
            "spent": spent,
            "remaining": remaining,
            "n_entries": len(entries),
            "n_reserved": sum(e["status"] == RESERVED for e in entries),
        }

    def __repr__(self) -> str:
        try:
            spent = f"{self.spent():.6g}"
            remaining = f"{self.remaining():.6g}"
        except (OSError, ValueError) as e:  # keep repr usable on an unreadable ledger
            spent = remaining = f"<unreadable: {type(e).__name__}>"
        return (
            f"PrivacyBudget(epsilon={self._epsilon:g}, delta={self._delta:g}, spent={spent}, "
            f"remaining={remaining}, accountant={self._accountant!r})"
        )

    # -- changes

    def charge(self, event: dp_accounting.DpEvent, description: str = "") -> None:
        """Records ``event`` as committed, if the budget allows it.

        Raises:
            BudgetExceededError: Recording ``event`` would exceed the budget; nothing changed.
            TypeError: ``event`` is not a supported ``DpEvent`` or ``description`` not a str.
        """
        self._add(event, description, COMMITTED)

    def reserve(self, event: dp_accounting.DpEvent, description: str = "") -> Reservation:
        """Records ``event`` as reserved (it counts fully in ``spent()``) before the work runs.

        Use the returned :class:`Reservation` as a context manager around the work: it is
        committed when the block ends, also on an exception (the work may have partly
        run). A reservation left by a killed process stays in the ledger and keeps
        counting.

        Raises:
            BudgetExceededError: Reserving ``event`` would exceed the budget; nothing changed.
        """
        entry = self._add(event, description, RESERVED)
        return Reservation(self, entry["id"], event, entry["description"])

    # -- internals

    def _check_event(self, event) -> dict:
        if not isinstance(event, dp_accounting.DpEvent):
            raise TypeError(f"event must be a dp_accounting DpEvent, got {type(event).__name__}.")
        serialized = event_to_dict(event)
        if not accounting.make_accountant(self._accountant).supports(event):
            raise TypeError(f"event {event!r} is not supported by the {self._accountant!r} accountant.")
        return serialized

    def _epsilon_of(self, entries: list[dict], extra: dict | None = None) -> float:
        serialized = [e["event"] for e in entries] + ([extra] if extra is not None else [])
        if not serialized:
            return 0.0
        # Identical events compose as one self-composed event: the cost of a ledger with
        # thousands of repeated aggregates stays that of its few distinct events.
        counts = collections.Counter(_canonical(e) for e in serialized)
        first = {_canonical(e): e for e in serialized}
        events = [
            dp_accounting.SelfComposedDpEvent(event_from_dict(first[key]), count)
            if count > 1
            else event_from_dict(first[key])
            for key, count in counts.items()
        ]
        return accounting.epsilon_for_event(dp_accounting.ComposedDpEvent(events), self._delta, self._accountant)

    def _refuse_if_over(self, entries: list[dict], event: dict, *, replacing: int | None = None) -> None:
        """Raises ``BudgetExceededError`` if ``entries`` plus ``event`` would exceed the budget.

        With ``replacing``, ``event`` takes the place of ``entries[replacing]``.
        """
        if math.isinf(self._epsilon):
            return
        others = [e for i, e in enumerate(entries) if i != replacing]
        after = self._epsilon_of(others, extra=event)
        if after <= self._epsilon:
            return
        spent = self._epsilon_of(entries)
        requested = self._epsilon_of([], extra=event)
        raise BudgetExceededError(
            f"refused: this would exceed the privacy budget. Requested epsilon {requested:.6g} on its own "
            f"(spent would become {after:.6g}); spent {spent:.6g}, remaining {max(self._epsilon - spent, 0.0):.6g} "
            f"of the budget epsilon={self._epsilon:g} at delta={self._delta:g} ({self._accountant} accountant). "
            "Nothing was charged."
        )

    def _add(self, event, description, status: str) -> dict:
        serialized = self._check_event(event)
        description = _validate_description(description)
        with self._locked():
            entries = self._read_entries()
            self._refuse_if_over(entries, serialized)
            now = _now()
            entry = {
                "id": uuid.uuid4().hex,
                "status": status,
                "description": description,
                "timestamp": now,
                "committed_at": now if status == COMMITTED else None,
                "event": serialized,
                "reserved_event": None,
            }
            entries.append(entry)
            self._write_entries(entries)
        return entry

    def _commit(self, entry_id: str, event) -> None:
        serialized = None if event is None else self._check_event(event)
        with self._locked():
            entries = self._read_entries()
            index = self._find(entries, entry_id)
            entry = entries[index] = copy.deepcopy(entries[index])
            if serialized is not None and serialized != entry["event"]:
                self._refuse_if_over(entries, serialized, replacing=index)
                entry["reserved_event"] = entry["event"]
                entry["event"] = serialized
            entry["status"] = COMMITTED
            entry["committed_at"] = _now()
            self._write_entries(entries)

    def _cancel(self, entry_id: str) -> None:
        with self._locked():
            entries = self._read_entries()
            del entries[self._find(entries, entry_id)]
            self._write_entries(entries)

    @staticmethod
    def _find(entries: list[dict], entry_id: str) -> int:
        for i, e in enumerate(entries):
            if e["id"] == entry_id:
                if e["status"] != RESERVED:
                    raise RuntimeError(f"reservation {entry_id} is already {e['status']} in the ledger.")
                return i
        raise RuntimeError(f"reservation {entry_id} is no longer in the ledger (was it cancelled elsewhere?).")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive lock: threads of this process, and (with a path) other processes."""
        with self._thread_lock:
            if self._path is None:
                yield
                return
            fd = os.open(self._path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def _read_entries(self) -> list[dict]:
        """The current entries (a private copy): from disk with a path, else from memory."""
        if self._path is None:
            return list(self._memory)  # stored entries are never mutated: changes copy them first
        with open(self._path, "rb") as f:
            state = _parse(self._path, f.read())
        mismatches = [
            f"{name}={theirs!r} in the file but {ours!r} was given"
            for name, theirs, ours in (
                ("epsilon", _decode_epsilon(state["epsilon"]), self._epsilon),
                ("delta", state["delta"], self._delta),
                ("accountant", state["accountant"], self._accountant),
            )
            if theirs != ours
        ]
        if mismatches:
            raise ValueError(
                f"ledger file {self._path!r} holds a different budget: {'; '.join(mismatches)}. Open it with its "
                "own settings (PrivacyBudget.load(path)) or use another path; a ledger's budget is never overridden."
            )
        return state["entries"]

    def _write_entries(self, entries: list[dict]) -> None:
        if self._path is None:
            self._memory = list(entries)
            return
        body = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "epsilon": "inf" if math.isinf(self._epsilon) else self._epsilon,
            "delta": self._delta,
            "accountant": self._accountant,
            "entries": entries,
        }
        body["sha256"] = hashlib.sha256(_canonical(body)).hexdigest()
        _remove_stale_temporaries(self._path)  # safe: every writer holds the file lock
        _atomic_write(self._path, json.dumps(body, indent=1, allow_nan=False).encode() + b"\n")


def _decode_epsilon(value) -> float:
    return math.inf if value == "inf" else float(value)


def _parse(path: str, raw: bytes) -> dict:
    """Parses and verifies a ledger file; raises the 'corrupt' ValueError on any problem."""

    def corrupt(reason: str) -> ValueError:
        return ValueError(
            f"ledger file {path!r} is corrupt or was edited by hand; refusing to load it: {reason}. "
            "Restore it from backup (a ledger is never reset to zero)."
        )

    try:
        state = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise corrupt(f"not valid JSON ({e})") from None
    if not isinstance(state, dict):
        raise corrupt("the top level is not a JSON object")
    if set(state) != _FILE_KEYS:
        raise corrupt(f"expected the fields {sorted(_FILE_KEYS)}, found {sorted(state)}")
    if state["format"] != FORMAT or state["version"] != FORMAT_VERSION:
        raise corrupt(f"unknown format {state['format']!r} version {state['version']!r}")
    body = {k: v for k, v in state.items() if k != "sha256"}
    try:
        checksum = hashlib.sha256(_canonical(body)).hexdigest()
    except ValueError as e:  # NaN or infinity in the numbers
        raise corrupt(str(e)) from None
    if checksum != state["sha256"]:
        raise corrupt("the sha256 checksum does not match the contents")
    try:
        if state["epsilon"] != "inf":
            _validate_epsilon(state["epsilon"])
        _checks.open_unit("delta", state["delta"])
        _checks.one_of("accountant", state["accountant"], accounting.ACCOUNTANTS)
        if not isinstance(state["entries"], list):
            raise ValueError("entries is not a list")
        for entry in state["entries"]:
            _validate_entry(entry)
    except (TypeError, ValueError) as e:
        raise corrupt(str(e)) from None
    return state


def _validate_entry(entry) -> None:
    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        raise ValueError(f"an entry must have exactly the fields {sorted(_ENTRY_KEYS)}, got {entry!r}")
    if entry["status"] not in _STATUSES:
        raise ValueError(f"unknown entry status {entry['status']!r}")
    for key in ("id", "description", "timestamp"):
        if not isinstance(entry[key], str):
            raise ValueError(f"entry field {key} must be a string")
    if not (entry["committed_at"] is None or isinstance(entry["committed_at"], str)):
        raise ValueError("entry field committed_at must be a string or null")
    event_from_dict(entry["event"])
    if entry["reserved_event"] is not None:
        event_from_dict(entry["reserved_event"])


def _to_record(entry: dict) -> LedgerEntry:
    return LedgerEntry(**copy.deepcopy(entry))


def _remove_stale_temporaries(path: str) -> None:
    """Deletes ``_atomic_write`` temporaries of ``path`` left by a process killed mid-write.

    Call only while holding the ledger's file lock: then no other write is in progress.
    """
    directory, name = os.path.split(path)
    for entry in os.listdir(directory):
        middle = entry[len(name) + 1 : -len(".tmp")]
        if entry.startswith(name + ".") and entry.endswith(".tmp") and len(middle) == 8 and "." not in middle:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, entry))


def _atomic_write(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically and durably (temp file, fsync, rename, fsync dir)."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, os.stat(path).st_mode & 0o777)  # keep an existing file's permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Reservation:
    """Budget reserved for work about to run; returned by :meth:`PrivacyBudget.reserve`.

    As a context manager it commits when the block ends, normally or by an exception (a
    crash never under-reports). Call :meth:`commit` with a smaller event inside the block
    if less ran than reserved (e.g. early stopping), or :meth:`cancel` only when it is
    certain that no step ran.
    """

    def __init__(self, budget: PrivacyBudget, entry_id: str, event: dp_accounting.DpEvent, description: str):
        self._budget = budget
        self._id = entry_id
        self._event = event
        self._description = description
        self._status = RESERVED

    @property
    def id(self) -> str:
        """The ledger entry's id."""
        return self._id

    @property
    def event(self) -> dp_accounting.DpEvent:
        """The event that counts: the reserved one, or the replacement given to ``commit``."""
        return self._event

    @property
    def description(self) -> str:
        return self._description

    @property
    def status(self) -> str:
        """``"reserved"``, ``"committed"`` or ``"cancelled"``."""
        return self._status

    def commit(self, event: dp_accounting.DpEvent | None = None) -> None:
        """Marks the reservation committed.

        Args:
            event: What really ran, if it differs from the reservation (e.g. fewer steps
                after early stopping). It replaces the reserved event in ``spent()``; the
                entry keeps the reserved event as ``reserved_event``.

        Raises:
            RuntimeError: Already committed or cancelled.
            BudgetExceededError: The replacement does not fit in the budget; the
                reservation is left as it was (still counting).
        """
        self._require_reserved("commit")
        self._budget._commit(self._id, event)
        if event is not None:
            self._event = event
        self._status = COMMITTED

    def cancel(self) -> None:
        """Removes the reservation. Only when it is certain that no step of the work ran.

        Raises:
            RuntimeError: Already committed or cancelled.
        """
        self._require_reserved("cancel")
        self._budget._cancel(self._id)
        self._status = "cancelled"

    def _require_reserved(self, action: str) -> None:
        if self._status != RESERVED:
            raise RuntimeError(f"cannot {action} this reservation: it is already {self._status}.")

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._status == RESERVED:
            self.commit()

    def __repr__(self) -> str:
        return f"Reservation(status={self._status!r}, description={self._description!r}, event={self._event!r})"


def as_budget(value, *, default_delta: float) -> PrivacyBudget:
    """Normalizes a ``budget`` argument.

    Args:
        value: ``None`` (an unlimited budget that still records every charge), a
            :class:`PrivacyBudget` (returned as is) or an ``(epsilon, delta)`` pair.
        default_delta: The delta of the unlimited budget made for ``None``.

    Raises:
        TypeError: ``value`` is of another kind.
    """
    if value is None:
        return PrivacyBudget(math.inf, default_delta)
    if isinstance(value, PrivacyBudget):
        return value
    if isinstance(value, tuple | list) and len(value) == 2:
        return PrivacyBudget(value[0], value[1])
    raise TypeError(
        f"budget must be None, a PrivacyBudget or an (epsilon, delta) pair, got {value!r} ({type(value).__name__})."
    )
