"""Distributed DP-SGD: ``PrivateKerasModel`` under ``MirroredStrategy`` (2 logical CPU devices), in one process.

On the Keras that ``tf.keras`` is (run it twice: plain, and with ``TF_USE_LEGACY_KERAS=1``), for the seed
MLP of ``bench_model.py`` and a wide MLP of ~1.1 M parameters, this measures:

1. **2 replicas / 1**: ours (``PrivateKerasModel.fit``) under ``tf.distribute.MirroredStrategy`` over two
   logical CPU devices against the same model and global batch on one device (no strategy). The two
   "devices" are logical devices of one CPU and share its 2 physical cores (and one intra-op thread pool),
   so the ratio measures the strategy's overhead (replicas, the all-reduce), not a speed-up.
2. **DP overhead**: the same models trained non-privately under the same MirroredStrategy and on one
   device, on ``tf.data`` batches of exactly b rows (a fresh permutation of the rows every epoch): plain
   Keras ``fit`` with ``steps_per_execution=32``; under MirroredStrategy also ``fit`` with
   ``steps_per_execution=1`` and a hand-written ``tf.function`` running 32 ``strategy.run`` steps per call,
   because Keras 3's multi-step ``fit`` fails under MirroredStrategy (keras-team/keras#19246: its train step,
   whose ``apply_gradients`` makes a ``merge_call``, sits in a ``tf.cond``); a failing configuration is
   reported, not fatal. The ratios are ours / the fastest non-private MirroredStrategy configuration and
   ours / the fastest non-private configuration of the run.
3. **The noise draw alone**: t_noise, the time of drawing the Gaussian noise of a set of the model's
   variables (per variable ``g + stateless_normal(shape, fold_in(seed, i))``, as ``clipping.add_noise``
   does; 32 steps in one traced loop per call, best of several calls per round, minus the same loop with no
   variable), for all the variables and
   for the busiest replica's share under ``distributed.noise_owners(sizes, G)``, G = 2 (the MirroredStrategy
   measured here) and G = 8. The engine gives each variable's noise to exactly one of the chief's G local
   replicas, largest variables first, each onto the least-loaded replica; so the noise on a step's critical
   path is the busiest replica's share, which whole variables bound from below (the wide MLP's 1024 × 1024
   kernel is one variable, on one replica).
4. **A paper estimate for 8 GPUs and 4 machines**: the all-reduce volume V of one step, counted from
   ``model.trainable_variables`` and checked against the ``CollectiveReduceV2`` ops of the traced train
   chunk (their tensor sizes, inside the while loop's body); then a ring all-reduce model (below) with
   stated bandwidths and latencies, and the per-replica compute from the one-device DP step time at the
   per-replica batch b/R, with its noise draw replaced by the busiest replica's share.

Timing: every configuration gets a warm-up ``fit(epochs=1)`` (which traces; reported as "first fit"), then
``--rounds`` rounds (default 3) of one timed ``fit(epochs=1)`` each, interleaved over all configurations;
the best round is kept. ``steps_per_execution=32`` everywhere. The time of a round is the epoch's training
steps: from ``on_epoch_begin`` to the last ``on_train_batch_end`` (logs synced to host), divided by the
epoch's steps; the end-of-epoch work (ours: the epsilon of the run so far; Keras: its epoch logs) is
reported apart ("epoch end"), and the per-call set-up of ``fit`` is outside both.

Estimate model (all assumptions are printed): one step on R replicas takes
``c(b/R) + T_allreduce``; no overlap of compute and communication (the engine computes the whole clipped,
noised contribution before the optimizer's ``apply_gradients`` all-reduces it). The per-replica compute is
``c(b/R) = t1(b/R) - t_noise(all variables) + t_noise(busiest share of noise_owners(sizes, G))``: ``t1(b/R)``
is the measured one-device DP step at batch b/R on this CPU (it includes the noise draw of all V
parameters, as one device does, and the optimizer update, which every replica does), G is the chief's
number of local replicas (8 for 8 GPUs in one machine or 4 machines × 8 GPUs, 1 for 4 machines × 1 GPU,
where the chief's one replica draws all the noise), and the noise draw is assumed additive to the rest of
the step (it does not overlap other work). The old estimate, ``t1(b/R)`` itself (noise not split), is
printed next to it. A ring all-reduce of V bytes over R replicas moves ``2 (R-1)/R V`` bytes through each
replica's link and takes ``2 (R-1)`` hops:
``T = k [2 (R-1) alpha] + 2 (R-1)/R V / B`` for k all-reduce ops per step, bandwidth B, hop latency alpha.
Across M machines of G GPUs it is hierarchical (a ring inside each machine, then a ring between machines
whose NIC carries ``2 (M-1)/M V`` for all G GPUs): the two terms add.

``.venv/bin/python bench/bench_distributed.py [--rounds 3] [--workload mlp|wide ...] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SPE = 32  # steps_per_execution, ours and Keras
WORKLOADS = {
    "mlp": {
        "features": 2,
        "n": 100_000,
        "batch": 256,
        "est_steps": 128,
        "title": "seed MLP (2 → Dense 16 → 8 → 1, SGD(0.01), MSE; 100 000 rows, b = 256)",
    },
    "wide": {
        "features": 64,
        "n": 4_096,
        "batch": 256,
        "est_steps": 16,
        "title": "wide MLP (64 → Dense 1024 → 1024 → 1 sigmoid, Adam(1e-3), BCE; 4 096 rows, b = 256)",
    },
}
SPLITS = (2, 4, 8, 32)  # one-device DP at b / k: the per-replica compute of R = k replicas
# Links: (name, bus bandwidth in bytes/s, latency per ring hop in s). Assumptions, not measurements.
LINKS = {
    "nvlink": ("NVLink-class, 100 GB/s, 5 µs/hop", 100e9, 5e-6),
    "pcie": ("PCIe, 10 GB/s, 10 µs/hop", 10e9, 10e-6),
    "10gbe": ("10 Gb/s Ethernet (1.25 GB/s), 50 µs/hop", 1.25e9, 50e-6),
    "25gbe": ("25 Gb/s Ethernet (3.125 GB/s), 50 µs/hop", 3.125e9, 50e-6),
}
# (label, machines M, GPUs per machine G, link inside a machine, link between machines)
SCENARIOS = [
    ("8 GPUs, 1 machine, NVLink", 1, 8, "nvlink", None),
    ("8 GPUs, 1 machine, PCIe", 1, 8, "pcie", None),
    ("4 machines × 1 GPU, 10 GbE", 4, 1, None, "10gbe"),
    ("4 machines × 1 GPU, 25 GbE", 4, 1, None, "25gbe"),
    ("4 machines × 8 GPUs, NVLink + 10 GbE", 4, 8, "nvlink", "10gbe"),
    ("4 machines × 8 GPUs, NVLink + 25 GbE", 4, 8, "nvlink", "25gbe"),
]
GPU_SPEEDUP = 10.0  # sensitivity column: per-replica compute this many times faster than this CPU
# name: (label, kind, under MirroredStrategy, batch divisor, steps_per_execution); dp_1_b<k> added per SPLITS
CONFIGS = {
    "np_1": ("non-private Keras fit, one device", "keras", False, 1, SPE),
    "np_2": ("non-private Keras fit, MirroredStrategy", "keras", True, 1, SPE),
    "np_2_spe1": ("non-private Keras fit, MirroredStrategy, spe = 1", "keras", True, 1, 1),
    "np_2_loop": ("non-private custom loop, MirroredStrategy", "loop", True, 1, SPE),
    "dp_1": ("**ours**, one device", "ours", False, 1, SPE),
    "dp_2": ("**ours**, MirroredStrategy", "ours", True, 1, SPE),
}
NONPRIVATE_MIRRORED = ("np_2", "np_2_spe1", "np_2_loop")
ALLREDUCE_OPS = ("CollectiveReduce", "CollectiveReduceV2", "NcclAllReduce", "CollectiveReduceV3")


def setup_devices():
    """Two logical CPU devices, configured before TensorFlow initializes its devices (before any op)."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


# -- data and models -----------------------------------------------------------------------------
def make_data(workload: str, n: int | None = None):
    import numpy as np

    spec = WORKLOADS[workload]
    rng = np.random.default_rng(0)
    n = spec["n"] if n is None else n
    x = rng.uniform(-1.0, 1.0, size=(n, spec["features"])).astype("float32")
    y = (x @ rng.normal(size=spec["features"]) + rng.normal(scale=0.3, size=n) > 0).astype("float32")
    return x, y


def make_model(workload: str):
    import tensorflow as tf
    from bench_model import make_layers

    if workload == "mlp":
        return tf.keras.Sequential(make_layers("mlp"))
    L = tf.keras.layers
    return tf.keras.Sequential(
        [
            tf.keras.Input((WORKLOADS[workload]["features"],)),
            L.Dense(1024, activation="relu"),
            L.Dense(1024, activation="relu"),
            L.Dense(1, activation="sigmoid"),
        ]
    )


def make_optimizer_and_loss(workload: str):
    import tensorflow as tf
    from bench_model import make_loss, make_optimizer

    if workload == "mlp":
        return make_optimizer("mlp"), make_loss("mlp")
    return tf.keras.optimizers.Adam(1e-3), tf.keras.losses.BinaryCrossentropy()


def _scope(strategy):
    import contextlib

    return strategy.scope() if strategy is not None else contextlib.nullcontext()


# -- timing ----------------------------------------------------------------------------------------
def _cpu_s() -> float:
    """User + system CPU seconds of this process (all threads): less sensitive to other jobs than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def step_timer():
    import numpy as np
    import tensorflow as tf

    class StepTimer(tf.keras.callbacks.Callback):
        """Epoch begin → last batch end (logs synced to host), and → epoch end; wall and CPU seconds."""

        def on_epoch_begin(self, epoch, logs=None):
            self.begin, self.cpu_begin = time.perf_counter(), _cpu_s()
            self.last, self.cpu_last = self.begin, self.cpu_begin

        def on_train_batch_end(self, batch, logs=None):
            for value in (logs or {}).values():
                np.asarray(value)  # waits for the step's result
            self.last, self.cpu_last = time.perf_counter(), _cpu_s()

        def on_epoch_end(self, epoch, logs=None):
            self.end = time.perf_counter()

    return StepTimer()


def shuffled_batches(x, y, batch: int, steps: int):
    """``tf.data`` batches of exactly ``batch`` rows, a fresh random permutation of the rows every epoch.

    One vectorized ``tf.random.shuffle`` per epoch: a per-element ``Dataset.shuffle(n)`` buffer costs more
    than the seed MLP's whole step (~1.2 ms per step of tf.data work for 100 000 rows on this machine).
    """
    import tensorflow as tf

    xs, ys, n = tf.constant(x), tf.constant(y), len(x)

    def permutation(_):
        return tf.reshape(tf.random.shuffle(tf.range(n))[: steps * batch], (steps, batch))

    batches = tf.data.Dataset.from_tensors(0).repeat().map(permutation).unbatch()
    return batches.map(lambda rows: (tf.gather(xs, rows), tf.gather(ys, rows))).prefetch(2)


class Config:
    """One configuration: a model and its data, warmed up, then timed one epoch per round.

    ``kind`` is "ours" (``PrivateKerasModel.fit`` on a ``PrivateDataLoader``), "keras" (plain ``model.fit`` on
    ``tf.data`` batches, ``steps_per_execution=spe``) or "loop" (the same non-private step in a hand-written
    ``tf.function`` running SPE ``strategy.run`` steps per call, as TensorFlow's custom-training-loop guide).
    """

    def __init__(self, workload: str, name: str, label: str, kind: str, strategy, split: int = 1, spe: int = SPE):
        import op_tensorflow as ot

        self.workload, self.name, self.label, self.kind, self.split, self.spe = workload, name, label, kind, split, spe
        self.strategy = strategy
        self.replicas = 1 if strategy is None else strategy.num_replicas_in_sync
        spec = WORKLOADS[workload]
        self.batch = spec["batch"] // split
        n = spec["n"] if split == 1 else min(spec["n"], spec["est_steps"] * self.batch)  # same q, short epochs
        x, y = make_data(workload, n)
        with _scope(strategy):  # the model and its optimizer under the strategy, as Keras requires
            model = make_model(workload)
            optimizer, loss = make_optimizer_and_loss(workload)
            if kind == "ours":
                self.dp_model = ot.PrivateKerasModel(model, l2_norm_clip=1.0, noise_multiplier=1.1, seed=0)
                self.dp_model.compile(optimizer=optimizer, loss=loss)
            elif kind == "keras":
                model.compile(optimizer=optimizer, loss=loss, steps_per_execution=spe)
        self.model = model
        if kind == "ours":  # no epsilon: an unlimited ledger (it still records every charge)
            self.loader = ot.PrivateDataLoader.from_arrays(
                x, y, self.batch, feature_bounds=(-1.0, 1.0), label_categories=[0, 1], seed=0
            )
            self.steps = self.loader.steps_in_epoch(0)
        else:
            self.steps = n // self.batch
            self.dataset = shuffled_batches(x, y.reshape(-1, 1), self.batch, self.steps)
        if kind == "loop":
            self._build_loop(optimizer, workload)
        self.rounds: list[float] = []
        self.walls: list[float] = []  # the whole fit(epochs=1) call of each round (its set-up included)
        self.cpu: list[float] = []  # CPU seconds per step of each round
        self.epoch_end: list[float] = []
        self.first_fit_s = None
        self.error = None

    def _build_loop(self, optimizer, workload: str) -> None:
        import tensorflow as tf
        from bench_model import make_loss

        strategy, model, global_batch = self.strategy, self.model, float(self.batch)
        if workload == "mlp":
            per_example = make_loss(workload, per_example=True)
        else:
            per_example = tf.keras.losses.BinaryCrossentropy(reduction="none")
        with strategy.scope():  # the slots exist (mirrored) before the loop is traced
            optimizer.build(model.trainable_variables)

        def step(x, y):  # each replica's mean share of the global batch; apply_gradients sums the replicas'
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(per_example(y, model(x, training=True))) / global_batch
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

        @tf.function
        def chunk(iterator, num_steps):
            for _ in tf.range(num_steps):
                strategy.run(step, args=next(iterator))

        self._iterator = iter(strategy.experimental_distribute_dataset(self.dataset))
        self._chunk = chunk

    def epoch(self) -> tuple[float, float, float, float]:
        """One epoch: wall seconds of the whole call, wall and CPU seconds per training step, seconds of its end."""
        import tensorflow as tf

        timer = step_timer()
        tic = time.perf_counter()
        if self.kind == "ours":
            self.dp_model.fit(self.loader, epochs=1, verbose=0, steps_per_execution=self.spe, callbacks=[timer])
        elif self.kind == "keras":
            self.model.fit(self.dataset, epochs=1, steps_per_epoch=self.steps, verbose=0, callbacks=[timer])
        else:
            timer.on_epoch_begin(0)
            for done in range(0, self.steps, self.spe):
                self._chunk(self._iterator, tf.constant(min(self.spe, self.steps - done)))  # returns when done
            timer.on_train_batch_end(self.steps - 1)
            timer.on_epoch_end(0)
        steps = self.steps
        return (
            time.perf_counter() - tic,
            (timer.last - timer.begin) / steps,
            (timer.cpu_last - timer.cpu_begin) / steps,
            timer.end - timer.last,
        )

    def warm_up(self) -> None:
        try:
            self.first_fit_s = self.epoch()[0]
        except Exception as err:  # e.g. Keras 3's multi-step fit under MirroredStrategy (keras-team/keras#19246)
            text = (getattr(err, "message", None) or str(err)).strip().splitlines()
            cause = next((line for line in text if "INVALID_ARGUMENT" in line or "Error" in line), text[-1])
            self.error = f"{type(err).__name__}: {cause.strip()[:160]}"

    def timed_round(self) -> None:
        if self.error is None:
            wall, step_s, cpu_s, end_s = self.epoch()
            self.walls.append(wall)
            self.cpu.append(cpu_s)
            self.rounds.append(step_s)
            self.epoch_end.append(end_s)

    @property
    def step_s(self) -> float | None:
        return min(self.rounds) if self.rounds else None


NOISE_SPLITS = (1, 2, 8)  # G: the chief's local replicas sharing the noise (1: one device draws it all)
# plus G = 0: no variable, the probe's loop alone (subtracted)
NOISE_CALLS = 10  # calls per round of a noise probe; the best is kept


def busiest_share(sizes: list[int], replicas: int) -> list[int]:
    """The variables (indices) whose noise the most-loaded of ``replicas`` draws, as the engine assigns them."""
    from op_tensorflow import distributed

    owners = distributed.noise_owners(sizes, replicas)
    load = [sum(size for size, owner in zip(sizes, owners, strict=True) if owner == r) for r in range(replicas)]
    busiest = max(range(replicas), key=lambda r: (load[r], -r))
    return [i for i, owner in enumerate(owners) if owner == busiest]


class NoiseProbe:
    """t_noise: drawing the noise of some of a model's variables alone, per step (best call of each round).

    Each variable's noise as ``clipping.add_noise`` draws it: ``g + stateless_normal(shape(g),
    fold_in(step seed, i), stddev)``, the sum carried to the next step (so nothing is pruned); SPE steps per
    traced call, as the train chunk runs them. The division by the expected batch is not timed: every replica
    does it for every variable, whether it draws the variable's noise or not. ``replicas=0`` with no variables
    times the loop alone (its step seed, carried in every probe); ``t_noise`` is a probe's time minus it.
    """

    def __init__(self, workload: str, shapes: list, indices: list[int], replicas: int, stddev: float = 1.1):
        import numpy as np
        import tensorflow as tf

        self.workload, self.replicas, self.indices = workload, replicas, indices
        self.params = sum(int(np.prod(shapes[i])) for i in indices)
        self.variables = len(indices)
        zeros = [tf.zeros(shapes[i]) for i in indices]

        @tf.function
        def draw(seed):
            tick, grads = tf.zeros([], tf.int64), zeros
            for step in tf.range(SPE, dtype=tf.int64):
                step_seed = tf.random.experimental.stateless_fold_in(seed, step)
                tick += step_seed[0] % 2
                seeds = [tf.random.experimental.stateless_fold_in(step_seed, i) for i in indices]
                grads = [
                    g + tf.random.stateless_normal(tf.shape(g), seed=s, stddev=stddev)
                    for g, s in zip(grads, seeds, strict=True)
                ]
            return [tick, *grads]

        self._draw, self._seed = draw, tf.constant([0, 1], tf.int64)
        self.rounds: list[float] = []

    def _call(self) -> float:
        import numpy as np

        tic = time.perf_counter()
        out = self._draw(self._seed)
        np.asarray(out[-1])  # the call has finished
        return (time.perf_counter() - tic) / SPE

    def warm_up(self) -> None:
        self._call()  # traces

    def timed_round(self) -> None:
        self.rounds.append(min(self._call() for _ in range(NOISE_CALLS)))

    @property
    def step_s(self) -> float:
        return min(self.rounds)


# -- the all-reduce in the traced graph ----------------------------------------------------------
def traced_allreduces(dp_model) -> dict:
    """The all-reduce ops of the train chunk's graph (in nested function / while bodies), with their sizes."""
    import numpy as np
    from tensorflow.python.framework import function_def_to_graph

    graph = dp_model._train_chunk.get_concrete_function().graph
    graph_def = graph.as_graph_def()
    found = []
    for node in graph_def.node:
        if node.op in ALLREDUCE_OPS:
            found.append({"function": "(top level)", "op": node.op, "device": node.device, "bytes": None})
    for fdef in graph_def.library.function:
        nodes = [n for n in fdef.node_def if n.op in ALLREDUCE_OPS]
        if not nodes:
            continue
        try:
            fgraph = function_def_to_graph.function_def_to_graph(fdef)
            ops = {op.name: op for op in fgraph.get_operations()}
        except Exception:  # shapes unavailable: the ops still count
            ops = {}
        for node in nodes:
            size = None
            op = ops.get(node.name)
            if op is not None and op.inputs[0].shape.is_fully_defined():
                size = int(np.prod(op.inputs[0].shape.as_list())) * op.inputs[0].dtype.size
            found.append({"function": fdef.signature.name, "op": node.op, "device": node.device, "bytes": size})
    devices = sorted({f["device"] for f in found})
    per_device = {d: [f for f in found if f["device"] == d] for d in devices}
    first = per_device[devices[0]] if devices else []
    sizes = [f["bytes"] for f in first]
    return {
        "ops_total": len(found),
        "devices": len(devices),
        "ops_per_replica": len(first),
        "op_types": sorted({f["op"] for f in found}),
        "in_while_body": all("while_body" in f["function"] for f in found) if found else False,
        "bytes_per_replica": sum(sizes) if sizes and None not in sizes else None,
    }


def variable_bytes(model) -> tuple[int, int]:
    import numpy as np
    import tensorflow as tf

    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    size = sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in model.trainable_variables)  # Keras 3: str
    return params, size


# -- the paper estimate ----------------------------------------------------------------------------
def allreduce_s(volume: float, ops: int, machines: int, gpus: int, intra: str | None, inter: str | None) -> float:
    """Hierarchical ring all-reduce time of ``volume`` bytes (see the module docstring)."""
    total = 0.0
    if gpus > 1:
        _, bandwidth, alpha = LINKS[intra]
        total += ops * 2 * (gpus - 1) * alpha + 2 * (gpus - 1) / gpus * volume / bandwidth
    if machines > 1:
        _, bandwidth, alpha = LINKS[inter]
        total += ops * 2 * (machines - 1) * alpha + 2 * (machines - 1) / machines * volume / bandwidth
    return total


def estimate(t1: dict, noise: dict, volume: float, ops: int) -> list[dict]:
    """Per scenario: step time and speed-up against one device at the global batch.

    ``t1``: batch split -> one-device DP s/step; ``noise``: G -> t_noise of the busiest of G replicas' share
    (G = 1: all the variables). The per-replica compute swaps the noise of all the variables, which ``t1``
    contains, for the busiest share of the chief's G local replicas.
    """
    rows = []
    for label, machines, gpus, intra, inter in SCENARIOS:
        replicas = machines * gpus
        if replicas not in t1 or gpus not in noise:
            continue
        unsplit, comm = t1[replicas], allreduce_s(volume, ops, machines, gpus, intra, inter)
        compute = unsplit - noise[1] + noise[gpus]
        step, step_unsplit = compute + comm, unsplit + comm
        fast = compute / GPU_SPEEDUP + comm
        rows.append(
            {
                "scenario": label,
                "replicas": replicas,
                "noise_replicas": gpus,
                "compute_unsplit_s": unsplit,
                "noise_s": noise[gpus],
                "compute_s": compute,
                "allreduce_s": comm,
                "step_s": step,
                "speedup": t1[1] / step,
                "speedup_unsplit": t1[1] / step_unsplit,
                "no_comm_speedup": t1[1] / compute,
                "comm_share": comm / step,
                "speedup_fast_compute": (t1[1] / GPU_SPEEDUP) / fast,
            }
        )
    return rows


# -- reporting -------------------------------------------------------------------------------------
def _ms(seconds) -> str:
    from bench_model import _ms as ms

    if seconds is not None and seconds < 1e-3:
        return f"{1e3 * seconds:.3f}"
    return ms(seconds)


def print_assumptions(batch_note: str) -> None:
    print("\nEstimate assumptions (a model on paper, not a measurement):")
    print("- one step on R replicas = c(b/R) + T_allreduce; compute and communication do not overlap (the engine")
    print("  finishes the clipped, noised contribution before apply_gradients all-reduces it);")
    print("- c(b/R) = t1(b/R) - t_noise(all variables) + t_noise(busiest share): t1(b/R) is the one-device DP step")
    print("  measured here at batch b/R (this CPU, 2 cores), which draws the noise of all V parameters; each")
    print("  variable's noise is drawn by one of the chief's G local replicas (distributed.noise_owners: largest")
    print("  first, onto the least-loaded), so the busiest replica's share is on the critical path; G = GPUs per")
    print("  machine (with 1 GPU per machine the chief's one replica draws it all); the noise draw is assumed to")
    print("  add to the rest of the step (no overlap); 'noise not split' = the old estimate, c = t1(b/R);")
    print("- every replica does the optimizer update, and its O(b) draw of the global Poisson sample is counted")
    print("  at O(b/R) (it is negligible);")
    print("- ring all-reduce: 2(R-1)/R · V bytes through each replica's link, 2(R-1) hops of latency alpha per")
    print("  all-reduce op (k ops per step, counted in the traced graph); across M machines of G GPUs a ring")
    print("  inside each machine plus a ring between machines whose NIC carries 2(M-1)/M · V for all G GPUs;")
    for name, bandwidth, alpha in LINKS.values():
        print(f"- link {name}: bus bandwidth {bandwidth / 1e9:g} GB/s, {1e6 * alpha:g} µs per hop (assumed)")
    print("- speed-up = t1(b) / step time; 'no-comm limit' = t1(b) / c(b/R); the last column divides all compute")
    print(f"  by {GPU_SPEEDUP:g} (a GPU-class replica, assumed), keeping the same communication;")
    print(f"- {batch_note}.")


def _traced_line(info: dict) -> str:
    traced, volume = info["traced"], info["variable_bytes"]
    read = traced["bytes_per_replica"]
    if read is None:
        check = "tensor sizes not readable from the graph: V is the variables' count"
    else:
        check = f"{read:,} bytes per replica per step, {'equal to' if read == volume else 'NOT equal to'} V"
    kinds = "/".join(traced["op_types"]) or "no all-reduce op"
    return (
        f"trainable parameters {info['params']:,}; all-reduce volume V = {volume:,} bytes per step (float32, counted "
        f"from model.trainable_variables). Traced train chunk: {traced['ops_total']} {kinds} op(s) on "
        f"{traced['devices']} device(s), {traced['ops_per_replica']} per replica per step (inside the while body: "
        f"{traced['in_while_body']}); {check}."
    )


def report(
    configs: list[Config], noise_probes: list[NoiseProbe], strategy_info: dict, stack: str, total_s: float
) -> dict:
    by = {(c.workload, c.name): c for c in configs}
    out = {"stack": stack, "cores": os.cpu_count(), "spe": SPE, "workloads": {}}
    print(f"\n{stack}; MirroredStrategy over 2 logical CPU devices; {os.cpu_count()} cores; spe = {SPE} unless stated")
    print("NOTE: the 2 replicas are 2 logical devices of one CPU sharing its 2 physical cores (one thread pool), so")
    print("'2 replicas / 1' measures the overhead of MirroredStrategy (2 replicas, the all-reduce), not a speed-up.")
    for workload in dict.fromkeys(c.workload for c in configs):
        info = strategy_info[workload]
        batch = WORKLOADS[workload]["batch"]
        print(f"\n### {WORKLOADS[workload]['title']}\n")
        print(_traced_line(info) + "\n")
        print(
            "| configuration | replicas | batch | steps/epoch | ms/step | steps/s | CPU ms/step | epoch end (ms) "
            "| first fit (s) | rounds (ms/step) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        names = [n for n in CONFIGS] + [f"dp_1_b{k}" for k in SPLITS]
        s, cpu = {}, {}
        for name in names:
            c = by.get((workload, name))
            if c is None:
                continue
            if c.error:
                print(f"| {c.label} | {c.replicas} | {c.batch} | {c.steps} | fails | | | | | {c.error} |")
                continue
            s[name], cpu[name] = c.step_s, min(c.cpu)
            rounds = ", ".join(_ms(r) for r in c.rounds)
            print(
                f"| {c.label} | {c.replicas} | {c.batch} | {c.steps} | {_ms(c.step_s)} | {1 / c.step_s:,.0f} | "
                f"{_ms(cpu[name])} | {1e3 * min(c.epoch_end):.1f} | {c.first_fit_s:.1f} | {rounds} |"
            )
        mirrored = {n: s[n] for n in NONPRIVATE_MIRRORED if n in s}
        fastest_m = min(mirrored, key=mirrored.get)
        overall = {**mirrored, **({"np_1": s["np_1"]} if "np_1" in s else {})}
        fastest = min(overall, key=overall.get)
        ratios = {
            "dp_2_over_1_throughput": s["dp_1"] / s["dp_2"],
            "np_2_over_1_throughput": s["np_1"] / mirrored[fastest_m] if "np_1" in s else None,
            "dp_2_over_fastest_np_mirrored": s["dp_2"] / mirrored[fastest_m],
            "dp_2_over_fastest_np": s["dp_2"] / overall[fastest],
            "dp_1_over_fastest_np": s["dp_1"] / overall[fastest],
            "dp_1_over_np_1": s["dp_1"] / s["np_1"] if "np_1" in s else None,
            "cpu_dp_2_over_1": cpu["dp_2"] / cpu["dp_1"],
            "cpu_dp_2_over_fastest_np_mirrored": cpu["dp_2"] / cpu[fastest_m],
        }
        label = {n: by[(workload, n)].label.replace("non-private ", "") for n in overall}
        print()
        print(
            f"- throughput, ours 2 replicas / 1 device: {ratios['dp_2_over_1_throughput']:.2f} (non-private, fastest "
            f"MirroredStrategy / one device: {ratios['np_2_over_1_throughput']:.2f}): the strategy's overhead on 2 "
            f"shared cores, not a speed-up (CPU time per step, ours 2 replicas / 1: {ratios['cpu_dp_2_over_1']:.2f})"
        )
        print(
            f"- ours MirroredStrategy / fastest non-private MirroredStrategy ({label[fastest_m]}): "
            f"{ratios['dp_2_over_fastest_np_mirrored']:.2f} "
            f"(CPU time: {ratios['cpu_dp_2_over_fastest_np_mirrored']:.2f})"
        )
        print(
            f"- ours MirroredStrategy / fastest non-private overall ({label[fastest]}): "
            f"{ratios['dp_2_over_fastest_np']:.2f}"
        )
        print(
            f"- ours one device / fastest non-private overall: {ratios['dp_1_over_fastest_np']:.2f} (ours / "
            f"non-private, both one device: {ratios['dp_1_over_np_1']:.2f})"
        )
        t1 = {1: s["dp_1"], **{k: s[f"dp_1_b{k}"] for k in SPLITS if f"dp_1_b{k}" in s}}
        probes = {p.replicas: p for p in noise_probes if p.workload == workload}
        loop = probes.pop(0).step_s
        noise = {g: max(p.step_s - loop, 0.0) for g, p in probes.items()}
        total = probes[1].params
        print(
            "\nNoise draw alone, t_noise per step: best call of the draw of the busiest of G replicas' share "
            f"(noise_owners), minus the probe's loop alone ({_ms(loop)} ms/step):\n"
        )
        print("| G (chief's replicas) | variables | parameters | share of V | t_noise ms | rounds, loop incl. (ms) |")
        print("|---:|---:|---:|---:|---:|---|")
        for g, p in sorted(probes.items()):
            rounds = ", ".join(_ms(r) for r in p.rounds)
            print(
                f"| {g} | {p.variables} | {p.params:,} | {100 * p.params / total:.1f}% | {_ms(noise[g])} | {rounds} |"
            )
        print(
            f"\n- noise on one device: {_ms(noise[1])} ms of t1(b) = {_ms(t1[1])} ms "
            f"({100 * noise[1] / t1[1]:.0f}%) and of t1(b/32) = {_ms(t1.get(32))} ms"
            + (f" ({100 * noise[1] / t1[32]:.0f}%)" if 32 in t1 else "")
            + "; split over G replicas the busiest draws "
            + ", ".join(f"{_ms(noise[g])} ms (G = {g})" for g in sorted(noise) if g > 1)
        )
        ops = info["traced"]["ops_per_replica"] or 1
        rows = estimate(t1, noise, info["variable_bytes"], ops)
        print(
            f"\nEstimate (V = {info['variable_bytes'] / 1e6:.3f} MB, k = {ops} all-reduce op(s) per step, global "
            f"b = {batch}, t1(b) = {_ms(t1[1])} ms; compute c = t1(b/R) - t_noise(all) + t_noise(busiest of G)):\n"
        )
        print(
            "| setup | R | G | b/R | t1(b/R) ms | t_noise busiest ms | compute c ms | all-reduce ms | step ms "
            "| speed-up | speed-up, noise not split | no-comm limit | comm share "
            f"| speed-up, compute ÷{GPU_SPEEDUP:g} |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['scenario']} | {r['replicas']} | {r['noise_replicas']} | {batch // r['replicas']} | "
                f"{_ms(r['compute_unsplit_s'])} | {_ms(r['noise_s'])} | {_ms(r['compute_s'])} | "
                f"{_ms(r['allreduce_s'])} | {_ms(r['step_s'])} | {r['speedup']:.2f} | {r['speedup_unsplit']:.2f} | "
                f"{r['no_comm_speedup']:.2f} | {100 * r['comm_share']:.0f}% | {r['speedup_fast_compute']:.2f} |"
            )
        out["workloads"][workload] = {
            "step_s": s,
            "errors": {n: by[(workload, n)].error for n in names if (workload, n) in by and by[(workload, n)].error},
            "rounds": {n: by[(workload, n)].rounds for n in s},
            "first_fit_s": {n: by[(workload, n)].first_fit_s for n in s},
            "fit_call_s": {n: by[(workload, n)].walls for n in s},
            "cpu_step_s": {n: by[(workload, n)].cpu for n in s},
            "epoch_end_s": {n: by[(workload, n)].epoch_end for n in s},
            "clipping": {n: by[(workload, n)].dp_model.clipping_plan.path for n in s if n.startswith("dp_")},
            "ratios": ratios,
            "noise_loop_s": loop,
            "noise": {
                g: {"variables": p.variables, "params": p.params, "t_noise_s": noise[g], "rounds": p.rounds}
                for g, p in probes.items()
            },
            "estimate": rows,
            **info,
        }
    print_assumptions("the global batch b is the measured one (a larger b would scale better)")
    print(f"\ntotal {total_s:.0f} s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=list(WORKLOADS), action="append")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write every number to this JSON file")
    args = parser.parse_args()
    tic = time.perf_counter()
    warnings.simplefilter("ignore")
    strategy = setup_devices()  # before anything else touches TensorFlow's devices
    import absl.logging
    import numpy as np
    import tensorflow as tf

    from op_tensorflow import keras_seam

    absl.logging.set_verbosity(absl.logging.ERROR)
    tf.get_logger().setLevel("ERROR")
    tf.keras.utils.set_random_seed(0)
    stack = keras_seam.keras_description()
    configs, probes, info = [], [], {}
    for workload in args.workload or list(WORKLOADS):
        wanted = [(name, *CONFIGS[name]) for name in CONFIGS if not name.startswith("dp_1_b")]
        wanted += [(f"dp_1_b{k}", f"ours, one device, b/{k} (estimate input)", "ours", False, k, SPE) for k in SPLITS]
        for name, label, kind, mirrored, split, spe in wanted:
            config = Config(workload, name, label, kind, strategy if mirrored else None, split, spe)
            config.warm_up()
            configs.append(config)
            status = config.error or f"first fit {config.first_fit_s:.1f} s"
            print(f"[{time.perf_counter() - tic:5.0f} s] {workload} {name}: {status}", flush=True)
            if name == "dp_2":
                params, size = variable_bytes(config.model)
                info[workload] = {
                    "params": params,
                    "variable_bytes": size,
                    "traced": traced_allreduces(config.dp_model),
                }
            if name == "dp_1":  # the noise probes, on the one-device model's variables
                shapes = [tuple(v.shape) for v in config.model.trainable_variables]
                sizes = [int(np.prod(shape)) for shape in shapes]
                for g in (0, *NOISE_SPLITS):
                    probe = NoiseProbe(workload, shapes, busiest_share(sizes, g) if g else [], g)
                    probe.warm_up()
                    probes.append(probe)
                    print(
                        f"[{time.perf_counter() - tic:5.0f} s] {workload} noise probe G = {g}: {probe.variables} "
                        f"variable(s), {probe.params:,} parameters",
                        flush=True,
                    )
    for round_ in range(args.rounds):
        for config in configs:
            config.timed_round()
        for probe in probes:
            probe.timed_round()
        print(f"[{time.perf_counter() - tic:5.0f} s] round {round_ + 1} done", flush=True)
    out = report(configs, probes, info, stack, time.perf_counter() - tic)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
