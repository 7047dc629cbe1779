"""``Dense``: tensorflow-privacy's registry function, with norms that do not overflow for finite examples.

tensorflow-privacy squares the layer input and the output gradient in float32, so one example with a large
but finite feature (1e20) gets an infinite (or NaN) norm although its true norm is finite. Here its einsum
decomposition runs in float64 (two casts; cheaper than rescaling per example), and the result is float32
again, as the registry contract says: inf only where the squared norm itself exceeds float32's range.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow_privacy.privacy.fast_gradient_clipping.registry_functions import einsum_utils
from tensorflow_privacy.privacy.fast_gradient_clipping.registry_functions.dense import dense_layer_computation

from op_tensorflow.registry import register_layer


@register_layer(tf.keras.layers.Dense)
def dense_computation(layer_instance, input_args, input_kwargs, tape, num_microbatches=None):
    """Registry function for ``tf.keras.layers.Dense`` (see tensorflow-privacy's ``dense_layer_computation``)."""
    # Keras 3's Dense.call takes a `training` argument it ignores; tensorflow-privacy refuses any kwarg.
    input_kwargs = {k: v for k, v in input_kwargs.items() if k != "training"}
    if num_microbatches is not None:
        return dense_layer_computation(layer_instance, input_args, input_kwargs, tape, num_microbatches)
    base_vars, outputs, _ = dense_layer_computation(layer_instance, input_args, input_kwargs, tape, None)
    inputs = tf.convert_to_tensor(input_args[0])

    def sqr_norm_fn(grads):
        x, g = tf.cast(inputs, tf.float64), tf.cast(grads, tf.float64)
        squared = einsum_utils.compute_fast_einsum_squared_gradient_norm(
            "...b,bc->...c", x, g, "c" if layer_instance.use_bias else None
        )
        return tf.cast(squared, tf.float32)  # the registry contract: float32 squared norms

    return base_vars, outputs, sqr_norm_fn
