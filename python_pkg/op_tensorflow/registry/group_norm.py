"""Registry function for ``tf.keras.layers.GroupNormalization``.

The layer computes ``y = gamma * x_hat + beta`` with ``gamma``/``beta`` broadcast along the channel axis,
where ``x_hat`` is the input normalized within each (example, group). With ``g = dL/dy`` for one example,
the per-example gradients are ``dL/dgamma_c = sum_p x_hat[p, c] g[p, c]`` and ``dL/dbeta_c = sum_p g[p, c]``,
summing over all non-batch positions ``p`` other than the channel axis. The layer's outputs serve as
``base_vars``; ``x_hat`` is recomputed exactly as Keras 2.15 does (mask included). Microbatches are not
supported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
from tensorflow_privacy.privacy.fast_gradient_clipping import type_aliases

from op_tensorflow.registry import per_example_weights, register_layer, with_clipped_sum

__all__ = ["group_normalization_computation"]


def _channel_axis(layer_instance: tf.keras.layers.GroupNormalization, rank: int) -> int:
    """The non-negative channel axis of an input of the given rank."""
    return layer_instance.axis % rank


def _normalized_inputs(
    layer_instance: tf.keras.layers.GroupNormalization, inputs: tf.Tensor, mask: tf.Tensor | None
) -> tf.Tensor:
    """``x_hat``: the inputs normalized per example and group (no gamma/beta), float32, input shape."""
    inputs = tf.cast(inputs, tf.float32)
    rank = inputs.shape.rank
    axis = _channel_axis(layer_instance, rank)
    input_shape = tf.shape(inputs)
    mask = tf.ones_like(inputs) if mask is None else tf.broadcast_to(tf.cast(mask, tf.float32), input_shape)

    group_shape = [input_shape[i] for i in range(rank)]
    group_shape[axis] = input_shape[axis] // layer_instance.groups
    group_shape.insert(axis, layer_instance.groups)
    group_shape = tf.stack(group_shape)
    reshaped_inputs = tf.reshape(inputs, group_shape)
    reshaped_mask = tf.reshape(mask, group_shape)

    reduction_axes = [i for i in range(1, rank + 1) if i != axis]
    mean, variance = tf.nn.weighted_moments(
        reshaped_inputs, axes=reduction_axes, frequency_weights=reshaped_mask, keepdims=True
    )
    normalized = tf.nn.batch_normalization(
        reshaped_inputs,
        mean=mean,
        variance=variance,
        offset=None,
        scale=None,
        variance_epsilon=layer_instance.epsilon,
    )
    return tf.reshape(normalized, input_shape)


def _per_example_grads(
    layer_instance: tf.keras.layers.GroupNormalization, x_hat: tf.Tensor, grads: tf.Tensor
) -> list[tuple[tf.Variable, tf.Tensor]]:
    """``(variable, per-example gradients (batch, channels))`` for ``gamma`` and ``beta`` (those that exist)."""
    rank = grads.shape.rank
    axis = _channel_axis(layer_instance, rank)
    position_axes = [i for i in range(1, rank) if i != axis]
    pairs = []
    if layer_instance.scale:
        pairs.append((layer_instance.gamma, tf.reduce_sum(x_hat * grads, axis=position_axes)))
    if layer_instance.center:
        pairs.append((layer_instance.beta, tf.reduce_sum(grads, axis=position_axes)))
    return pairs


@register_layer(tf.keras.layers.GroupNormalization)
def group_normalization_computation(
    layer_instance: tf.keras.layers.GroupNormalization,
    input_args: Sequence[Any],
    input_kwargs: Mapping[str, Any],
    tape: tf.GradientTape,
    num_microbatches: tf.Tensor | None = None,
) -> type_aliases.RegistryFunctionOutput:
    """Registry function for ``tf.keras.layers.GroupNormalization``.

    Args:
        layer_instance: A built ``GroupNormalization``.
        input_args: ``(inputs,)``, batch on axis 0.
        input_kwargs: Keyword arguments of the call (``mask`` is honoured as by Keras).
        tape: The recording ``tf.GradientTape``; it is made to watch ``base_vars``.
        num_microbatches: Must be ``None``.

    Returns:
        ``(base_vars, outputs, sqr_norm_fn)`` with ``base_vars`` the layer's outputs (watched) and
        ``sqr_norm_fn`` mapping ``dL/d outputs`` to the per-example squared gradient norms (float32,
        shape ``(batch,)``) of ``gamma`` and ``beta``.

    Raises:
        NotImplementedError: If ``num_microbatches`` is not ``None``.
        ValueError: If the call does not have exactly one positional input.
    """
    if num_microbatches is not None:
        raise NotImplementedError("The GroupNormalization registry function does not support microbatches.")
    if len(input_args) != 1:
        raise ValueError("GroupNormalization takes exactly one positional input.")
    inputs = input_args[0]
    # Keras passes a mask carried by the inputs implicitly when none is given.
    mask = input_kwargs.get("mask", getattr(inputs, "_keras_mask", None))
    outputs = layer_instance(*input_args, **input_kwargs)
    tape.watch(outputs)

    per_example: dict = {}  # traced once, shared by the norms and the clipped sum

    def per_example_grads(grads: tf.Tensor) -> list:
        if "pairs" not in per_example:
            x_hat = _normalized_inputs(layer_instance, inputs, mask)
            per_example["pairs"] = _per_example_grads(layer_instance, x_hat, tf.cast(grads, tf.float32))
        return per_example["pairs"]

    def sqr_norm_fn(grads: tf.Tensor) -> tf.Tensor:
        squares = [tf.reduce_sum(tf.square(g), axis=1) for _, g in per_example_grads(grads)]
        return tf.add_n(squares) if squares else tf.zeros(tf.shape(grads)[:1], tf.float32)

    def clipped_sum(grads: tf.Tensor, factors: tf.Tensor) -> list:
        return [(v, tf.reduce_sum(g * per_example_weights(factors, g), 0)) for v, g in per_example_grads(grads)]

    return outputs, outputs, with_clipped_sum(sqr_norm_fn, clipped_sum)
