"""Where our DP-SGD step's time goes, by ablation, per workload, on the current Keras stack (issue #14).

The models, data, losses and optimizers are ``bench_model.py``'s (MLP, convnet with LayerNorm, embedding
model). Every variant is one ``tf.function`` running STEPS (32, as ``fit``'s graph calls) steps in a
``tf.range`` loop over one fixed batch of b rows drawn once from the data (no sampling), except where sampling
is the point; each is built from the engine's own functions, so the rows add up to its step:

* ``(0)`` the empty 32-step loop (the loop's own cost, in every row below);
* ``(a)`` non-private: the mean loss, ``tape.gradient``, ``optimizer.apply_gradients``;
* ``(b)`` sampling alone: ``PrivateDataLoader(...)._graph_sampler()`` on ``stateless_fold_in(seed, step)``;
* ``(c)`` ghost norms alone: ``clipping.ghost_norms(model, x, y, loss_fn, registry=make_registry())`` (forward
  pass and the backward pass to the layers' outputs; its persistent tape is deleted);
* ``(d)`` the clipped gradient sum: ``clipping.clipped_gradient_sum(model, x, y, loss_fn, 1.0, registry=...)``;
* ``(e)`` (d) + ``clipping.add_noise(grads, 1.1, seed, divide_by=b)``;
* ``(f)`` (e) + ``optimizer.apply_gradients``: the DP step on a fixed batch;
* ``(f')`` (f) on the same batch with its batch dimension unknown to the graph (as a Poisson batch's is), with
  the engine's empty-batch ``tf.cond``: the cost of dynamic shapes alone;
* ``(g)`` (f') on a Poisson batch sampled in the graph: ``fit``'s step (without accounting, callbacks and the
  host loop).

The loss is per example (reduction NONE, ``arguments.per_example_loss`` as ``PrivateKerasModel.compile``
builds ``_loss_fn``). Each step's result is kept alive by a cheap sink (the sum of one element of every
gradient, or of the norms) carried by the loop, so nothing is pruned; the same sink is in every row. Each
step's inputs (batch and seeds) wait for the previous step's sink (a control dependency), so steps run one
after the other as in ``fit``, where every step reads the weights the previous one wrote; without it the
loop would overlap the iterations of the stateless variants (b)-(e) on the two cores. Timing: one call to
trace, then the best of at least ``--repeat`` calls, and of as many as fit in ``--min-time`` seconds (short
calls on a shared machine need many), divided by STEPS; CPU time is the median call's. A variant whose build
or call fails reports the error in its row (the clipping module is changing: only the signatures above are
used).

``.venv/bin/python bench/bench_profile.py [--workload mlp ...] [--min-time 3] [--json out.json]``; under
tf_keras: ``TF_USE_LEGACY_KERAS=1 .venv/bin/python bench/bench_profile.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
import traceback
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_model  # noqa: E402  (its data, models, losses and optimizers)

STEPS = 32
MAX_CALLS = 1000
CLIP, NOISE = bench_model.CLIP, bench_model.NOISE
# (key, label, the row its increment is measured from)
ROWS = [
    ("empty", "(0) empty 32-step loop", None),
    ("nonprivate", "(a) non-private: loss + tape.gradient + apply_gradients", "empty"),
    ("sampling", "(b) sampling alone (`_graph_sampler`)", "empty"),
    ("norms", "(c) `ghost_norms` (forward + norm backward)", "empty"),
    ("clipped", "(d) `clipped_gradient_sum`", "norms"),
    ("noise", "(e) (d) + `add_noise`", "clipped"),
    ("dp_step", "(f) (e) + `apply_gradients` (DP step, fixed batch)", "noise"),
    ("dp_dynamic", "(f') (f) with the batch dimension unknown (+ empty-batch cond)", "dp_step"),
    ("dp_sampled", "(g) (f') on a graph-sampled Poisson batch (fit's step)", "dp_dynamic"),
    ("nonprivate_xla", "(a-XLA) (a) compiled with XLA (`jit_compile=True`), fixed batch", "empty"),
    ("dp_step_xla", "(f-XLA) (f) without the non-finite recompute, compiled with XLA, fixed batch", "empty"),
]


def setup(workload: str) -> dict:
    """Model, per-example loss, built optimizer, registry, loader and one fixed batch of the workload."""
    import numpy as np
    import tensorflow as tf

    import op_tensorflow as ot
    from op_tensorflow import arguments, keras_seam
    from op_tensorflow.registry import make_registry

    df, columns, shape = bench_model.make_data(workload)
    batch = bench_model.WORKLOADS[workload]["batch"]
    pdf = ot.PrivateDataFrame(df, budget=(float("inf"), 1e-6))
    loader = ot.PrivateDataLoader(
        pdf[columns], pdf["target"], batch, seed=0, feature_shape=shape if len(shape) > 1 else None
    )
    model = tf.keras.Sequential(bench_model.make_layers(workload))
    if not model.built:
        model.build((None, *shape))
    variables = model.trainable_variables
    optimizer = bench_model.make_optimizer(workload)
    if hasattr(optimizer, "build"):  # slots before the graph loop is traced, as training.build_train_chunk does
        optimizer.build(variables)
    else:
        optimizer._create_all_weights(variables)
    rows = np.random.default_rng(0).choice(loader._x.shape[0], size=batch, replace=False)
    return {
        "model": model,
        "variables": variables,
        "tape_variables": keras_seam.tape_variables(variables),
        "optimizer": optimizer,
        "loss_fn": arguments.per_example_loss(bench_model.make_loss(workload)),
        "registry": make_registry(),
        "loader": loader,
        "batch": batch,
        "x": tf.constant(loader._x[rows]),
        "y": tf.constant(loader._y[rows]),
    }


def _sink(tensors):
    """A scalar that depends on every tensor (one element of each) and costs next to nothing."""
    import tensorflow as tf

    parts = []
    for t in tensors:
        values = t.values if isinstance(t, tf.IndexedSlices) else t
        parts.append(tf.reduce_sum(tf.reshape(tf.cast(values, tf.float32), [-1])[:1]))
    return tf.add_n(parts) if parts else tf.constant(0.0)


def step_functions(s: dict) -> dict:
    """``key -> step(x, y, step, sampling_seed, noise_seed) -> scalar`` for every row of ROWS."""
    import tensorflow as tf

    from op_tensorflow import clipping

    model, variables, optimizer, loss_fn = s["model"], s["variables"], s["optimizer"], s["loss_fn"]
    registry, batch = s["registry"], float(s["batch"])
    sample = s["loader"]._graph_sampler()
    fold_in = tf.random.experimental.stateless_fold_in

    def labels(y):
        return tf.expand_dims(y, -1) if y.shape.rank == 1 else y

    def empty(x, y, step, sampling_seed, noise_seed):
        return tf.cast(step, tf.float32) * 0.0

    def nonprivate(x, y, step, sampling_seed, noise_seed):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(loss_fn(labels(y), model(x, training=True)))
        grads = tape.gradient(loss, s["tape_variables"])
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss + _sink(grads)

    def sampling(x, y, step, sampling_seed, noise_seed):
        xs, ys = sample(fold_in(sampling_seed, step))
        return tf.reduce_sum(xs) + tf.reduce_sum(ys)

    def norms(x, y, step, sampling_seed, noise_seed):
        values, _losses, _per_layer, tape = clipping.ghost_norms(model, x, y, loss_fn, registry=registry)
        del tape
        return tf.reduce_sum(values)

    def clipped(x, y, step, sampling_seed, noise_seed):
        grads, _norms, _losses = clipping.clipped_gradient_sum(model, x, y, loss_fn, CLIP, registry=registry)
        return _sink(grads)

    def noisy(x, y, step, noise_seed):
        grads, _norms, _losses = clipping.clipped_gradient_sum(model, x, y, loss_fn, CLIP, registry=registry)
        return clipping.add_noise(grads, CLIP * NOISE, fold_in(noise_seed, step), divide_by=batch)

    def noise(x, y, step, sampling_seed, noise_seed):
        return _sink(noisy(x, y, step, noise_seed))

    def dp_step(x, y, step, sampling_seed, noise_seed):
        grads = noisy(x, y, step, noise_seed)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return _sink(grads)

    def dp_on(xs, ys, step, noise_seed):
        grads = tf.cond(  # as training.build_train_chunk: an empty batch skips the model
            tf.shape(xs)[0] > 0,
            lambda: clipping.clipped_gradient_sum(model, xs, ys, loss_fn, CLIP, registry=registry)[0],
            lambda: [tf.zeros_like(v) for v in variables],
        )
        grads = clipping.add_noise(grads, CLIP * NOISE, fold_in(noise_seed, step), divide_by=batch)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return _sink(grads)

    def dp_dynamic(x, y, step, sampling_seed, noise_seed):
        unknown = [tf.compat.v1.placeholder_with_default(t, [None, *t.shape[1:]]) for t in (x, y)]
        return dp_on(*unknown, step, noise_seed)

    def dp_sampled(x, y, step, sampling_seed, noise_seed):
        return dp_on(*sample(fold_in(sampling_seed, step)), step, noise_seed)

    @tf.function(jit_compile=True)
    def nonprivate_xla(x, y, step, sampling_seed, noise_seed):
        return nonprivate(x, y, step, sampling_seed, noise_seed)

    @tf.function(jit_compile=True)
    def dp_step_xla(x, y, step, sampling_seed, noise_seed):
        """What XLA would give our step at a static batch size: the recompute's boolean mask cannot compile."""
        grads = clipping._ghost_clipped_sum(model, x, y, loss_fn, CLIP, registry, True)[0]
        grads = clipping.add_noise(grads, CLIP * NOISE, fold_in(noise_seed, step), divide_by=batch)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return _sink(grads)

    return {
        "empty": empty,
        "nonprivate": nonprivate,
        "sampling": sampling,
        "norms": norms,
        "clipped": clipped,
        "noise": noise,
        "dp_step": dp_step,
        "dp_dynamic": dp_dynamic,
        "dp_sampled": dp_sampled,
        "nonprivate_xla": nonprivate_xla,
        "dp_step_xla": dp_step_xla,
    }


def time_variant(body, s: dict, repeat: int, min_time: float) -> dict:
    """Trace and run the STEPS-step loop once, then the best of at least ``repeat`` calls (more, up to
    MAX_CALLS, until ``min_time`` seconds are spent): seconds per step."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def loop(x, y, sampling_seed, noise_seed):
        acc = tf.constant(0.0)
        for step in tf.range(tf.constant(STEPS, tf.int64)):
            with tf.control_dependencies([acc]):  # this step's inputs wait for the previous step
                inputs = [tf.identity(t) for t in (x, y, sampling_seed, noise_seed)]
            acc += tf.cast(body(inputs[0], inputs[1], step, inputs[2], inputs[3]), tf.float32)
        return acc

    args = (s["x"], s["y"], tf.constant(s["loader"]._sampling_seed()), tf.constant([7, 11], tf.int64))
    tic = time.perf_counter()
    value = float(loop(*args))
    first = time.perf_counter() - tic
    times, cpus, start = [], [], time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start < min_time and len(times) < MAX_CALLS):
        cpu, tic = bench_model._cpu_s(), time.perf_counter()
        loop(*args).numpy()
        times.append(time.perf_counter() - tic)
        cpus.append(bench_model._cpu_s() - cpu)
    return {
        "step_s": min(times) / STEPS,
        "cpu_step_s": sorted(cpus)[len(cpus) // 2] / STEPS,  # median: getrusage ticks are coarse for short calls
        "median_step_s": sorted(times)[len(times) // 2] / STEPS,
        "calls": len(times),
        "first_call_s": first,
        "finite": math.isfinite(value),
    }


def profile(workload: str, repeat: int, min_time: float) -> dict:
    s = setup(workload)
    bodies = step_functions(s)
    results = {}
    for key, _, _ in ROWS:
        try:
            results[key] = time_variant(bodies[key], s, repeat, min_time)
        except Exception as err:  # the engine is changing: report the failure in the row, go on
            results[key] = {"error": f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"}
            results[key]["traceback"] = traceback.format_exc()[-3000:]
        status = results[key].get("error") or f"{1e3 * results[key]['step_s']:.3f} ms/step"
        print(f"  {workload:5s} {key:11s} {status}", flush=True)
    params = sum(int(v.shape.num_elements()) for v in s["variables"])
    return {"workload": workload, "batch": s["batch"], "params": params, "rows": results}


def _ms(s) -> str:
    return "—" if s is None else f"{1e3 * s:.3f}"


def print_profile(p: dict) -> None:
    rows = p["rows"]

    def step(key):
        return rows.get(key, {}).get("step_s")

    title = bench_model.WORKLOADS[p["workload"]]["title"]
    print(f"\n### {title}: {p['params']:,} trainable parameters, b = {p['batch']}\n")
    print("| variant | ms/step | increment (ms) | over | × (a) non-private | CPU ms/step (median call) |")
    print("|---|---:|---:|---|---:|---:|")
    labels = {key: label.split(" ", 1)[0] for key, label, _ in ROWS}
    for key, label, base in ROWS:
        r = rows.get(key, {})
        if "error" in r:
            print(f"| {label} | error: {r['error'].replace('|', '/')} | | | | |")
            continue
        inc = None if base is None or step(base) is None else step(key) - step(base)
        ratio = f"{step(key) / step('nonprivate'):.2f}" if step("nonprivate") else "—"
        over = labels[base] if base else ""
        print(f"| {label} | {_ms(step(key))} | {_ms(inc)} | {over} | {ratio} | {_ms(r.get('cpu_step_s'))} |")
    parts = [
        ("forward + norm backward (c − 0)", "norms", "empty"),
        ("clip factors + clipped sum (d − c)", "clipped", "norms"),
        ("noise (e − d)", "noise", "clipped"),
        ("optimizer (f − e)", "dp_step", "noise"),
        ("dynamic batch shape (f' − f)", "dp_dynamic", "dp_step"),
        ("sampling (g − f')", "dp_sampled", "dp_dynamic"),
    ]
    total = None if step("dp_sampled") is None or step("empty") is None else step("dp_sampled") - step("empty")
    if total and all(step(a) is not None and step(b) is not None for _, a, b in parts):
        shares = ", ".join(f"{name} {100 * (step(a) - step(b)) / total:.0f}%" for name, a, b in parts)
        print(f"\nShares of the DP step (g − 0, {_ms(total)} ms): {shares}.")
    if step("dp_sampled") and step("nonprivate"):
        print(f"DP step (g) / non-private step (a): {step('dp_sampled') / step('nonprivate'):.2f}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=list(bench_model.WORKLOADS), action="append")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per variant, at least; the best is kept")
    parser.add_argument("--min-time", type=float, default=3.0, help="seconds of timed calls per variant, at least")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import absl.logging
    import tensorflow as tf

    import op_tensorflow  # noqa: F401
    from op_tensorflow import stack

    absl.logging.set_verbosity(absl.logging.ERROR)
    tf.get_logger().setLevel("ERROR")
    tf.keras.utils.set_random_seed(0)
    described = stack.describe()
    print(
        f"bench_profile, {datetime.date.today().isoformat()}, {STEPS} steps per call, best of >= {args.repeat} "
        f"calls and >= {args.min_time:g} s per variant"
    )
    print(described)
    tic = time.perf_counter()
    profiles = []
    for workload in args.workload or list(bench_model.WORKLOADS):
        try:
            profiles.append(profile(workload, args.repeat, args.min_time))
        except Exception:  # set-up failed (e.g. the loader or the model): report and go on
            profiles.append({"workload": workload, "error": traceback.format_exc()})
            print(f"  {workload}: set-up failed\n{traceback.format_exc()}", flush=True)
    for p in profiles:
        if "error" not in p:
            print_profile(p)
    total = time.perf_counter() - tic
    print(f"\ntotal {total / 60:.1f} min")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"stack": described, "steps": STEPS, "profiles": profiles, "total_s": total}, f, indent=1)


if __name__ == "__main__":
    main()
