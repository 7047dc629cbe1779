"""The soundness preflight: before any budget is reserved, prove on public synthetic data that the model,
its loss and the engine keep each example's influence within ``l2_norm_clip``.

``run_preflight`` works on a few synthetic examples of the loader's shapes (drawn within the columns'
public metadata bounds; no private row is read) and

1. walks the layer graph and chooses the clipping path (:class:`ClippingPlan`): ghost norms, or exact
   per-example gradients when a trainable variable is used by several layer calls (shared layers, shared
   nested models, weight tying), when the graph carries Keras masks, or when a trainable layer draws random
   numbers in training (dropout inside an LSTM or an attention layer);
2. checks **batch independence**: perturbing one example must not move any other example's outputs or
   loss, in inference and in training mode, and the loss must give one value per example;
3. **self-checks the norms**: the engine's per-example norms (per layer, for the ghost path) must match a
   one-example-at-a-time computation, and its per-example losses must match ``model(x)``'s. A ghost-norm
   mismatch moves the model to the per-example path (naming the layers); a remaining mismatch refuses it.

``PrivateKerasModel.fit`` then traces the real training step, also before the reservation, so graph
errors appear before anything is spent. Anything that fails raises ``PrivacyError`` or ``ValueError``
naming the cause, and nothing was spent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections import Counter

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context as tf_context

from op_tensorflow import clipping, keras_seam
from op_tensorflow.errors import PrivacyError


class _DropPreflightRetracingWarnings(logging.Filter):
    """Each preflight traces its checks once, for the model at hand: by design, not a retracing problem.

    TensorFlow counts traces per Python function across closures, so from the sixth model checked in
    a session (tests, notebooks, R sessions) it warned "triggered tf.function retracing" at every fit.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and "_check_norms.<locals>." in message)


logging.getLogger("tensorflow").addFilter(_DropPreflightRetracingWarnings())

__all__ = [
    "ClippingPlan",
    "check_batch_independence",
    "plan_clipping",
    "run_preflight",
    "synthetic_batch",
    "synthetic_examples",
]

SYNTHETIC_EXAMPLES = 5
_RTOL, _ATOL = 1e-3, 1e-5


@dataclasses.dataclass(frozen=True)
class ClippingPlan:
    """How the engine clips this model: ``path`` is ``"ghost"`` or ``"per_example"``, with the reasons."""

    path: str = clipping.GHOST
    reasons: tuple[str, ...] = ()

    def __post_init__(self):
        if self.path not in clipping.PATHS:
            raise ValueError(f"path must be one of {clipping.PATHS}, got {self.path!r}.")

    def __str__(self) -> str:
        if self.path == clipping.GHOST:
            return "ghost norms (one forward pass, two backward passes)"
        return "exact per-example gradients, because " + "; ".join(self.reasons)


def _columns(bounds, size: int, rng, integers: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` rows of synthetic column values, and the same rows with row 0 changed in every column.

    Unbounded columns get integers in ``[0, integers)``; bounded columns uniform values within the bounds.
    """
    rows, changed = np.empty((size, len(bounds)), np.float32), np.empty(len(bounds), np.float32)
    for j, b in enumerate(bounds):
        if b is None:
            rows[:, j] = rng.integers(0, integers, size)
            changed[j] = (rows[0, j] + rng.integers(1, integers)) % integers
        else:
            rows[:, j] = rng.uniform(b[0], b[1], size)
            changed[j] = b[0] + b[1] - rows[0, j] if b[1] > b[0] else b[0]  # mirrored: differs unless degenerate
    altered = rows.copy()
    altered[0] = changed
    return rows, altered


def synthetic_examples(bounds, shape, *, size: int = SYNTHETIC_EXAMPLES, seed: int = 0, integers: int = 4):
    """``(batch, altered)``: ``size`` synthetic examples of per-example ``shape``, and a copy whose example 0
    differs in every column. Unbounded columns are small integers (valid indices for any Embedding with at
    least ``integers`` rows, zeros included for masks)."""
    rows, altered = _columns(bounds, size, np.random.default_rng(seed), integers)
    return tf.constant(rows.reshape((size, *shape))), tf.constant(altered.reshape((size, *shape)))


def synthetic_batch(loader, size: int = SYNTHETIC_EXAMPLES, seed: int = 0):
    """``(x, y, x_alt, y_alt)``: public synthetic examples with the loader's shapes (within its columns'
    metadata bounds; unbounded labels are 0 or 1), and the same batch with example 0 changed."""
    x, x_alt = synthetic_examples(loader._feature_bounds, loader._input_shape, size=size, seed=seed)
    y, y_alt = synthetic_examples(loader._label_bounds, loader._label_shape, size=size, seed=seed + 1, integers=2)
    return x, y, x_alt, y_alt


def _close(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    both_finite = np.isfinite(a) & np.isfinite(b)
    same = np.where(both_finite, np.abs(a - b) <= _ATOL + _RTOL * np.abs(b), np.isnan(a) == np.isnan(b))
    return same.reshape((len(same), -1)).all(axis=1) if same.ndim else same


# ------------------------------------------------------------------------------------------- the walk


_tape_vars = keras_seam.tape_variables


def plan_clipping(model: tf.keras.Model, x: tf.Tensor) -> ClippingPlan:
    """Chooses the clipping path from one eager walk of the layer graph on public inputs ``x``."""
    calls, owners, foreign, random, masks = Counter(), {}, [], [], []
    names = {
        id(t): v.name for v, t in zip(model.trainable_variables, _tape_vars(model.trainable_variables), strict=True)
    }

    def hook(layer, args, kwargs):
        kwargs = keras_seam.with_training(layer, kwargs, True)
        with tf.GradientTape(watch_accessed_variables=True) as tape:
            outputs = layer(*args, **kwargs)
        own = {id(t) for t in _tape_vars(layer.trainable_variables)}
        foreign.extend(
            (layer.name, names[id(v)]) for v in tape.watched_variables() if id(v) in names and id(v) not in own
        )
        if keras_seam.output_has_mask(outputs) and layer.name not in masks:
            masks.append(layer.name)
        if own:
            calls[layer.name] += 1
            for ref in own:
                owners.setdefault(ref, set()).add(layer.name)
            if keras_seam.call_has_training_arg(layer):
                again = layer(*args, **kwargs)
                if not all(
                    _close(a, b).all() for a, b in zip(tf.nest.flatten(outputs), tf.nest.flatten(again), strict=True)
                ):
                    random.append(layer.name)
        return outputs, None

    keras_seam.forward_pass(model, x, hook)
    reasons = []
    shared = sorted(name for name, count in calls.items() if count > 1)
    if shared:
        reasons.append(f"layer(s) {shared} are called at several places in the graph (shared weights)")
    multi_owned = sorted({n for names in owners.values() if len(names) > 1 for n in names} - set(shared))
    if multi_owned:
        reasons.append(f"layers {multi_owned} hold the same trainable variables")
    if foreign:
        pairs = sorted({f"{layer} reads {var}" for layer, var in foreign})
        reasons.append(f"weights are used outside the layer that owns them ({', '.join(pairs)})")
    if masks:
        reasons.append(f"the graph carries Keras masks (from {masks})")
    if random:
        reasons.append(f"trainable layer(s) {sorted(set(random))} draw random numbers in training (dropout)")
    return ClippingPlan(clipping.PER_EXAMPLE, tuple(reasons)) if reasons else ClippingPlan()


# ---------------------------------------------------------------------------------- batch independence


def check_batch_independence(model, loss_fn, x, y, x_alt, y_alt) -> None:
    """Refuses a model or loss under which one example's outputs or loss depend on another example.

    With ``loss_fn`` None only the outputs are checked (for predictions on private data).
    """
    n = int(x.shape[0])
    for training in (False, True) if loss_fn is not None else (False,):
        draws_randomly = training and _is_random(model, x)
        with _same_random_draws(model, draws_randomly) as reseed:
            reseed()
            outputs = tf.nest.flatten(model(x, training=training))
            reseed()
            outputs_alt = tf.nest.flatten(model(x_alt, training=training))
        if not all(_close(a[1:], b[1:]).all() for a, b in zip(outputs, outputs_alt, strict=True)):
            with _same_random_draws(model, draws_randomly) as reseed:
                layer = _first_mixing_layer(model, x, x_alt, training, reseed)
            mode = "training" if training else "inference"
            raise PrivacyError(
                f"the model mixes examples in {mode} mode{f' at layer {layer!r}' if layer else ''}: changing one "
                "example changed the outputs of other examples (a layer uses statistics of the whole batch, e.g. a "
                "batch mean, axis=0 normalization or softmax). Per-example clipping cannot bound one example's "
                "influence then. Use layers that act on each example alone (for BatchNormalization: "
                "op_tensorflow.fix_model(model))."
            )
        if loss_fn is None:
            continue
        losses = clipping.per_example_losses(loss_fn, y, outputs[0])
        losses_alt = clipping.per_example_losses(loss_fn, y_alt, outputs_alt[0])
        if losses.shape[0] != n:
            raise PrivacyError(
                f"the loss returns {losses.shape[0]} value(s) for a batch of {n} examples: DP-SGD needs one loss per "
                "example (reduction over the batch is done by the engine). Return a per-example loss, e.g. "
                "tf.reduce_mean(tf.square(y_true - y_pred), axis=-1)."
            )
        if not training and not np.isfinite(losses.numpy()).any():
            raise ValueError(
                f"the loss is not finite (NaN or inf) for any of {n} public synthetic examples, so every private "
                "example would likely contribute nothing (examples with a non-finite loss are left out of the "
                "gradient sum). Check the loss function; declare the features' ranges as metadata=... if the "
                "model needs inputs in a range."
            )
        if not _close(losses[1:], losses_alt[1:]).all():
            raise PrivacyError(
                "the loss mixes examples: changing one example changed the loss of other examples (it uses a batch "
                "statistic). Per-example clipping cannot bound one example's influence then; use a loss that "
                "depends on each example's label and prediction alone."
            )


@contextlib.contextmanager
def _same_random_draws(model, needed: bool):
    """Yields ``reseed()``, which makes the next model call draw the same random numbers as the last one.

    TensorFlow's global seed (and, on Keras 3, the layers' seed-generator states) are restored afterwards, so
    the user's own seeding is unchanged.
    """
    if not needed:
        yield lambda: None
        return
    previous = tf_context.global_seed()
    states = keras_seam.random_states(model)

    def reseed():
        tf.random.set_seed(1)
        keras_seam.restore_random_states(states)

    try:
        yield reseed
    finally:
        tf.random.set_seed(previous)
        keras_seam.restore_random_states(states)


def _first_mixing_layer(model, x, x_alt, training, reseed) -> str | None:
    """The first layer (in graph order) whose outputs for the other examples move when example 0 changes."""
    recorded = []

    def hook(layer, args, kwargs):
        kwargs = keras_seam.with_training(layer, kwargs, training)
        outputs = layer(*args, **kwargs)
        recorded.append((layer.name, [t for t in tf.nest.flatten(outputs) if tf.is_tensor(t) and t.shape.rank]))
        return outputs, None

    reseed()
    keras_seam.forward_pass(model, x, hook)
    first, recorded[:] = list(recorded), []
    reseed()
    keras_seam.forward_pass(model, x_alt, hook)
    for (name, a), (_, b) in zip(first, recorded, strict=True):
        if not all(_close(u[1:], v[1:]).all() for u, v in zip(a, b, strict=True)):
            return name
    return None


def _is_random(model, x) -> bool:
    a = tf.nest.flatten(model(x, training=True))
    b = tf.nest.flatten(model(x, training=True))
    return not all(_close(u, v).all() for u, v in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------- the norm self-check


def _reference(model, loss_fn, x, y):
    """Per-example squared gradient norms per variable, one example at a time (eager, inference mode)."""
    rows = []
    variables = _tape_vars(model.trainable_variables)
    for i in range(int(x.shape[0])):
        with tf.GradientTape() as tape:
            loss = clipping.per_example_losses(loss_fn, y[i : i + 1], model(x[i : i + 1], training=False))[0]
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        rows.append([float(tf.reduce_sum(tf.square(tf.cast(tf.convert_to_tensor(g), tf.float64)))) for g in grads])
    return np.array(rows).reshape((len(rows), len(variables)))


def _batched_spec(t: tf.Tensor) -> tf.TensorSpec:
    return tf.TensorSpec([None, *t.shape[1:]], t.dtype)


def _check_norms(model, loss_fn, x, y, plan, registry) -> ClippingPlan:
    variables = model.trainable_variables
    reference = _reference(model, loss_fn, x, y)
    expected_losses = clipping.per_example_losses(loss_fn, y, model(x, training=False))
    spec = [_batched_spec(x), _batched_spec(y)]
    if plan.path == clipping.GHOST:
        layers = []  # the hooked layer calls, in order, recorded when ghost() is traced

        @tf.function(input_signature=spec)
        def ghost(a, b):
            norms, losses, per_layer, tape = clipping.ghost_norms(
                model, a, b, loss_fn, registry=registry, training=False
            )
            del tape
            layers[:] = [layer for layer, _ in per_layer]
            return norms, losses, [s for _, s in per_layer]

        norms, losses, per_layer = ghost(x, y)
        index = {id(t): j for j, t in enumerate(_tape_vars(variables))}
        wrong = [
            layer.name
            for layer, squared in zip(layers, per_layer, strict=True)
            if not _close(
                squared, reference[:, [index[id(t)] for t in _tape_vars(layer.trainable_variables)]].sum(axis=1)
            ).all()
        ]
        if not wrong and not _close(norms, np.sqrt(reference.sum(axis=1))).all():
            wrong = ["(the model as a whole)"]
        if not wrong and _close(losses, expected_losses).all():
            return plan
        reason = (
            f"the ghost norms of layer(s) {wrong} did not match a one-example computation"
            if wrong
            else "the ghost-norm forward pass gave other losses than model(x)"
        )
        plan = ClippingPlan(clipping.PER_EXAMPLE, (reason,))

    @tf.function(input_signature=spec)
    def exact(a, b):
        _, norms, losses = clipping.per_example_gradients(model, a, b, loss_fn, training=False)
        return norms, losses

    norms, losses = exact(x, y)
    if not _close(norms, np.sqrt(reference.sum(axis=1))).all():
        raise PrivacyError(
            "the per-example gradient norms of this model could not be computed exactly (they differ from a "
            "one-example-at-a-time computation), so its examples' influence cannot be bounded. Please report the "
            "model; simplify custom layers."
        )
    if not _close(losses, expected_losses).all():
        raise PrivacyError(
            "the per-example losses of this model depend on the batch they are computed in (they differ from "
            "model(x)'s), so one example's influence cannot be bounded. Use layers that act on each example alone."
        )
    return plan


# ------------------------------------------------------------------------------------------- the whole


def run_preflight(model, loss_fn, loader, registry) -> ClippingPlan:
    """Runs the whole preflight for ``model`` trained on ``loader``'s shapes; returns the clipping plan."""
    x, y, x_alt, y_alt = synthetic_batch(loader)
    try:
        check_batch_independence(model, loss_fn, x, y, x_alt, y_alt)
        plan = plan_clipping(model, x)
        return _check_norms(model, loss_fn, x, y, plan, registry)
    except PrivacyError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, tf.errors.OpError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"the model cannot train on the loader's shapes (input {tuple(loader._input_shape)}, labels "
            f"{tuple(loader._label_shape)}) with this loss: {type(err).__name__}: {first}"
        ) from err
