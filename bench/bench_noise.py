"""The cost of DP-SGD's Gaussian noise, per step, for the variables of bench_model.py's three workloads.

A first measurement for the "cheaper noise" part of the speed issue: how the engine draws noise today
(``clipping.add_noise``: one ``tf.random.stateless_normal`` per variable, seeded ``fold_in(step seed, i)``,
TensorFlow's default ``alg="auto_select"``) against the alternatives, all in one process, on the Keras that
``tf.keras`` is:

* per variable, with each stateless algorithm (``philox``, ``threefry``, ``auto_select``);
* one fused draw of all the model's parameters per step, split and reshaped into the variables;
* a stateful ``tf.random.Generator`` (Philox) per variable, for reference (not seedable per step as the
  engine needs, so not a candidate as such).

Each candidate runs inside one ``tf.function`` looping 32 steps (as the engine's training chunk does),
adding the noise to zero gradients of the variables' shapes and reducing to a scalar so nothing is
optimized away; best of 5 calls, after a warm-up call that traces. The empty loop's cost is measured and
subtracted. Nothing here changes the engine: it measures.

Run: ``.venv/bin/python bench/bench_noise.py`` (and with ``TF_USE_LEGACY_KERAS=1``).
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # a failing algorithm logs one line per call otherwise

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from bench_model import make_layers  # noqa: E402

STEPS, REPEAT = 32, 5
ALGS = ("philox", "threefry", "auto_select")


INPUT_SHAPES = {"mlp": (2,), "conv": (12, 6), "embed": (64,)}


def shapes_of(workload: str) -> list[tuple[int, ...]]:
    model = tf.keras.Sequential(make_layers(workload))
    model.build((None, *INPUT_SHAPES[workload]))
    return [tuple(int(d) for d in v.shape) for v in model.trainable_variables]


def per_variable(shapes, alg: str):
    def step(seed):
        total = tf.constant(0.0)
        for i, shape in enumerate(shapes):
            noise = tf.random.stateless_normal(
                shape, seed=tf.random.experimental.stateless_fold_in(seed, i), stddev=1.1, alg=alg
            )
            total += tf.reduce_sum(tf.zeros(shape) + noise)
        return total

    return step


def fused(shapes, alg: str):
    sizes = [int(np.prod(s)) for s in shapes]

    def step(seed):
        flat = tf.random.stateless_normal([sum(sizes)], seed=seed, stddev=1.1, alg=alg)
        total = tf.constant(0.0)
        for part, shape in zip(tf.split(flat, sizes), shapes, strict=True):
            total += tf.reduce_sum(tf.zeros(shape) + tf.reshape(part, shape))
        return total

    return step


def stateful(shapes):
    generator = tf.random.Generator.from_seed(1, alg="philox")

    def step(seed):
        del seed
        total = tf.constant(0.0)
        for shape in shapes:
            total += tf.reduce_sum(tf.zeros(shape) + generator.normal(shape, stddev=1.1))
        return total

    return step


def empty(shapes):
    def step(seed):
        return tf.cast(seed[0], tf.float32) * 0.0

    return step


def ms_per_step(step_fn) -> float:
    @tf.function
    def chunk(seed):
        total = tf.constant(0.0)
        for s in tf.range(STEPS, dtype=tf.int64):
            total += step_fn(tf.random.experimental.stateless_fold_in(seed, s))
        return total

    seed = tf.constant([3, 4], tf.int64)
    chunk(seed).numpy()  # traces
    best = float("inf")
    for _ in range(REPEAT):
        start = time.perf_counter()
        chunk(seed).numpy()
        best = min(best, time.perf_counter() - start)
    return 1e3 * best / STEPS


def timed(step_fn, loop: float) -> float | str:
    """ms per step beyond the empty loop, or why the draw fails on this TensorFlow."""
    try:
        return ms_per_step(step_fn) - loop
    except (tf.errors.OpError, ValueError, TypeError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        cause = [line for line in lines if not line.startswith(("Graph", "Detected", "File", "[["))]
        return f"fails: {type(err).__name__}: {(cause or lines or [''])[0][:110]}"


def main() -> None:
    from op_tensorflow import keras_seam

    print(f"bench_noise: {keras_seam.keras_description()}, {os.cpu_count()} CPUs, {STEPS} steps a call,", end=" ")
    print(f"best of {REPEAT}")
    for workload in ("mlp", "conv", "embed"):
        shapes = shapes_of(workload)
        params = sum(int(np.prod(s)) for s in shapes)
        loop = ms_per_step(empty(shapes))
        rows = [(f"per variable, {alg}" + (" (the engine today)" if alg == "auto_select" else ""),
                 timed(per_variable(shapes, alg), loop)) for alg in ALGS]  # fmt: skip
        rows += [(f"one fused draw, {alg}", timed(fused(shapes, alg), loop)) for alg in ALGS]
        rows.append(("stateful Generator (philox), per variable", timed(stateful(shapes), loop)))
        today = rows[2][1]
        print(f"\n### {workload}: {len(shapes)} variables, {params:,} parameters (empty loop {loop:.3f} ms/step)\n")
        print("| noise draw | ms/step | / today | M normals/s |")
        print("|---|---:|---:|---:|")
        for name, ms in rows:
            cells = f"{ms:.3f} | {ms / today:.2f} | {params / ms / 1e3:.0f}" if isinstance(ms, float) else f"{ms} | |"
            print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
