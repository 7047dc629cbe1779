"""DP-SGD on ``tf.distribute``: one DP-SGD step split over replicas and workers, noise drawn once.

A model created (and compiled) under ``MirroredStrategy`` or ``MultiWorkerMirroredStrategy``'s ``scope()``
trains with the same engine as on one device. What each global step does:

* **Sampling: one global Bernoulli draw, then sharding.** Every replica runs the loader's Poisson sampler
  with the same stateless seed (the chief's, broadcast once per ``fit``), so every replica knows the whole
  sample of the step: each row is in it with probability q, independently of other rows and steps. Replica
  r of R takes sample positions r, r + R, r + 2R, ...; the shards are disjoint and their union is exactly
  the sample (sizes differ by at most one; a replica may get 0 rows). It is the very sample one device
  draws with the same seed, so a seeded run repeats on one device and on R replicas.
* **Clipping** happens on each replica with the single-device engine (ghost norms or per-example
  gradients, as the preflight chose).
* **Noise is drawn once, by the replica of global id 0** (on the chief): N(0, (C sigma)^2) from the same
  stateless seed as on one device; the other replicas add none. Drawing std/sqrt(R) on each replica would
  also be calibrated, but it would tie the noise to R and lose the one-device/R-replica reproducibility.
* Each replica divides its contribution by the expected global batch q n and hands it to the user's Keras
  optimizer, whose ``apply_gradients`` sums the contributions across replicas (an all-reduce, the way Keras
  itself trains under ``tf.distribute``), so every replica applies the identical update
  ``(sum of clipped gradients + noise) / (q n)``.

Multi-worker runs agree before anything is spent: every worker must hold the same private rows in the
same order (checked by a fingerprint, never by sending rows); then the chief alone reserves the run on its
ledger, and the workers train only if it could. Workers never write a ledger. Host-side, this module is
NumPy and tiny collectives; the graph-side part is :func:`replica_shard`.
"""

from __future__ import annotations

import contextlib
import hashlib
import weakref

import numpy as np
import tensorflow as tf

__all__ = [
    "DistributedTrainingError",
    "Run",
    "agree_on_data",
    "announce_reservation",
    "broadcast_from_chief",
    "chief_stops",
    "is_first_replica",
    "replica_shard",
    "reserve_for_run",
    "run_of",
    "strategy_scope",
]

_SUPPORTED = ("MirroredStrategy", "MultiWorkerMirroredStrategy", "CollectiveAllReduceStrategy", "OneDeviceStrategy")


class DistributedTrainingError(RuntimeError):
    """A multi-worker run failed on another worker (it died, or stopped responding)."""


class Run:
    """Where this process stands in a run: its strategy (None on one device), replicas, workers, chief or not."""

    def __init__(self, strategy: tf.distribute.Strategy | None):
        self.strategy = strategy
        self.replicas = 1 if strategy is None else int(strategy.num_replicas_in_sync)
        resolver = getattr(strategy, "cluster_resolver", None) if _is_multi_worker(strategy) else None
        spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
        self.workers = sum(len(tasks) for kind, tasks in spec.items() if kind in ("chief", "worker")) or 1
        task_type, task_id = (resolver.task_type, resolver.task_id) if resolver is not None else (None, 0)
        self.task = f"{task_type}:{task_id}" if task_type else "local"
        self.is_chief = task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and "chief" not in spec)

    @property
    def multi_worker(self) -> bool:
        return self.workers > 1

    def describe(self) -> str:
        if self.strategy is None:
            return "one device"
        kind = "MultiWorkerMirroredStrategy" if self.multi_worker else type(self.strategy).__name__
        where = f"on {self.workers} workers; this process is {self.task}" if self.multi_worker else "in this process"
        return f"{kind} run ({self.replicas} replicas {where}{', the chief' if self.is_chief else ''})"


def _is_multi_worker(strategy) -> bool:
    return strategy is not None and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def run_of(model) -> Run:
    """The run ``model`` trains in: the strategy its variables were created under, checked to be supported.

    Raises:
        ValueError: The variables belong to a strategy other than MirroredStrategy or
            MultiWorkerMirroredStrategy (e.g. TPUStrategy, ParameterServerStrategy), or to several.
    """
    from op_tensorflow import keras_seam

    declared = getattr(model, "distribute_strategy", None)  # the strategy whose scope the model was created in
    strategies = {
        id(t.distribute_strategy): t.distribute_strategy
        for t in keras_seam.tape_variables(model.trainable_variables)
        if isinstance(t, tf.distribute.DistributedValues)
    }
    if declared is not None and type(declared).__name__ != "_DefaultDistributionStrategy":
        strategies.setdefault(id(declared), declared)
    if not strategies:
        return Run(None)
    if len(strategies) > 1:
        raise ValueError("model's variables were created under several tf.distribute strategies; build it under one.")
    (strategy,) = strategies.values()
    if type(strategy).__name__ not in _SUPPORTED:
        raise ValueError(
            f"model was built under {type(strategy).__name__}, which PrivateKerasModel does not support: use "
            "tf.distribute.MirroredStrategy (one machine) or tf.distribute.MultiWorkerMirroredStrategy (several), "
            "whose replicas all apply the same update, so that DP noise is added exactly once per step."
        )
    return Run(strategy)


def replica_shard(positions: tf.Tensor) -> tf.Tensor:
    """This replica's share of a global sample's ``positions``: every R-th, from its replica id (graph side)."""
    context = tf.distribute.get_replica_context()
    replicas = 1 if context is None else context.num_replicas_in_sync
    if replicas == 1:
        return positions
    return positions[context.replica_id_in_sync_group :: replicas]


def is_first_replica() -> tf.Tensor | bool:
    """Whether this replica has global id 0 (the one that draws the step's noise); True on one device."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return True
    return tf.equal(context.replica_id_in_sync_group, 0)


def broadcast_from_chief(run: Run, values) -> np.ndarray:
    """The chief's int64 ``values`` on every worker (an all-reduce in which only replica 0 is non-zero).

    On one machine (one process) it returns ``values`` unchanged.
    """
    values = np.asarray(values, dtype=np.int64)
    if not run.multi_worker:
        return values
    with reported_failure(run, "while the workers agreed on the run"):
        out = run.strategy.run(_collectives(run.strategy)["from_chief"], args=(tf.constant(values),))
        return run.strategy.experimental_local_results(out)[0].numpy()


_COLLECTIVES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _collectives(strategy) -> dict:
    """The host-side collectives of a strategy, traced once (a new tf.function per call would retrace)."""
    if strategy not in _COLLECTIVES:
        spec = [tf.TensorSpec([None], tf.int64)]
        local_replicas = len(strategy.extended.worker_devices)

        def all_reduce(mine):
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, mine)

        @tf.function(input_signature=spec)
        def from_chief(local):
            return all_reduce(tf.where(tf.cast(is_first_replica(), tf.bool), local, tf.zeros_like(local)))

        @tf.function(input_signature=spec)
        def per_worker_sum(local):  # each worker's value counted once, on its first local replica
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            return all_reduce(tf.where(tf.equal(replica % local_replicas, 0), local, tf.zeros_like(local)))

        _COLLECTIVES[strategy] = {"from_chief": from_chief, "per_worker_sum": per_worker_sum}
    return _COLLECTIVES[strategy]


def agree_on_data(run: Run, x_rows: np.ndarray, y_rows: np.ndarray) -> None:
    """Refuses (before anything is spent) a multi-worker run whose workers hold different private rows.

    Each worker hashes its rows; only the chief's hash travels, and each worker compares it with its own;
    then all learn whether every worker agreed.
    """
    if not run.multi_worker:
        return
    digest = hashlib.sha256()
    for a in (x_rows, y_rows):
        digest.update(str((a.shape, a.dtype)).encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    mine = np.frombuffer(digest.digest()[:16], dtype=np.int64) >> 1  # two 63-bit halves: sums cannot overflow
    chiefs = broadcast_from_chief(run, mine)
    differ = int(not np.array_equal(chiefs, mine))
    if all_reduce_sum(run, differ, "while the workers compared their data") > 0:
        raise ValueError(
            "the workers of this MultiWorkerMirroredStrategy run hold different private data (rows or their order "
            f"differ from the chief's{'; this worker differs' if differ else ''}): every worker must open the same "
            "private source, built the same way (same rows, same order, same columns), before fit(). Nothing was "
            "spent."
        )


def all_reduce_sum(run: Run, value: int, during: str) -> int:
    """The sum over the workers of one int each (on one machine: ``value``)."""
    if not run.multi_worker:
        return value
    with reported_failure(run, during):
        out = run.strategy.run(_collectives(run.strategy)["per_worker_sum"], args=(tf.constant([value], tf.int64),))
        return int(run.strategy.experimental_local_results(out)[0].numpy()[0])


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


def strategy_scope(model):
    """The scope of the strategy ``model`` was created under (so its optimizer's slots are mirrored too)."""
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None or type(strategy).__name__ not in _SUPPORTED:
        return contextlib.nullcontext()
    return strategy.scope()


def reserve_for_run(run: Run, ledger, event, description: str):
    """The run's reservation: on the chief (or one machine) the ledger's; on other workers a stand-in.

    In a multi-worker run only the chief touches a ledger. If its reservation is refused, it tells the
    workers (which then raise, having spent nothing) before raising itself; if it succeeds, the workers
    hear so from :func:`announce_reservation`, the first thing the chief does inside the reservation.
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


def announce_reservation(run: Run, reservation) -> None:
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
