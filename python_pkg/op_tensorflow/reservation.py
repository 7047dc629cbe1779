"""A :class:`Reservation` of privacy budget for work about to run (see ``PrivacyBudget.reserve``)."""

from __future__ import annotations

from typing import Protocol

import dp_accounting

from op_tensorflow.ledger_entry import COMMITTED, RESERVED

__all__ = ["Reservation"]


class _Ledger(Protocol):
    """What a reservation needs of its ``PrivacyBudget``: committing or cancelling its entry."""

    def _commit(self, entry_id: str, event: dp_accounting.DpEvent | None) -> None: ...

    def _cancel(self, entry_id: str) -> None: ...


class Reservation:
    """Budget reserved for work about to run; returned by :meth:`PrivacyBudget.reserve`.

    As a context manager it commits when the block ends, normally or by an exception (a
    crash never under-reports). Call :meth:`commit` with a smaller event inside the block
    if less ran than reserved (e.g. early stopping), or :meth:`cancel` only when it is
    certain that no step ran.
    """

    def __init__(self, budget: _Ledger, entry_id: str, event: dp_accounting.DpEvent, description: str):
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


Reservation.__module__ = "op_tensorflow.budget"  # its public home: reprs, pickles and R class names say so
