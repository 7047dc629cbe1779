"""The privacy ledger's JSON file: locking, checksummed atomic writes and strict parsing.

Every change to a ledger file happens under :func:`file_lock` (``fcntl.flock`` on
``path + ".lock"``) and replaces the file atomically (:func:`write`: temporary file, fsync,
rename, fsync of the directory). The file carries a sha256 checksum of its canonical JSON;
:func:`parse` refuses a corrupt or hand-edited file with a ValueError, never resetting it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator

from op_tensorflow import _checks, accounting
from op_tensorflow.event_json import canonical
from op_tensorflow.ledger_entry import validate_entry, validate_epsilon

FORMAT = "op_tensorflow.privacy_ledger"
FORMAT_VERSION = 1
_FILE_KEYS = {"format", "version", "epsilon", "delta", "accountant", "entries", "sha256"}


def validate_path(path) -> str | None:
    """The absolute path of a ledger file to be, in an existing directory; ``None`` stays ``None``."""
    if path is None:
        return None
    path = os.path.abspath(_checks.file_path("path", path, "ledger file"))
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise ValueError(f"path {path!r}: the directory {directory!r} does not exist; create it first.")
    if os.path.isdir(path):
        raise ValueError(f"path {path!r} is a directory; give the name of a ledger file inside it.")
    return path


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
    """Holds an exclusive ``fcntl.flock`` on ``path + ".lock"`` (shared by every process using ``path``)."""
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def decode_epsilon(value) -> float:
    """A stored epsilon (``"inf"`` for an unlimited budget) as a float."""
    return math.inf if value == "inf" else float(value)


def read(path: str) -> dict:
    """The verified contents of the ledger file at ``path`` (see :func:`parse`)."""
    with open(path, "rb") as f:
        return parse(path, f.read())


def parse(path: str, raw: bytes) -> dict:
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
        checksum = hashlib.sha256(canonical(body)).hexdigest()
    except ValueError as e:  # NaN or infinity in the numbers
        raise corrupt(str(e)) from None
    if checksum != state["sha256"]:
        raise corrupt("the sha256 checksum does not match the contents")
    try:
        if state["epsilon"] != "inf":
            validate_epsilon(state["epsilon"])
        _checks.open_unit("delta", state["delta"])
        _checks.one_of("accountant", state["accountant"], accounting.ACCOUNTANTS)
        if not isinstance(state["entries"], list):
            raise ValueError("entries is not a list")
        for entry in state["entries"]:
            validate_entry(entry)
    except (TypeError, ValueError) as e:
        raise corrupt(str(e)) from None
    return state


def write(path: str, *, epsilon: float, delta: float, accountant: str, entries: list[dict]) -> None:
    """Replaces the ledger file at ``path`` atomically. Call only while holding :func:`file_lock`."""
    body = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "epsilon": "inf" if math.isinf(epsilon) else epsilon,
        "delta": delta,
        "accountant": accountant,
        "entries": entries,
    }
    body["sha256"] = hashlib.sha256(canonical(body)).hexdigest()
    _remove_stale_temporaries(path)  # safe: every writer holds the file lock
    _atomic_write(path, json.dumps(body, indent=1, allow_nan=False).encode() + b"\n")


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
