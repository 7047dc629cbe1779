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

The pieces live in their own modules, re-exported here: :mod:`op_tensorflow.event_json`
(``DpEvent`` <-> JSON), :mod:`op_tensorflow.ledger_entry` (:class:`LedgerEntry` and the
checks of stored entries), :mod:`op_tensorflow.ledger_file` (the file: locking, atomic
writes, parsing) and :mod:`op_tensorflow.reservation` (:class:`Reservation`).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import math
import os
import threading
import uuid
from collections.abc import Iterator

import dp_accounting

from op_tensorflow import _checks, accounting, ledger_file
from op_tensorflow.errors import BudgetExceededError
from op_tensorflow.event_json import canonical, event_from_dict, event_to_dict
from op_tensorflow.ledger_entry import (
    COMMITTED,
    RESERVED,
    LedgerEntry,
    to_record,
    utc_now,
    validate_description,
    validate_epsilon,
)
from op_tensorflow.reservation import Reservation

__all__ = ["LedgerEntry", "PrivacyBudget", "Reservation", "as_budget", "event_from_dict", "event_to_dict"]


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
        self._epsilon = validate_epsilon(epsilon)
        self._delta = _checks.open_unit("delta", delta)
        self._accountant = _checks.one_of("accountant", accountant, accounting.ACCOUNTANTS)
        self._path = ledger_file.validate_path(path)
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
        checked = ledger_file.validate_path(path)
        if not os.path.exists(checked):
            raise ValueError(f"path {checked!r}: no ledger file there.")
        state = ledger_file.read(checked)
        return cls(
            ledger_file.decode_epsilon(state["epsilon"]), state["delta"], path=checked, accountant=state["accountant"]
        )

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
        return [to_record(e) for e in self._read_entries()]

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
        counts = collections.Counter(canonical(e) for e in serialized)
        first = {canonical(e): e for e in serialized}
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
        description = validate_description(description)
        with self._locked():
            entries = self._read_entries()
            self._refuse_if_over(entries, serialized)
            now = utc_now()
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
            entry["committed_at"] = utc_now()
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
            with ledger_file.file_lock(self._path):
                yield

    def _read_entries(self) -> list[dict]:
        """The current entries (a private copy): from disk with a path, else from memory."""
        if self._path is None:
            return list(self._memory)  # stored entries are never mutated: changes copy them first
        state = ledger_file.read(self._path)
        mismatches = [
            f"{name}={theirs!r} in the file but {ours!r} was given"
            for name, theirs, ours in (
                ("epsilon", ledger_file.decode_epsilon(state["epsilon"]), self._epsilon),
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
        ledger_file.write(
            self._path, epsilon=self._epsilon, delta=self._delta, accountant=self._accountant, entries=entries
        )


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
