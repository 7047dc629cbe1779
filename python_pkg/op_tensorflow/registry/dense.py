"""``Dense``: per-example gradient norms and the clipped gradient sum from one backward pass.

With ``a_i`` the layer's input and ``g_i = dL_i/dz_i`` the gradient at its pre-activation output ``z = a W + b``
(both of shape ``(positions, features)`` per example; one position for the usual 2-D inputs), example i's
kernel gradient is ``a_i^T g_i`` and its bias gradient ``sum_t g_it``.

* **Norms.** For 2-D inputs ``||a_i^T g_i||^2 = ||a_i||^2 ||g_i||^2`` (ghost norm, nothing materialized). For
  inputs with positions (``(batch, T, d_in)``) the same mixed rule as convolutions
  (:func:`op_tensorflow.registry.conv.kernel_sqr_norms`): ghost norms from two ``(T, T)`` Gram matrices when
  ``2 T^2 <= d_in * d_out``, else the materialized ``(d_in, d_out)`` per-example gradient. Norms are computed
  in float64, so a large but finite feature (1e20) does not overflow float32's squares; the result is float32,
  as the registry contract says.
* **Clipped sum.** ``sum_i c_i a_i^T g_i`` is one matmul of the flattened inputs with the clip-weighted output
  gradients, and ``sum_i c_i sum_t g_it`` the bias: the cost of the non-private weight gradient, with no
  second backward pass through the model.
"""

from __future__ import annotations

import tensorflow as tf

from op_tensorflow.registry import per_example_weights, register_layer, with_clipped_sum
from op_tensorflow.registry.conv import kernel_sqr_norms, positions_first

__all__ = ["dense_computation"]


def _direct_sum_supported(layer_instance) -> bool:
    """Plain kernel and bias (no LoRA, no quantized kernel): the variables the clipped sum is written for."""
    return (
        not getattr(layer_instance, "lora_enabled", False)
        and getattr(layer_instance, "quantization_mode", None) is None
    )


@register_layer(tf.keras.layers.Dense)
def dense_computation(layer_instance, input_args, input_kwargs, tape, num_microbatches=None):
    """Registry function for ``tf.keras.layers.Dense``: norms and the clipped sum (see the module docstring)."""
    if num_microbatches is not None:
        raise NotImplementedError("The Dense registry function does not support microbatches.")
    if len(input_args) != 1:
        raise ValueError("Dense takes exactly one positional input.")
    # Keras 3's Dense.call takes a `training` argument it ignores.
    input_kwargs = {k: v for k, v in input_kwargs.items() if k != "training"}
    if input_kwargs:
        raise NotImplementedError(f"Dense called with {sorted(input_kwargs)}; use the fallback.")
    inputs = tf.convert_to_tensor(input_args[0])
    if inputs.shape.rank is None or inputs.shape.rank < 2:
        raise NotImplementedError("Dense inputs of unknown rank; use the fallback.")
    if inputs.shape[-1] is None:
        raise NotImplementedError("Dense inputs of unknown width; use the fallback.")
    activation = layer_instance.activation
    layer_instance.activation = None
    try:
        base_vars = layer_instance(inputs)
    finally:
        layer_instance.activation = activation
    tape.watch(base_vars)
    outputs = activation(base_vars) if activation is not None else base_vars
    d_in, d_out = inputs.shape[-1], base_vars.shape[-1]

    def sqr_norm_fn(grads):
        x, g = tf.cast(inputs, tf.float64), tf.cast(grads, tf.float64)
        if inputs.shape.rank == 2:
            squared = tf.reduce_sum(tf.square(x), 1) * tf.reduce_sum(tf.square(g), 1)
            bias = tf.reduce_sum(tf.square(g), 1)
        else:
            x, g = positions_first(x), positions_first(g)
            squared = kernel_sqr_norms(x, g)
            bias = tf.reduce_sum(tf.square(tf.reduce_sum(g, 1)), 1)
        if layer_instance.use_bias:
            squared += bias
        return tf.cast(squared, tf.float32)  # the registry contract: float32 squared norms

    def clipped_sum(grads, factors):
        weighted = tf.cast(grads, layer_instance.kernel.dtype)
        weighted *= per_example_weights(factors, weighted)
        flat_inputs = tf.reshape(tf.cast(inputs, weighted.dtype), [-1, d_in])
        flat_grads = tf.reshape(weighted, [-1, d_out])
        pairs = [(layer_instance.kernel, tf.matmul(flat_inputs, flat_grads, transpose_a=True))]
        if layer_instance.use_bias:
            pairs.append((layer_instance.bias, tf.reduce_sum(flat_grads, 0)))
        return pairs

    if not _direct_sum_supported(layer_instance):
        return base_vars, outputs, sqr_norm_fn
    return base_vars, outputs, with_clipped_sum(sqr_norm_fn, clipped_sum)
