"""``Dense``: tensorflow-privacy's registry function, with norms that do not overflow for finite examples.

tensorflow-privacy squares the layer input and the output gradient in float32, so one example with a large
but finite feature (1e30) gets an infinite (or NaN) norm although its true norm is finite. Here both are
scaled by their per-example maximum first and the scales are put back in float64 (the result is
float32 again, as the registry contract says: inf only where the squared norm itself exceeds 3.4e38);
the maths (tensorflow-privacy's einsum decomposition) is unchanged.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow_privacy.privacy.fast_gradient_clipping.registry_functions import einsum_utils
from tensorflow_privacy.privacy.fast_gradient_clipping.registry_functions.dense import dense_layer_computation

from op_tensorflow.registry import register_layer


def _per_example_scale(t: tf.Tensor) -> tf.Tensor:
    """``max |t_i|`` per example (1 where that is 0 or not finite), shape ``(batch,)``."""
    flat = tf.reshape(tf.abs(t), [tf.shape(t)[0], -1])
    scale = tf.reduce_max(flat, axis=1) if flat.shape[1] != 0 else tf.ones([tf.shape(t)[0]], t.dtype)
    return tf.where(tf.logical_and(scale > 0, tf.math.is_finite(scale)), scale, tf.ones_like(scale))


def _broadcast(scale: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    return tf.reshape(scale, tf.concat([tf.shape(scale), tf.ones([like.shape.rank - 1], tf.int32)], 0))


@register_layer(tf.keras.layers.Dense)
def dense_computation(layer_instance, input_args, input_kwargs, tape, num_microbatches=None):
    """Registry function for ``tf.keras.layers.Dense`` (see tensorflow-privacy's ``dense_layer_computation``)."""
    if num_microbatches is not None:
        return dense_layer_computation(layer_instance, input_args, input_kwargs, tape, num_microbatches)
    base_vars, outputs, _ = dense_layer_computation(layer_instance, input_args, input_kwargs, tape, None)
    inputs = tf.convert_to_tensor(input_args[0])

    def sqr_norm_fn(grads):
        x_scale, g_scale = _per_example_scale(inputs), _per_example_scale(grads)
        x = inputs / _broadcast(x_scale, inputs)
        g = grads / _broadcast(g_scale, grads)
        kernel = einsum_utils.compute_fast_einsum_squared_gradient_norm("...b,bc->...c", x, g, None)
        scale = tf.cast(x_scale, tf.float64) * tf.cast(g_scale, tf.float64)
        squared = tf.cast(kernel, tf.float64) * tf.square(scale)
        if layer_instance.use_bias:
            summed = tf.reshape(g, [tf.shape(g)[0], -1, tf.shape(g)[-1]])
            bias = tf.reduce_sum(tf.square(tf.cast(tf.reduce_sum(summed, axis=1), tf.float64)), axis=1)
            squared += bias * tf.square(tf.cast(g_scale, tf.float64))
        return tf.cast(squared, tf.float32)  # the registry contract: float32 squared norms

    return base_vars, outputs, sqr_norm_fn
