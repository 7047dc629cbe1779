"""Graph-side DP-SGD: per-example gradient norms, clipping and noise.

One DP-SGD step on a batch ``(x, y)`` takes one of two exact paths, chosen for the model by
:mod:`op_tensorflow.preflight` before any budget is spent:

* **ghost norms** (the fast path, for models where every trainable variable is used by exactly one layer
  call): a forward pass records, for every layer with trainable weights, the tensor its registry function
  needs (:mod:`op_tensorflow.registry`; unregistered layers take the vectorized per-example fallback); a
  first backward pass to those tensors gives every example's gradient norm (no per-example gradient is
  materialized for registered layers); a second backward pass of the per-example losses weighted by
  ``min(1, C / ||g_i||)`` gives the sum of clipped gradients.
* **per-example gradients** (for shared layers, tied weights, masks, constant layer arguments and trainable
  layers with internal randomness): each example's gradient over all variables is computed on its own
  (``tf.vectorized_map`` over the whole model), clipped and summed. Norm and contribution come from the same
  gradient, so they share every random draw and every use of a variable.

An example whose loss or gradient norm is not finite contributes zero, and the step goes on: whether
training continues never depends on one record. Gaussian noise of standard deviation
``C * noise_multiplier`` is then added and the sum divided by the *expected* batch size ``q * n``.

Everything runs inside ``tf.function`` with an unknown batch dimension, so Poisson batches of any size
(including 0) never retrace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import tensorflow as tf

from op_tensorflow import keras_seam, sparse_noise
from op_tensorflow.registry import clipped_sum_of, fallback_layer_computation, make_registry
from op_tensorflow.registry.fallback import map_over_examples

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

GHOST, PER_EXAMPLE = "ghost", "per_example"
PATHS = (GHOST, PER_EXAMPLE)


def layer_hook(tape: tf.GradientTape, registry, *, training: bool = True):
    """The per-layer hook of the ghost-norm forward pass: ``(layer, args, kwargs) -> (outputs, hook)``.

    ``hook`` is None for layers without trainable weights, else ``(layer, base_vars, sqr_norm_fn, clipped_sum)``
    (``clipped_sum`` None when the registry function gives none: see :mod:`op_tensorflow.registry`).

    ``sqr_norm_fn`` runs as written, not through AutoGraph: norm functions are plain tensor code, and
    tensorflow-privacy's einsum utilities (behind the Dense norms) call ``os.path.commonprefix``, whose
    source AutoGraph cannot read (it lives in the frozen ``genericpath`` module), so converting them
    logged "AutoGraph could not transform <function commonprefix ...>" at every fit.
    """

    registry_tape = keras_seam.registry_tape(tape)

    def hook(layer, args, kwargs):
        kwargs = keras_seam.with_training(layer, kwargs, training)
        if not layer.trainable_variables:
            return layer(*args, **kwargs), None
        fn = registry.lookup(layer) if registry.is_elem(layer) else fallback_layer_computation
        try:
            base_vars, outputs, sqr_norm_fn = fn(layer, args, kwargs, registry_tape, None)
        except NotImplementedError:  # a configuration the fast path does not cover
            base_vars, outputs, sqr_norm_fn = fallback_layer_computation(layer, args, kwargs, registry_tape, None)
        base_vars = tf.nest.map_structure(keras_seam.tape_target, base_vars)
        clipped_sum = clipped_sum_of(sqr_norm_fn)
        return outputs, (layer, base_vars, tf.autograph.experimental.do_not_convert(sqr_norm_fn), clipped_sum)

    return hook


def per_example_losses(loss_fn: LossFn, y: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """A vector of one loss per example (extra axes, e.g. time steps, are averaged).

    Labels of shape ``(batch,)`` are given a trailing axis first, as Keras' ``fit`` does.
    """
    if y.shape.rank == 1:
        y = tf.expand_dims(y, -1)
    losses = loss_fn(y, y_pred)
    rank = losses.shape.rank
    if rank is not None and rank > 1:
        losses = tf.reduce_mean(losses, axis=list(range(1, rank)))
    return tf.reshape(losses, [-1])


def clip_factors(norms: tf.Tensor, losses: tf.Tensor, l2_norm_clip: float) -> tuple[tf.Tensor, tf.Tensor]:
    """``(factors, ok)``: ``min(1, C / norm)`` per example, and 0 where the loss or the norm is not finite."""
    ok = tf.logical_and(tf.math.is_finite(norms), tf.math.is_finite(tf.cast(losses, norms.dtype)))
    factors = tf.where(ok, l2_norm_clip / tf.maximum(tf.where(ok, norms, l2_norm_clip), l2_norm_clip), 0.0)
    return tf.stop_gradient(tf.cast(factors, tf.float32)), ok


def _norm_pass(model, x, y, loss_fn, registry, training):
    """The forward pass and the one backward pass to the layers' base vars: ``(hooks, base_grads, losses, tape)``."""
    variables = keras_seam.tape_variables(model.trainable_variables)
    tape = tf.GradientTape(persistent=True, watch_accessed_variables=False)
    with tape:
        tape.watch(variables)
        outputs, hooks = keras_seam.forward_pass(model, x, layer_hook(tape, registry, training=training))
        losses = per_example_losses(loss_fn, y, outputs)
        summed_loss = tf.reduce_sum(losses)
    hooks = [h for h in hooks if h is not None]
    base_grads = tape.gradient(summed_loss, [h[1] for h in hooks], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return hooks, base_grads, losses, tape


def ghost_norms(model, x, y, loss_fn, *, registry=None, training: bool = True):
    """Per-example gradient norms by ghost clipping: ``(norms, losses, per_layer, tape)``.

    ``per_layer`` lists ``(layer, squared norms of that layer's weights)`` for every hooked layer call;
    ``tape`` is the persistent tape of the forward pass (the caller deletes it).
    """
    registry = make_registry() if registry is None else registry
    hooks, base_grads, losses, tape = _norm_pass(model, x, y, loss_fn, registry, training)
    norms, per_layer = _norms(hooks, base_grads, losses)
    return norms, losses, per_layer, tape


def _norms(hooks, base_grads, losses) -> tuple[tf.Tensor, list]:
    """Each example's gradient norm over every hooked layer, and ``(layer, squared norms)`` per layer call."""
    per_layer = [(h[0], h[2](g)) for h, g in zip(hooks, base_grads, strict=True)]
    squared = tf.add_n([s for _, s in per_layer]) if per_layer else tf.zeros_like(losses)
    return tf.sqrt(squared), per_layer


def _direct_sums(hooks, base_grads, factors) -> dict[int, tf.Tensor | tf.IndexedSlices]:
    """Clipped sums from the norm pass for the layers whose registry function gives one, keyed by ``id(variable)``.

    A layer's sums are used only if they cover exactly its trainable variables (a LoRA Dense, say, trains
    other variables than the kernel it was written for); its variables then take the second pass instead.
    """
    sums: dict[int, tf.Tensor | tf.IndexedSlices] = {}
    for (layer, _, _, clipped_sum), grads in zip(hooks, base_grads, strict=True):
        if clipped_sum is None:
            continue
        pairs = clipped_sum(grads, factors)
        if {id(v) for v, _ in pairs} == {id(v) for v in layer.trainable_variables} and len(pairs) == len(
            layer.trainable_variables
        ):
            sums.update((id(v), g) for v, g in pairs)
    return sums


def _ghost_clipped_sum(model, x, y, loss_fn, l2_norm_clip, registry, training, *, dense: bool = True):
    """Norms, then the clipped sum: from the norm pass where the layers allow it, else one more backward pass."""
    hooks, base_grads, losses, tape = _norm_pass(model, x, y, loss_fn, registry, training)
    norms, _ = _norms(hooks, base_grads, losses)
    factors, ok = clip_factors(norms, losses, l2_norm_clip)
    sums = _direct_sums(hooks, base_grads, factors)
    trainable = model.trainable_variables
    rest = [i for i, v in enumerate(trainable) if id(v) not in sums]
    if rest:  # the second backward pass, for the variables no registry function covers
        variables = keras_seam.tape_variables([trainable[i] for i in rest])
        second = tape.gradient(
            losses, variables, output_gradients=factors, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        sums.update((id(trainable[i]), g) for i, g in zip(rest, second, strict=True))
    del tape
    grads = [sums[id(v)] for v in trainable]
    if dense:
        grads = [tf.convert_to_tensor(g) for g in grads]
    return grads, norms, losses, ok


def pack_sparse(grads: Sequence, batch_size: tf.Tensor) -> list:
    """Each ``tf.IndexedSlices`` sum as a ``SparseRows`` tuple (which ``tf.cond`` can return), dense ones as they are.

    The lookups of an embedding table's sum are row-major over the examples' ids, so reshaping its indices to
    ``(batch, -1)`` gives each example's ids, from which the contribution-map counts are taken here.
    """
    packed = []
    for g in grads:
        if isinstance(g, tf.IndexedSlices):
            indices = tf.cast(g.indices, tf.int64)
            rows, counts = sparse_noise.row_counts(tf.reshape(indices, tf.stack([batch_size, -1])))
            packed.append(SparseRows(g.values, indices, rows, counts))
        else:
            packed.append(g)
    return packed


class SparseRows(NamedTuple):
    """A table's clipped sum as lookups (``values`` one row per lookup, ``indices`` their row ids), with the
    rows the batch touched and their contribution-map counts (:func:`op_tensorflow.sparse_noise.row_counts`)."""

    values: tf.Tensor
    indices: tf.Tensor
    rows: tf.Tensor
    counts: tf.Tensor


def sum_kind(grad) -> tf.DType | None:
    """What :func:`zero_sum` needs to know of a clipped sum: its values' dtype if it is ``SparseRows``, else None."""
    return grad.values.dtype if isinstance(grad, SparseRows) else None


def zero_sum(variable, kind: tf.DType | None = None):
    """A zero clipped sum for ``variable``: dense, or ``SparseRows`` with no lookup when ``kind`` is a dtype."""
    if kind is not None:
        return SparseRows(
            tf.zeros([0, *variable.shape[1:]], kind),
            tf.zeros([0], tf.int64),
            tf.zeros([0], tf.int64),
            tf.zeros([0], tf.float32),
        )
    return tf.zeros(variable.shape, variable.dtype)


def per_example_gradients(model, x, y, loss_fn, *, training: bool = True):
    """Each example's gradient, computed on its own: ``(grads, norms, losses)``, grads stacked on axis 0."""
    variables = keras_seam.tape_variables(model.trainable_variables)

    def one(example):
        xi, yi = example
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            loss = per_example_losses(loss_fn, yi[None], model(xi[None], training=training))[0]
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grads = [tf.convert_to_tensor(g) for g in grads]
        squared = tf.add_n(
            [tf.reduce_sum(tf.square(tf.cast(g, tf.float64))) for g in grads] or [tf.constant(0.0, tf.float64)]
        )
        return grads, tf.cast(tf.sqrt(squared), tf.float32), loss

    signature = (
        [tf.TensorSpec(v.shape, v.dtype) for v in variables],
        tf.TensorSpec([], tf.float32),
        tf.TensorSpec([], tf.float32),
    )
    return tf.cond(
        tf.shape(x)[0] > 0,
        lambda: map_over_examples(one, (x, y), signature, key=model),
        lambda: tf.nest.map_structure(lambda s: tf.zeros([0, *s.shape], s.dtype), signature),
    )


def _per_example_clipped_sum(model, x, y, loss_fn, l2_norm_clip, training):
    grads, norms, losses = per_example_gradients(model, x, y, loss_fn, training=training)
    factors, ok = clip_factors(norms, losses, l2_norm_clip)
    summed = []
    for g in grads:
        shape = tf.concat([tf.shape(ok), tf.ones([g.shape.rank - 1], tf.int32)], 0)
        keep = tf.reshape(ok, shape)
        # where, not a product: 0 * inf would poison the sum with one example's NaN.
        summed.append(
            tf.reduce_sum(tf.where(keep, g * tf.reshape(tf.cast(factors, g.dtype), shape), tf.zeros_like(g)), 0)
        )
    return summed, norms, losses, ok


def clipped_gradient_sum(
    model: tf.keras.Model,
    x: tf.Tensor,
    y: tf.Tensor,
    loss_fn: LossFn,
    l2_norm_clip: float,
    *,
    registry=None,
    path: str = GHOST,
    training: bool = True,
    sparse: bool = False,
) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor]:
    """Sum over the batch of per-example gradients clipped to ``l2_norm_clip``.

    Args:
        model: A built functional or Sequential Keras model.
        x: A batch of inputs (first axis: examples; may be empty).
        y: The matching labels.
        loss_fn: Returns per-example losses (reduction NONE) from ``(y, y_pred)``.
        l2_norm_clip: The clipping bound C on each example's gradient (global L2 norm over
            all trainable variables).
        registry: A fast-norm layer registry; ``registry.make_registry()`` if None.
        path: ``"ghost"`` (ghost norms and a second backward pass) or ``"per_example"`` (each example's
            gradient on its own); :func:`op_tensorflow.preflight.plan_clipping` chooses it.
        training: The Keras training flag of the layer calls.
        sparse: Keep embedding tables' sums sparse, as :class:`SparseRows` (ghost path only), for the
            sparse embedding noise.

    Returns:
        ``(grads, norms, losses)``: the clipped gradient sum, one dense tensor per trainable
        variable of ``model``; each example's unclipped gradient norm; per-example losses.
        Examples whose loss or norm is not finite are left out of the sum.
    """
    if path == PER_EXAMPLE:
        grads, norms, losses, _ = _per_example_clipped_sum(model, x, y, loss_fn, l2_norm_clip, training)
        return grads, norms, losses
    if path != GHOST:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}.")
    registry = make_registry() if registry is None else registry

    def pass_on(a, b):
        grads, norms, losses, ok = _ghost_clipped_sum(
            model, a, b, loss_fn, l2_norm_clip, registry, training, dense=not sparse
        )
        return (pack_sparse(grads, tf.shape(losses)[0]) if sparse else grads), norms, losses, ok

    grads, norms, losses, ok = pass_on(x, y)

    # 0 * inf inside the second backward pass turns a weighted-out example into NaN for the whole sum, so a
    # batch with a non-finite example is computed again without it. (One cond on the whole batch: a check of
    # every variable's sum would cost more than the cond on small models.)
    variables = model.trainable_variables

    def without_bad_rows():
        def recompute():
            again = pass_on(tf.boolean_mask(x, ok), tf.boolean_mask(y, ok))[0]
            return [
                g if isinstance(g, SparseRows) else tf.ensure_shape(g, v.shape)
                for g, v in zip(again, variables, strict=True)
            ]

        # no row left: a zero sum, without running the model on 0 rows (see the engine's empty-batch cond)
        kinds = [sum_kind(g) for g in grads]
        return tf.cond(
            tf.reduce_any(ok), recompute, lambda: [zero_sum(v, k) for v, k in zip(variables, kinds, strict=True)]
        )

    grads = tf.cond(tf.reduce_all(ok), lambda: grads, without_bad_rows)
    return grads, norms, losses


# Variables below this many values share one draw (one sampler call costs ~5 us on CPU, more than drawing
# a few thousand normals; bench/bench_noise.py); larger ones are drawn alone, bound by the sampler's throughput.
FUSE_BELOW = 4096
FUSED_GROUP_MAX = 65536


def noise_groups(sizes: Sequence[int]) -> list[list[int]]:
    """Which variables share one Gaussian draw: lists of indices into ``sizes``, a function of the sizes only.

    A variable of ``FUSE_BELOW`` values or more is drawn alone; the smaller ones are fused, in order, into
    groups of at most ``FUSED_GROUP_MAX`` values. The grouping depends on nothing but the sizes, so the
    same seeds give the same noise on one device and on any number of replicas.
    """
    groups: list[list[int]] = []
    small: list[int] = []
    small_total = 0
    for i, size in enumerate(sizes):
        if size >= FUSE_BELOW:
            groups.append([i])
            continue
        if small and small_total + size > FUSED_GROUP_MAX:
            groups.append(small)
            small, small_total = [], 0
        small.append(i)
        small_total += size
    if small:
        groups.append(small)
    return sorted(groups)


def add_noise(
    grads: Sequence[tf.Tensor], stddev: float, seed: tf.Tensor, *, divide_by: float, drawn: Sequence | None = None
) -> list[tf.Tensor]:
    """``(g + N(0, stddev^2 I)) / divide_by`` for each gradient, from stateless seeded noise.

    Gradients are drawn in the groups of :func:`noise_groups` (static shapes): group k's noise is one
    ``stateless_normal`` from ``fold_in(seed, k)``, split into its gradients. ``drawn[k]`` (a bool or a
    boolean tensor) says whether this replica adds group k's noise; None means every group's (one device).
    """
    sizes = [g.shape.num_elements() for g in grads]
    noisy = list(grads)
    for k, group in enumerate(noise_groups(sizes)):

        def with_noise(group=group, k=k):
            members = [grads[i] for i in group]
            noise = tf.random.stateless_normal(
                [sum(sizes[i] for i in group)],
                seed=tf.random.experimental.stateless_fold_in(seed, k),
                stddev=stddev,
                dtype=members[0].dtype,
            )
            parts = tf.split(noise, [sizes[i] for i in group]) if len(group) > 1 else [noise]
            return [g + tf.cast(tf.reshape(part, g.shape), g.dtype) for g, part in zip(members, parts, strict=True)]

        here = True if drawn is None else drawn[k]
        unchanged = lambda group=group: [tf.identity(grads[i]) for i in group]  # noqa: E731
        summed = with_noise() if here is True else tf.cond(here, with_noise, unchanged)
        for i, value in zip(group, summed, strict=True):
            noisy[i] = value
    return [g / divide_by for g in noisy]
