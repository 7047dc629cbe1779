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
* **Noise is drawn once, on the chief.** On one device the noise of variable i is N(0, (C sigma)^2 I) from
  the stateless seed ``fold_in(step seed, i)``. Here each variable's noise is drawn, from that same seed, by
  exactly one of the chief's local replicas (:func:`noise_owners`: largest variables first, each onto the
  least-loaded replica, so the chief's devices share the work); the other replicas add none to it. Drawing
  std/sqrt(R) on each replica would also be calibrated, but it would tie the noise to R and lose the
  one-device/R-replica reproducibility; drawing it all on one replica made that replica's noise the step's
  bottleneck (measured: bench/README.md). The noise seed never leaves the chief.
* Each replica divides its contribution by the expected global batch q n and hands it to the user's Keras
  optimizer, whose ``apply_gradients`` sums the contributions across replicas (an all-reduce, the way Keras
  itself trains under ``tf.distribute``), so every replica applies the identical update
  ``(sum of clipped gradients + noise) / (q n)``.

Multi-worker runs agree before anything is spent: every worker must hold the same private rows in the
same order and run the same settings (checked by fingerprints, never by sending rows); then the chief
alone reserves the run on its ledger, and the workers train only if it could. Workers never write a
ledger. That host-side agreement is in :mod:`op_tensorflow.coordination`; this module finds the run a
model trains in, refuses what would break the guarantee there, and holds the graph-side parts
(:func:`replica_shard`, :func:`is_replica`).
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

from op_tensorflow import keras_seam

__all__ = [
    "DistributedTrainingError",
    "Run",
    "check_optimizer",
    "is_replica",
    "noise_owners",
    "replica_shard",
    "replicas_in_sync",
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

    @property
    def local_replicas(self) -> int:
        """Replicas per worker; the chief's have global ids 0 .. local_replicas - 1."""
        return self.replicas // self.workers

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


def _replica() -> tuple[int, tf.Tensor | int]:
    """``(replicas in sync, this replica's global id)`` of the current replica context; ``(1, 0)`` on one device."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 1, 0
    return context.num_replicas_in_sync, context.replica_id_in_sync_group


def replicas_in_sync() -> int:
    """How many replicas take part in each step (graph side; 1 on one device)."""
    return _replica()[0]


def replica_shard(positions: tf.Tensor) -> tf.Tensor:
    """This replica's share of a global sample's ``positions``: every R-th, from its replica id (graph side)."""
    replicas, replica = _replica()
    return positions if replicas == 1 else positions[replica::replicas]


def is_replica(index: int) -> tf.Tensor | bool:
    """Whether this replica has global id ``index`` (e.g. 0, on the chief; a variable's noise owner); True on one
    device, where the only replica is every owner."""
    replicas, replica = _replica()
    return True if replicas == 1 else tf.equal(replica, index)


def noise_owners(sizes: list[int], replicas: int) -> list[int]:
    """Which of the chief's ``replicas`` local replicas draws each variable's noise (variables of ``sizes``).

    Largest variable first, each onto the least-loaded replica (ties: the lower id): every variable gets
    exactly one owner, and the noise work is spread as evenly as whole variables allow.
    """
    load, owners = [0] * replicas, [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        owner = min(range(replicas), key=lambda r: (load[r], r))
        owners[i] = owner
        load[owner] += sizes[i]
    return owners


def strategy_scope(model):
    """The scope of the strategy ``model`` was created under (so its optimizer's slots are mirrored too)."""
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None or type(strategy).__name__ not in _SUPPORTED:
        return contextlib.nullcontext()
    return strategy.scope()


_PER_REPLICA_OPTIONS = ("clipnorm", "clipvalue", "global_clipnorm")


def check_optimizer(run: Run, optimizer) -> None:
    """Refuses optimizer options that would act on one replica's share of the update, before the sum.

    On Keras 3 an optimizer clips (``clipnorm``, ``clipvalue``, ``global_clipnorm``) and accumulates
    (``gradient_accumulation_steps``) each replica's gradients *before* it all-reduces them; with several
    replicas, the other replicas' un-noised shares would then reach the weights through a non-linear
    step, and the update would no longer be (sum of clipped gradients + noise) / (q n). Keras 2 optimizers
    aggregate first, so they are not affected. On one device these options act on the noisy update
    (post-processing) and are allowed.
    """
    if run.replicas == 1 or not keras_seam.KERAS3:
        return
    used = [name for name in _PER_REPLICA_OPTIONS if getattr(optimizer, name, None) is not None]
    if getattr(optimizer, "gradient_accumulation_steps", None):
        used.append("gradient_accumulation_steps")
    if used:
        raise ValueError(
            f"the optimizer's {', '.join(used)} cannot be used with {run.replicas} replicas on Keras 3: Keras 3 "
            "applies them to each replica's share of the update before summing the shares, so the shares of "
            "replicas that add no noise would reach the weights un-noised. Compile without them: "
            "PrivateKerasModel already clips every example's gradient to l2_norm_clip."
        )
