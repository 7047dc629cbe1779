"""Host-side agreement between the workers of a multi-worker run, before and during ``fit``.

A ``MultiWorkerMirroredStrategy`` run needs every worker to train the same run on the same data and only
the chief to spend budget. Before anything is spent:

1. :func:`agree_on_run`: each worker hashes its private rows and, separately, the run's settings (sample
   size, batch size, l2_norm_clip, noise_multiplier, epochs, steps_per_execution, the model's architecture,
   loss and optimizer). Only the chief's hashes travel; each worker compares them with its own, then all
   learn whether every worker agreed. A difference is refused with ``ValueError`` on every worker: a worker
   clipping at another bound, or sampling at another rate, would break the guarantee silently, and one
   running other epochs would fail after the reservation.
2. :func:`sampling_seed`: the chief's sampling seed (every replica must draw the same global sample). The
   noise seed is not sent: only the chief's replicas draw noise.
3. :func:`reserve_for_run` / :func:`announce_reservation`: the chief alone reserves on its ledger and
   tells the workers whether it could; workers never write a ledger.

During the run, :func:`chief_stops` makes the chief's early-stopping decision everyone's, and
:class:`reported_failure` turns a collective's failure (a worker died) into a
:class:`~op_tensorflow.distributed.DistributedTrainingError`. On one machine every function here is a
no-op or returns its input. Every message is a few int64s: hashes, a seed, flags.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from op_tensorflow.distributed import DistributedTrainingError, Run, is_replica

__all__ = [
    "WorkerReservation",
    "agree_on_run",
    "announce_reservation",
    "broadcast_from_chief",
    "chief_stops",
    "reported_failure",
    "reserve_for_run",
    "sampling_seed",
]


def broadcast_from_chief(run: Run, values) -> np.ndarray:
    """The chief's int64 ``values`` on every worker (an all-reduce in which only replica 0 is non-zero)."""
    values = np.asarray(values, dtype=np.int64)
    if not run.multi_worker:
        return values
    return _collective(run, "from_chief", values, "while the workers agreed on the run")


def _per_worker_sum(run: Run, values, during: str) -> np.ndarray:
    """The sum over the workers of one int64 vector each."""
    return _collective(run, "per_worker_sum", np.asarray(values, dtype=np.int64), during)


def _collective(run: Run, name: str, values: np.ndarray, during: str) -> np.ndarray:
    with reported_failure(run, during):
        out = run.strategy.run(_collectives(run)[name], args=(tf.constant(values),))
        return run.strategy.experimental_local_results(out)[0].numpy()


_COLLECTIVES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _collectives(run: Run) -> dict:
    """A strategy's host-side collectives, traced once (a new tf.function per call would retrace)."""
    strategy = run.strategy
    if strategy not in _COLLECTIVES:
        spec = [tf.TensorSpec([None], tf.int64)]
        local_replicas = run.local_replicas

        def all_reduce(mine):
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, mine)

        @tf.function(input_signature=spec)
        def from_chief(local):
            return all_reduce(tf.where(tf.cast(is_replica(0), tf.bool), local, tf.zeros_like(local)))

        @tf.function(input_signature=spec)
        def per_worker_sum(local):  # each worker's value counted once, on its first local replica
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            return all_reduce(tf.where(tf.equal(replica % local_replicas, 0), local, tf.zeros_like(local)))

        _COLLECTIVES[strategy] = {"from_chief": from_chief, "per_worker_sum": per_worker_sum}
    return _COLLECTIVES[strategy]


def _digest(parts) -> np.ndarray:
    """Two 63-bit halves of a SHA-256 (non-negative, so sums of them cannot overflow)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
    return np.frombuffer(digest.digest()[:16], dtype=np.int64) >> 1


def run_settings(dp_model, loader, epochs: int, steps_per_execution: int) -> dict:
    """What every worker's run must share (besides the rows): DP parameters, sampling, schedule, model."""
    optimizer = dp_model._optimizer
    return {
        "sample_size": loader.sample_size,
        "batch_size": loader.batch_size,
        "l2_norm_clip": dp_model.l2_norm_clip,
        "noise_multiplier": dp_model.noise_multiplier,
        "epochs": epochs,
        "steps_per_execution": steps_per_execution,
        "model": _described(dp_model._model.to_json, lambda: _structure(dp_model._model)),
        "loss": _name(dp_model._loss_fn),
        "optimizer": [
            type(optimizer).__name__,
            _described(lambda: json.dumps(optimizer.get_config(), sort_keys=True, default=repr), lambda: ""),
        ],
    }


def _described(describe, fallback) -> str:
    """``describe()``, or ``fallback()`` for objects Keras cannot serialize (e.g. custom layers without a config)."""
    try:
        return describe()
    except (NotImplementedError, TypeError, ValueError):
        return fallback()


def _name(obj) -> str:
    """An object's name, never its repr (which may hold a memory address that differs between workers)."""
    return str(getattr(obj, "name", None) or getattr(obj, "__name__", None) or type(obj).__name__)


def _structure(model) -> str:
    """A model's layer classes, names and weight shapes (for models whose config cannot be serialized)."""
    return repr([(type(layer).__name__, layer.name, [tuple(w.shape) for w in layer.weights]) for layer in model.layers])


def agree_on_run(run: Run, x_rows: np.ndarray, y_rows: np.ndarray, settings: Callable[[], dict]) -> None:
    """Refuses, before anything is spent, a multi-worker run whose workers hold other rows or ``settings()``."""
    if not run.multi_worker:
        return
    settings = settings()
    data = _digest([(x_rows.shape, x_rows.dtype, y_rows.shape, y_rows.dtype), x_rows.tobytes(), y_rows.tobytes()])
    config = _digest([json.dumps(settings, sort_keys=True, default=repr)])
    mine = np.concatenate([data, config])
    chiefs = broadcast_from_chief(run, mine)
    differ = np.array([not np.array_equal(chiefs[:2], data), not np.array_equal(chiefs[2:], config)], np.int64)
    data_differ, config_differ = _per_worker_sum(run, differ, "while the workers compared their runs")
    problems = []
    if data_differ:
        problems.append(
            "hold different private data (rows or their order differ from the chief's): every worker must open "
            "the same private source, built the same way (same rows, same order, same columns)"
        )
    if config_differ:
        problems.append(
            "run different settings (one of: sample size, batch_size, l2_norm_clip, noise_multiplier, epochs, "
            "steps_per_execution, the model's architecture, the loss, the optimizer): run the same script with "
            "the same arguments on every worker"
        )
    if problems:
        mine_too = "; this worker differs from the chief" if differ.any() else ""
        raise ValueError(f"the workers of this {run.describe()} {' and '.join(problems)}{mine_too}. Nothing was spent.")


def sampling_seed(run: Run, seed: np.ndarray) -> np.ndarray:
    """The chief's sampling seed on every worker (all replicas draw the same global Poisson sample)."""
    return broadcast_from_chief(run, seed)


def reserve_for_run(run: Run, ledger, event, description: str):
    """The run's reservation: on the chief (or one machine) the ledger's; on other workers a stand-in.

    If the chief's reservation is refused, it tells the workers (which then raise, having spent nothing)
    before raising itself; if it succeeds, the workers hear so from :func:`announce_reservation`, the first
    thing the chief does inside the reservation.
    """
    if not run.multi_worker:
        return ledger.reserve(event, description)
    if run.is_chief:
        try:
            return ledger.reserve(event, description)
        except BaseException:
            broadcast_from_chief(run, [0])
            raise
    if not broadcast_from_chief(run, [0])[0]:
        raise DistributedTrainingError(
            f"the chief of this {run.describe()} did not reserve the run on its ledger (see the chief's error, "
            "e.g. BudgetExceededError); nothing was trained, nothing was spent."
        )
    return WorkerReservation(event)


def announce_reservation(run: Run) -> None:
    """The chief's side of :func:`reserve_for_run` once its reservation is held (a no-op elsewhere)."""
    if run.multi_worker and run.is_chief:
        broadcast_from_chief(run, [1])


def chief_stops(run: Run, stop: bool) -> bool:
    """The chief's early-stopping decision after an epoch, on every worker (all must run the same steps)."""
    return bool(broadcast_from_chief(run, [int(bool(stop))])[0]) if run.multi_worker else bool(stop)


class WorkerReservation:
    """What a non-chief worker holds instead of a ledger reservation: the event, never written anywhere."""

    def __init__(self, event):
        self.event = event

    def commit(self, event=None) -> None:
        if event is not None:
            self.event = event

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


class reported_failure:
    """Turns a collective's failure (a worker died or hangs) into a :class:`DistributedTrainingError`."""

    def __init__(self, run: Run, during: str):
        self._run, self._during = run, during

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, tf.errors.OpError) and self._run.multi_worker:
            raise DistributedTrainingError(worker_failure_message(self._run, self._during, exc)) from exc
        return False


def worker_failure_message(run: Run, during: str, error: Exception) -> str:
    """What failed, for the user: the run, when, and TensorFlow's own words (its lines naming the cause)."""
    text = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [line for line in lines if line.startswith(("Collective ops is aborted", "Additional GRPC", "Deadline"))]
    causes += [line for line in lines if "remote target" in line or "timed out" in line.lower()]
    detail = "; ".join(dict.fromkeys(causes)) or (lines[-1] if lines else "")
    return (
        f"a worker of this {run.describe()} failed or stopped responding {during} "
        f"({type(error).__name__}: {detail[:400]})."
    )
