"""Generic registry function for any layer whose weights only mix values within one example.

:func:`fallback_layer_computation` makes the layer's outputs the ``base_vars``. Given ``G``, the gradient of
the summed loss with respect to the outputs, the gradient of example ``i``'s loss with respect to the
layer's weights ``W`` is the vector-Jacobian product ``d<layer(x_i), G_i>/dW``, provided ``layer(x)[i]``
only depends on ``x_i`` (true for e.g. RNNs, attention within a sequence, custom layers; false for layers
that mix examples, such as ``BatchNormalization`` in training mode). That product is computed for all
examples at once with ``tf.vectorized_map`` (``tf.map_fn`` if the layer cannot be vectorized), by calling
the layer on each example as a batch of one.

Limitations: the layer is re-run on every example, so it must be deterministic (no dropout with
``training=True`` or other random ops) and free of side effects that matter (state updates, added losses),
and Keras masks are not passed to the per-example calls. The preflight (:mod:`op_tensorflow.preflight`)
sends models with random trainable layers or masks to the per-example path instead.
Tensors among the call's positional and keyword arguments (nested structures included) whose leading
dimension is the (unknown) batch dimension are sliced per example; constants of static shape (an attention
mask shared by all examples), scalars and non-tensor arguments are passed through unchanged.
Dense tensors only (no ``tf.SparseTensor``/``tf.RaggedTensor`` inputs).
Microbatches are not supported. Only vectorization failures raised while building the graph trigger the
``tf.map_fn`` path (errors at run time are not caught); called eagerly, ``tf.vectorized_map`` retraces on
every call, so use it inside ``tf.function``.
"""

from __future__ import annotations

import contextlib
import logging as py_logging
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
from absl import logging
from tensorflow_privacy.privacy.fast_gradient_clipping import type_aliases

from op_tensorflow import keras_seam

__all__ = ["fallback_layer_computation", "map_over_examples"]


def _batched_positions(flat: list[Any]) -> list[int]:
    """Positions of the call arguments sliced per example.

    Inside the engine's ``tf.function`` the batch dimension is unknown, so a tensor whose leading dimension
    is static (a ``(T, T)`` attention mask, say) is a constant shared by all examples, not a batch. When
    every leading dimension is static (eager calls), tensors whose leading dimension equals the first
    tensor's are taken as batched.
    """
    tensors = [(i, v) for i, v in enumerate(flat) if tf.is_tensor(v) and v.shape.rank not in (None, 0)]
    if any(v.shape[0] is None for _, v in tensors):
        return [i for i, v in tensors if v.shape[0] is None]
    return [i for i, v in tensors if v.shape[0] == tensors[0][1].shape[0]]


def _float_tensors(structure: Any) -> list[tf.Tensor]:
    """Floating-point tensors of a nested structure, in ``tf.nest.flatten`` order."""
    return [t for t in tf.nest.flatten(structure) if tf.is_tensor(t) and t.dtype.is_floating]


def _squared_norm(grad: tf.Tensor | tf.IndexedSlices) -> tf.Tensor:
    """Squared L2 norm of a (possibly sparse) gradient, in float32."""
    return tf.reduce_sum(tf.square(tf.cast(tf.convert_to_tensor(grad), tf.float32)))


# Layers and models whose per-example computation pfor could not vectorize: later traces go straight to the loop.
_NOT_VECTORIZABLE: weakref.WeakSet = weakref.WeakSet()


@contextlib.contextmanager
def _quiet_tensorflow_logs():
    """pfor logs every op it fails to convert at ERROR level; the fallback below handles the failure."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(py_logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _tf_at_least_2_16() -> bool:
    return tuple(int(p) for p in tf.__version__.split(".")[:2]) >= (2, 16)


def _onednn_breaks_pfor_matmul() -> bool:
    """TF >= 2.16 with oneDNN (on by default on x86 Linux) runs pfor's vectorized matmuls wrongly.

    Measured on TF 2.21: ``tf.vectorized_map(lambda b: tf.matmul(b[None], k)[0], x)`` for rank-2 ``b`` (pfor
    makes it a ``BatchMatMulV2`` that broadcasts ``k``) returns garbage or aborts the process (``free():
    invalid pointer``); with ``TF_ENABLE_ONEDNN_OPTS=0``, and on TF 2.15, it is exact. Vectorized plain
    ``MatMul`` ops, and batched ones whose operands have the same batch dimensions, are exact.
    Keras 3's einsum (EinsumDense, MultiHeadAttention) lowers to batched matmuls.
    """
    if not _tf_at_least_2_16():
        return False
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # pragma: no cover - other TF layouts: assume the bug
        return True
    return bool(_pywrap_util_port.IsMklEnabled())


# What pfor's conversions are not trusted with on this TensorFlow: broadcasting batched matmuls (above), and,
# on TF >= 2.16, while loops and their TensorLists (RNNs), which build at trace time but fail when they run.
_UNTRUSTED_OPS = (("BatchMatMul",) if _onednn_breaks_pfor_matmul() else ()) + (
    ("While", "TensorList") if _tf_at_least_2_16() else ()
)


def _broadcasting_batch_matmul(op) -> bool:
    """A batched matmul whose operands' batch dimensions differ (one is broadcast): what oneDNN gets wrong."""
    if "BatchMatMul" not in op.type or len(op.inputs) < 2:
        return False
    a, b = op.inputs[0].shape, op.inputs[1].shape
    return a.rank is None or b.rank is None or a.rank != b.rank or a[:-2].as_list() != b[:-2].as_list()


def _trusted(ops) -> bool:
    for op in ops:
        if "While" in _UNTRUSTED_OPS and ("While" in op.type or "TensorList" in op.type):
            return False
        if "BatchMatMul" in _UNTRUSTED_OPS and _broadcasting_batch_matmul(op):
            return False
    return True


def _trusted_vectorized_map(fn, elems):
    """``tf.vectorized_map(fn, elems)``, or None if pfor would build an untrusted op.

    The check traces the vectorized computation in a scratch function first: ops built in the engine's own
    ``tf.function`` would run even if unused (stateful ops get automatic control dependencies).
    """
    if not _UNTRUSTED_OPS:
        return tf.vectorized_map(fn, elems)
    vectorized = tf.function(lambda e: tf.vectorized_map(fn, e), autograph=False)
    concrete = vectorized.get_concrete_function(elems)
    if not _trusted(concrete.graph.get_operations()):
        return None
    return concrete(elems) if tf.executing_eagerly() else tf.vectorized_map(fn, elems)


def map_over_examples(fn, elems, fn_output_signature, *, key):
    """``fn`` over axis 0 of ``elems``: ``tf.vectorized_map`` if pfor can convert it, else ``tf.map_fn``.

    ``key`` (the layer or model) remembers a failed conversion, so later traces do not retry it. A
    conversion that uses an op pfor gets wrong on this TensorFlow (see ``_UNTRUSTED_OPS``) is discarded, and
    the loop is used instead: slower, exact.
    """
    if key not in _NOT_VECTORIZABLE:
        try:
            with _quiet_tensorflow_logs():
                result = _trusted_vectorized_map(fn, elems)
            if result is not None:
                return result
            _NOT_VECTORIZABLE.add(key)
            logging.info("Not vectorizing %s (pfor is not trusted with its ops on this TF); using tf.map_fn.", key.name)
        except Exception as err:  # Any vectorization failure falls back to a loop.
            _NOT_VECTORIZABLE.add(key)
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else ""
            logging.info(
                "Cannot vectorize per-example gradients of %s (%s: %s); using tf.map_fn.",
                key.name,
                type(err).__name__,
                reason,
            )
    return tf.map_fn(fn, elems, fn_output_signature=fn_output_signature)


class _PerExampleNorms:
    """Computes per-example squared gradient norms of a layer's weights by re-running it per example.

    Args:
        layer_instance: The (built) layer.
        input_args: Positional arguments of the original batched call.
        input_kwargs: Keyword arguments of the original batched call.
    """

    def __init__(self, layer_instance: tf.keras.layers.Layer, input_args: Sequence[Any], input_kwargs: Mapping):
        self._layer = layer_instance
        self._call_args = (tuple(input_args), dict(input_kwargs))
        flat = tf.nest.flatten(self._call_args)
        self._batched_positions = _batched_positions(flat)
        self._flat_args = flat

    def __call__(self, grad_outputs: Sequence[tf.Tensor]) -> tf.Tensor:
        """Returns the (batch,) float32 squared norms given the gradients w.r.t. the float outputs."""
        grad_outputs = list(grad_outputs)
        elems = [self._flat_args[i] for i in self._batched_positions] + grad_outputs
        if not elems:
            raise ValueError(f"Layer {self._layer.name} has no batched inputs or outputs.")
        batch_size = tf.shape(elems[0])[0]
        return tf.cond(
            batch_size > 0,
            lambda: self._map_over_batch(elems),
            lambda: tf.zeros([0], tf.float32),
        )

    def _map_over_batch(self, elems: list[tf.Tensor]) -> tf.Tensor:
        """Applies the one-example computation along axis 0, vectorized if possible."""
        return map_over_examples(self._one_example, elems, tf.TensorSpec([], tf.float32), key=self._layer)

    def _one_example(self, example: list[tf.Tensor]) -> tf.Tensor:
        """Squared norm of ``d<layer(x_i), g_i>/dW`` for one example (slices without the batch axis)."""
        num_inputs = len(self._batched_positions)
        flat = list(self._flat_args)
        for position, value in zip(self._batched_positions, example[:num_inputs], strict=True):
            flat[position] = value[None]
        args, kwargs = tf.nest.pack_sequence_as(self._call_args, flat)
        variables = keras_seam.tape_variables(self._layer.trainable_variables)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            outputs = _float_tensors(self._layer(*args, **kwargs))
            products = [
                tf.reduce_sum(tf.cast(out, tf.float32) * tf.cast(grad[None], tf.float32))
                for out, grad in zip(outputs, example[num_inputs:], strict=True)
            ]
            inner_product = tf.add_n(products) if products else tf.constant(0.0)
        grads = tape.gradient(inner_product, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return tf.add_n([_squared_norm(g) for g in grads]) if grads else tf.constant(0.0)


def fallback_layer_computation(
    layer_instance: tf.keras.layers.Layer,
    input_args: Sequence[Any],
    input_kwargs: Mapping[str, Any],
    tape: tf.GradientTape,
    num_microbatches: tf.Tensor | None = None,
) -> type_aliases.RegistryFunctionOutput:
    """Registry function for any layer whose trainable weights only mix values within each example.

    Args:
        layer_instance: The layer (any class).
        input_args: Positional arguments: ``layer_instance(*input_args, **input_kwargs)`` is the layer call.
            Tensors of rank >= 1 (also nested) must have the batch on axis 0.
        input_kwargs: Keyword arguments of the call; tensors of rank >= 1 are batched like ``input_args``.
        tape: The recording ``tf.GradientTape``; it is made to watch ``base_vars``.
        num_microbatches: Must be ``None``.

    Returns:
        ``(base_vars, outputs, sqr_norm_fn)``: ``outputs`` is the layer's output structure, ``base_vars``
        the list of its floating-point output tensors (watched), and ``sqr_norm_fn`` maps the list of
        gradients of the summed loss w.r.t. ``base_vars`` to the per-example squared L2 norms (float32,
        shape ``(batch,)``) of the gradient w.r.t. ``layer_instance.trainable_variables``.

    Raises:
        NotImplementedError: If ``num_microbatches`` is not ``None``.
    """
    if num_microbatches is not None:
        raise NotImplementedError("The fallback registry function does not support microbatches.")
    input_kwargs = dict(input_kwargs or {})
    outputs = layer_instance(*input_args, **input_kwargs)
    base_vars = _float_tensors(outputs)
    tape.watch(base_vars)
    per_example_norms = _PerExampleNorms(layer_instance, input_args, input_kwargs)

    def sqr_norm_fn(grads: Sequence[tf.Tensor | None]) -> tf.Tensor:
        grads = [
            tf.zeros_like(out) if g is None else tf.convert_to_tensor(g)
            for g, out in zip(grads, base_vars, strict=True)
        ]
        return per_example_norms(grads)

    return base_vars, outputs, sqr_norm_fn
