"""Graph-side DP-SGD: per-example gradient norms, clipping and noise.

One DP-SGD step on a batch ``(x, y)``:

1. a forward pass that, for every layer with trainable weights, records the tensor the
   layer's fast-norm registry function needs (``op_tensorflow.registry``; layers without a
   registry function take the vectorized per-example fallback);
2. a first backward pass to those tensors gives every example's gradient norm over all
   trainable variables (ghost norms: no per-example gradient is materialized for
   registered layers);
3. a second backward pass of the per-example losses weighted by the clip factors
   ``min(1, C / ||g_i||)`` gives the sum of clipped per-example gradients;
4. Gaussian noise with standard deviation ``C * noise_multiplier`` is added and the sum is
   divided by the *expected* batch size ``q * n`` (not the realized Poisson batch size,
   which would depend on the data).

Everything here runs inside ``tf.function`` with an unknown batch dimension, so Poisson
batches of any size (including 0) never retrace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf
from tensorflow_privacy.privacy.fast_gradient_clipping import gradient_clipping_utils

from op_tensorflow.registry import fallback_layer_computation, make_registry

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def _layer_generator(tape: tf.GradientTape, registry):
    """The per-layer hook for TF Privacy's functional-graph forward pass."""

    def generator(layer, args, kwargs):
        if not layer.trainable_variables:
            if getattr(layer, "_expects_training_arg", False) and "training" not in kwargs:
                kwargs = {**kwargs, "training": True}
            return layer(*args, **kwargs), None
        fn = registry.lookup(layer) if registry.is_elem(layer) else fallback_layer_computation
        try:
            base_vars, outputs, sqr_norm_fn = fn(layer, args, kwargs, tape, None)
        except NotImplementedError:  # a configuration the fast path does not cover
            base_vars, outputs, sqr_norm_fn = fallback_layer_computation(layer, args, kwargs, tape, None)
        return outputs, (base_vars, sqr_norm_fn)

    return generator


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


def clipped_gradient_sum(
    model: tf.keras.Model,
    x: tf.Tensor,
    y: tf.Tensor,
    loss_fn: LossFn,
    l2_norm_clip: float,
    *,
    registry=None,
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

    Returns:
        ``(grads, norms, losses)``: the clipped gradient sum, one dense tensor per trainable
        variable of ``model``; each example's unclipped gradient norm; per-example losses.
    """
    registry = make_registry() if registry is None else registry
    variables = model.trainable_variables
    tape = tf.GradientTape(persistent=True, watch_accessed_variables=False)
    with tape:
        tape.watch(variables)
        outputs, hooks = gradient_clipping_utils.model_forward_pass(model, x, _layer_generator(tape, registry))
        losses = per_example_losses(loss_fn, y, outputs)
        summed_loss = tf.reduce_sum(losses)
    hooks = [h for h in hooks if h is not None]
    base_grads = tape.gradient(summed_loss, [h[0] for h in hooks], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    squared = [fn(g) for (_, fn), g in zip(hooks, base_grads, strict=True)]
    norms = tf.sqrt(tf.add_n(squared)) if squared else tf.zeros_like(losses)
    clip_factors = tf.stop_gradient(l2_norm_clip / tf.maximum(norms, l2_norm_clip))
    grads = tape.gradient(
        losses, variables, output_gradients=clip_factors, unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    del tape
    return [tf.convert_to_tensor(g) for g in grads], norms, losses


def add_noise(grads: Sequence[tf.Tensor], stddev: float, seed: tf.Tensor, *, divide_by: float) -> list[tf.Tensor]:
    """``(g + N(0, stddev^2 I)) / divide_by`` for each gradient, from stateless seeded noise."""
    noisy = []
    for i, g in enumerate(grads):
        noise = tf.random.stateless_normal(
            tf.shape(g), seed=tf.random.experimental.stateless_fold_in(seed, i), stddev=stddev, dtype=g.dtype
        )
        noisy.append((g + noise) / divide_by)
    return noisy
