"""Registry function for ``tf.keras.layers.Conv1D`` and ``tf.keras.layers.Conv2D``.

A convolution is a dense layer applied to every input patch: the pre-activation output at position ``t`` is
``z_t = W^T a_t + b``, where ``a_t`` is the receptive field of ``t`` (``k * C_in`` values, including padding
zeros) and ``W`` the kernel reshaped to ``(k * C_in, C_out)``. With ``g_t = dL/dz_t`` the gradient of one
example's loss is ``dL/dW = sum_t a_t g_t^T`` and ``dL/db = sum_t g_t``, so its squared norm is

    ||sum_t a_t g_t^T||_F^2 + ||sum_t g_t||^2.

The first term is computed either explicitly (an einsum to a ``(k * C_in, C_out)`` matrix per example) or
with the "ghost norm" identity ``sum_{t,s} (a_t . a_s)(g_t . g_s)`` (two ``(P, P)`` Gram matrices per
example, ``P`` output positions), whichever needs less memory (ghost iff ``2 P^2 <= k * C_in * C_out``,
as in mixed ghost clipping, Bu et al. 2022). The Frobenius norm is invariant to the order of the patch
elements, so the patches from ``tf.image.extract_patches`` need not follow the kernel's layout.

Supported: ``channels_last``, any ``strides``, ``dilation_rate`` and ``padding`` (``"valid"``, ``"same"``,
and ``"causal"`` for Conv1D), with or without bias, any activation, and grouped convolutions: with
``groups = G`` the kernel is block-diagonal, group ``j`` mapping input channels ``j`` to output channels
``j`` (contiguous slices), so the kernel's squared norm is the sum of the ``G`` ungrouped ones on those
slices. (TF's own vectorization of grouped-convolution gradients fails on CPUs without oneDNN.)
``channels_first`` and inputs with extra batch dimensions raise ``NotImplementedError``, and the engine
then uses :func:`op_tensorflow.registry.fallback_layer_computation` for the layer. Microbatches are not
supported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
from tensorflow_privacy.privacy.fast_gradient_clipping import type_aliases

from op_tensorflow.registry import per_example_weights, register_layer, with_clipped_sum

__all__ = ["conv_layer_computation", "kernel_sqr_norms", "positions_first"]


def _check_supported(
    layer_instance: tf.keras.layers.Layer, input_args: Sequence[Any], num_microbatches: tf.Tensor | None
) -> None:
    """Raises if the layer configuration or call is not handled by this registry function."""
    if num_microbatches is not None:
        raise NotImplementedError("The convolution registry function does not support microbatches.")
    if len(input_args) != 1:
        raise ValueError(f"{type(layer_instance).__name__} takes exactly one positional input.")
    if layer_instance.data_format != "channels_last":
        raise NotImplementedError("Only channels_last convolutions are supported; use the fallback.")
    rank = getattr(input_args[0], "shape", tf.TensorShape(None)).rank
    if rank != layer_instance.rank + 2:
        raise NotImplementedError(
            f"{type(layer_instance).__name__} input must have rank {layer_instance.rank + 2} "
            f"(one batch dimension), got rank {rank}; use the fallback."
        )


def _call_with_empty_batch_guard(
    layer_instance: tf.keras.layers.Layer, inputs: tf.Tensor, input_kwargs: Mapping[str, Any]
) -> tf.Tensor:
    """Calls the layer, getting the right output shape for an empty batch too.

    TF 2.15's oneDNN CPU convolution returns a tensor shaped like its *input* when the batch is empty, so for
    an empty batch the layer is called on one zero example and the result sliced to zero rows. (The zero
    example is made with ``tf.zeros``, not by padding the empty input: grappler fuses a pad into the
    convolution, which then sees the empty input again.)
    """

    def empty_batch() -> tf.Tensor:
        one_zero_example = tf.zeros(tf.concat([[1], tf.shape(inputs)[1:]], axis=0), inputs.dtype)
        one_zero_example = tf.ensure_shape(one_zero_example, [1, *inputs.shape[1:]])
        return layer_instance(one_zero_example, **input_kwargs)[:0]

    batch_size = inputs.shape[0]
    if batch_size is not None:
        return layer_instance(inputs, **input_kwargs) if batch_size > 0 else empty_batch()
    return tf.cond(tf.shape(inputs)[0] > 0, lambda: layer_instance(inputs, **input_kwargs), empty_batch)


def _pre_activation_outputs(
    layer_instance: tf.keras.layers.Layer, inputs: tf.Tensor, input_kwargs: Mapping[str, Any]
) -> tf.Tensor:
    """Calls the layer with its activation temporarily disabled."""
    activation = layer_instance.activation
    layer_instance.activation = None
    try:
        return _call_with_empty_batch_guard(layer_instance, inputs, input_kwargs)
    finally:
        layer_instance.activation = activation


def _dim(tensor: tf.Tensor, axis: int) -> int | tf.Tensor:
    """Static size of ``axis`` if known, else its dynamic size."""
    size = tensor.shape[axis]
    return size if size is not None else tf.shape(tensor)[axis]


def positions_first(tensor: tf.Tensor) -> tf.Tensor:
    """Reshapes ``(batch, *positions, features)`` to ``(batch, num_positions, features)``."""
    shape = tf.shape(tensor)
    num_positions = tf.reduce_prod(shape[1:-1])
    return tf.reshape(tensor, tf.stack([shape[0], num_positions, _dim(tensor, -1)]))


def _input_patches(layer_instance: tf.keras.layers.Layer, inputs: tf.Tensor) -> tf.Tensor:
    """Receptive fields ``a_t`` of every output position: float32 ``(batch, positions, k * C_in)``."""
    images = tf.cast(inputs, tf.float32)
    padding = layer_instance.padding.upper()
    if layer_instance.padding == "causal":
        left = layer_instance.dilation_rate[0] * (layer_instance.kernel_size[0] - 1)
        images = tf.pad(images, [[0, 0], [left, 0], [0, 0]])
        padding = "VALID"
    kernel_size = list(layer_instance.kernel_size)
    strides = list(layer_instance.strides)
    rates = list(layer_instance.dilation_rate)
    if layer_instance.rank == 1:  # View (batch, T, C) as an image (batch, 1, T, C).
        images = images[:, None]
        kernel_size, strides, rates = [1, *kernel_size], [1, *strides], [1, *rates]
    patches = tf.image.extract_patches(
        images,
        sizes=[1, *kernel_size, 1],
        strides=[1, *strides, 1],
        rates=[1, *rates, 1],
        padding=padding,
    )
    return positions_first(patches)


def _ghost_sqr_norms(patches: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """``sum_{t,s} (a_t . a_s)(g_t . g_s)`` per example, from Gram matrices."""
    patch_gram = tf.matmul(patches, patches, transpose_b=True)
    grad_gram = tf.matmul(grads, grads, transpose_b=True)
    return tf.reduce_sum(patch_gram * grad_gram, axis=[1, 2])


def _explicit_sqr_norms(patches: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """``||sum_t a_t g_t^T||_F^2`` per example, from the explicit per-example kernel gradients."""
    kernel_grads = tf.matmul(patches, grads, transpose_a=True)
    return tf.reduce_sum(tf.square(kernel_grads), axis=[1, 2])


def kernel_sqr_norms(patches: tf.Tensor, grads: tf.Tensor, method: str | None = None) -> tf.Tensor:
    """Per-example squared Frobenius norm of ``sum_t a_t g_t^T``.

    Args:
        patches: Float ``(batch, positions, K)`` tensor of the ``a_t``.
        grads: Float ``(batch, positions, C)`` tensor of the ``g_t``.
        method: ``"ghost"``, ``"explicit"`` or ``None`` to pick the one needing less memory (decided at
            trace time when the number of positions is static, else at run time).

    Returns:
        A ``(batch,)`` tensor.
    """
    if method == "ghost":
        return _ghost_sqr_norms(patches, grads)
    if method == "explicit":
        return _explicit_sqr_norms(patches, grads)
    if method is not None:
        raise ValueError(f"method must be 'ghost', 'explicit' or None, got {method!r}.")
    num_positions = _dim(patches, 1)
    kernel_size = _dim(patches, 2) * _dim(grads, 2)
    use_ghost = 2 * num_positions * num_positions <= kernel_size
    if isinstance(use_ghost, bool):
        return _ghost_sqr_norms(patches, grads) if use_ghost else _explicit_sqr_norms(patches, grads)
    return tf.cond(use_ghost, lambda: _ghost_sqr_norms(patches, grads), lambda: _explicit_sqr_norms(patches, grads))


@register_layer(tf.keras.layers.Conv1D)
@register_layer(tf.keras.layers.Conv2D)
def conv_layer_computation(
    layer_instance: tf.keras.layers.Conv1D | tf.keras.layers.Conv2D,
    input_args: Sequence[Any],
    input_kwargs: Mapping[str, Any],
    tape: tf.GradientTape,
    num_microbatches: tf.Tensor | None = None,
) -> type_aliases.RegistryFunctionOutput:
    """Registry function for ``tf.keras.layers.Conv1D`` and ``tf.keras.layers.Conv2D``.

    Args:
        layer_instance: A built ``Conv1D`` or ``Conv2D`` (``channels_last``, any ``groups``).
        input_args: ``(inputs,)`` with ``inputs`` of shape ``(batch, *spatial, C_in)``.
        input_kwargs: Extra keyword arguments of the layer call (passed through).
        tape: The recording ``tf.GradientTape``; it is made to watch ``base_vars``.
        num_microbatches: Must be ``None``.

    Returns:
        ``(base_vars, outputs, sqr_norm_fn)``: ``base_vars`` is the pre-activation output (watched),
        ``outputs`` the layer's output, and ``sqr_norm_fn`` maps ``dL/d base_vars`` to the per-example
        squared gradient norms (float32, shape ``(batch,)``) of the kernel and bias.

    Raises:
        NotImplementedError: For microbatches, ``channels_first`` or extra batch
            dimensions; the engine then falls back to the generic registry function.
    """
    _check_supported(layer_instance, input_args, num_microbatches)
    inputs = input_args[0]
    base_vars = _pre_activation_outputs(layer_instance, inputs, input_kwargs)
    tape.watch(base_vars)
    activation = layer_instance.activation
    outputs = activation(base_vars) if activation is not None else base_vars

    groups = layer_instance.groups
    patches: list = []  # per group, traced once and shared by the norms and the clipped sum

    def group_patches() -> list[tf.Tensor]:
        if not patches:
            input_parts = tf.split(inputs, groups, axis=-1) if groups > 1 else [inputs]
            patches.extend(_input_patches(layer_instance, part) for part in input_parts)
        return patches

    def split_groups(grads: tf.Tensor) -> list[tf.Tensor]:
        return tf.split(grads, groups, axis=-1) if groups > 1 else [grads]

    def sqr_norm_fn(base_vars_grads: tf.Tensor) -> tf.Tensor:
        grads = positions_first(tf.cast(base_vars_grads, tf.float32))
        parts = zip(group_patches(), split_groups(grads), strict=True)
        sqr_norms = tf.add_n([kernel_sqr_norms(part_patches, part_grads) for part_patches, part_grads in parts])
        if layer_instance.use_bias:
            sqr_norms += tf.reduce_sum(tf.square(tf.reduce_sum(grads, axis=1)), axis=1)
        return sqr_norms

    def clipped_sum(base_vars_grads: tf.Tensor, factors: tf.Tensor) -> list:
        """``sum_i c_i sum_t a_it g_it^T`` per group: one matmul of the flattened patches and weighted grads."""
        grads = positions_first(tf.cast(base_vars_grads, tf.float32))
        grads *= per_example_weights(factors, grads)
        kernel = layer_instance.kernel
        blocks = []
        for part_patches, part_grads in zip(group_patches(), split_groups(grads), strict=True):
            flat_patches = tf.reshape(part_patches, [-1, part_patches.shape[-1]])
            flat_grads = tf.reshape(part_grads, [-1, part_grads.shape[-1]])
            block = tf.matmul(flat_patches, flat_grads, transpose_a=True)  # rows in (kernel positions, C_in) order
            blocks.append(tf.reshape(block, [*kernel.shape[:-1], part_grads.shape[-1]]))
        pairs = [(kernel, tf.cast(tf.concat(blocks, -1) if groups > 1 else blocks[0], kernel.dtype))]
        if layer_instance.use_bias:
            pairs.append((layer_instance.bias, tf.cast(tf.reduce_sum(grads, axis=[0, 1]), layer_instance.bias.dtype)))
        return pairs

    return base_vars, outputs, with_clipped_sum(sqr_norm_fn, clipped_sum)
