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

import dataclasses
from collections import Counter

import numpy as np
import tensorflow as tf

from op_tensorflow import clipping, graph
from op_tensorflow.errors import PrivacyError

__all__ = ["ClippingPlan", "check_batch_independence", "plan_clipping", "run_preflight", "synthetic_batch"]

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


def _values(bounds, shape, rng, integers) -> np.ndarray:
    columns = []
    for b in bounds:
        if b is None:
            columns.append(rng.integers(0, integers, shape[0]).astype(np.float32))
        else:
            columns.append(rng.uniform(b[0], b[1], shape[0]).astype(np.float32))
    return np.stack(columns, axis=1).reshape(shape)


def synthetic_batch(loader, size: int = SYNTHETIC_EXAMPLES, seed: int = 0):
    """``(x, y)`` of ``size`` public synthetic examples with the loader's shapes, and a second batch whose
    example 0 differs. Unbounded features are small integers (valid indices for any Embedding with at
    least 4 rows, zeros included for masks); unbounded labels are 0 or 1."""
    rng = np.random.default_rng(seed)
    x = _values(loader._feature_bounds, (size + 1, *loader._input_shape), rng, 4)
    y = _values(loader._label_bounds, (size + 1, *loader._label_shape), rng, 2)
    x_alt, y_alt = x[1:].copy(), y[1:].copy()
    x_alt[0], y_alt[0] = x[0], y[0]
    return tf.constant(x[1:]), tf.constant(y[1:]), tf.constant(x_alt), tf.constant(y_alt)


def _close(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    both_finite = np.isfinite(a) & np.isfinite(b)
    same = np.where(both_finite, np.abs(a - b) <= _ATOL + _RTOL * np.abs(b), np.isnan(a) == np.isnan(b))
    return same.reshape((len(same), -1)).all(axis=1) if same.ndim else same


# ------------------------------------------------------------------------------------------- the walk


def plan_clipping(model: tf.keras.Model, x: tf.Tensor) -> ClippingPlan:
    """Chooses the clipping path from one eager walk of the layer graph on public inputs ``x``."""
    calls, owners, foreign, random = Counter(), {}, [], []
    refs = {v.ref(): v for v in model.trainable_variables}

    def hook(layer, args, kwargs):
        if graph.expects_training_arg(layer) and "training" not in kwargs:
            kwargs = {**kwargs, "training": True}
        with tf.GradientTape(watch_accessed_variables=True) as tape:
            outputs = layer(*args, **kwargs)
        own = {v.ref() for v in layer.trainable_variables}
        foreign.extend(
            (layer.name, refs[v.ref()].name) for v in tape.watched_variables() if v.ref() in refs and v.ref() not in own
        )
        if own:
            calls[layer.name] += 1
            for ref in own:
                owners.setdefault(ref, set()).add(layer.name)
            if graph.expects_training_arg(layer):
                again = layer(*args, **kwargs)
                if not all(
                    _close(a, b).all() for a, b in zip(tf.nest.flatten(outputs), tf.nest.flatten(again), strict=True)
                ):
                    random.append(layer.name)
        return outputs, None

    graph.forward_pass(model, x, hook)
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
    masks = graph.mask_producers(model)
    if masks:
        reasons.append(f"the graph carries Keras masks (from {masks})")
    if random:
        reasons.append(f"trainable layer(s) {sorted(set(random))} draw random numbers in training (dropout)")
    return ClippingPlan(clipping.PER_EXAMPLE, tuple(reasons)) if reasons else ClippingPlan()


# ---------------------------------------------------------------------------------- batch independence


def _outputs_and_losses(model, loss_fn, x, y, training):
    outputs = model(x, training=training)
    return tf.nest.flatten(outputs), clipping.per_example_losses(loss_fn, y, outputs)


def check_batch_independence(model, loss_fn, x, y, x_alt, y_alt) -> None:
    """Refuses a model or loss under which one example's outputs or loss depend on another example."""
    n = int(x.shape[0])
    for training in (False, True):
        seeded = training and _needs_seed(model, x)
        if seeded:
            tf.random.set_seed(1)
        outputs, losses = _outputs_and_losses(model, loss_fn, x, y, training)
        if seeded:
            tf.random.set_seed(1)
        outputs_alt, losses_alt = _outputs_and_losses(model, loss_fn, x_alt, y_alt, training)
        if losses.shape[0] != n:
            raise PrivacyError(
                f"the loss returns {losses.shape[0]} value(s) for a batch of {n} examples: DP-SGD needs one loss per "
                "example (reduction over the batch is done by the engine). Return a per-example loss, e.g. "
                "tf.reduce_mean(tf.square(y_true - y_pred), axis=-1)."
            )
        moved = [i for i, (a, b) in enumerate(zip(outputs, outputs_alt, strict=True)) if not _close(a[1:], b[1:]).all()]
        mode = "training" if training else "inference"
        if moved:
            raise PrivacyError(
                f"the model mixes examples in {mode} mode: changing one example changed the outputs of other examples "
                "(a layer uses statistics of the whole batch, e.g. a batch mean, axis=0 normalization or softmax). "
                "Per-example clipping cannot bound one example's influence then. Use layers that act on each "
                "example alone (for BatchNormalization: op_tensorflow.fix_model(model))."
            )
        if not _close(losses[1:], losses_alt[1:]).all():
            raise PrivacyError(
                "the loss mixes examples: changing one example changed the loss of other examples (it uses a batch "
                "statistic). Per-example clipping cannot bound one example's influence then; use a loss that "
                "depends on each example's label and prediction alone."
            )


def _needs_seed(model, x) -> bool:
    a = tf.nest.flatten(model(x, training=True))
    b = tf.nest.flatten(model(x, training=True))
    return not all(_close(u, v).all() for u, v in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------- the norm self-check


def _reference(model, loss_fn, x, y):
    """Per-example squared gradient norms per variable, one example at a time (eager, inference mode)."""
    rows = []
    variables = model.trainable_variables
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

        @tf.function(input_signature=spec)
        def ghost(a, b):
            norms, losses, per_layer, tape = clipping.ghost_norms(
                model, a, b, loss_fn, registry=registry, training=False
            )
            del tape
            return norms, losses, [s for _, s in per_layer]

        norms, losses, per_layer = ghost(x, y)
        layers = _hooked_layers(model, x)
        index = {v.ref(): j for j, v in enumerate(variables)}
        wrong = [
            layer.name
            for layer, squared in zip(layers, per_layer, strict=True)
            if not _close(squared, reference[:, [index[v.ref()] for v in layer.trainable_variables]].sum(axis=1)).all()
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


def _hooked_layers(model, x) -> list:
    layers = []

    def hook(layer, args, kwargs):
        if layer.trainable_variables:
            layers.append(layer)
        return layer(*args, **kwargs), None

    graph.forward_pass(model, x, hook)
    return layers


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
