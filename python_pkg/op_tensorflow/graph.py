"""The Keras layer graph as the DP-SGD engine walks it: one place for what depends on Keras internals.

The engine needs three things from a Keras model: to run its functional graph layer by layer with a hook
around every layer call (so a layer's call can be replaced by its registry function), to know which layers
accept a ``training`` argument, and to find the Keras masks the graph propagates. Keras 2.15 offers them
through private attributes; this module is the seam that names them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf
from tensorflow_privacy.privacy.fast_gradient_clipping import gradient_clipping_utils

__all__ = ["expects_training_arg", "forward_pass", "has_layer_graph", "mask_producers", "with_training"]

Hook = Callable[[tf.keras.layers.Layer, tuple, dict], tuple[Any, Any]]


def has_layer_graph(model: tf.keras.Model) -> bool:
    """Whether ``model`` is Sequential or functional (a layer graph the engine can walk)."""
    return gradient_clipping_utils.has_internal_compute_graph(model)


def forward_pass(model: tf.keras.Model, inputs, hook: Hook) -> tuple[Any, list]:
    """Runs ``model`` on ``inputs`` node by node, nested models included, calling ``hook(layer, args, kwargs)``.

    ``hook`` must return ``(layer outputs, anything)``; the second items are returned in call order.
    """
    return gradient_clipping_utils.model_forward_pass(model, inputs, hook)


def expects_training_arg(layer: tf.keras.layers.Layer) -> bool:
    return bool(getattr(layer, "_expects_training_arg", False))


def with_training(layer: tf.keras.layers.Layer, kwargs: dict, training: bool) -> dict:
    """The call's keyword arguments with ``training`` set, for layers that take it (unless the graph set it)."""
    if expects_training_arg(layer) and "training" not in kwargs:
        return {**kwargs, "training": training}
    return kwargs


def mask_producers(model: tf.keras.Model) -> list[str]:
    """Names of the layers whose outputs carry a Keras mask in ``model``'s graph (nested models included)."""
    names = []
    stack = [model]
    while stack:
        current = stack.pop()
        for layer in current.layers:
            if has_layer_graph(layer):
                stack.append(layer)
            for node in getattr(layer, "_inbound_nodes", []):
                outputs = tf.nest.flatten(node.outputs)
                if any(getattr(t, "_keras_mask", None) is not None for t in outputs) and layer.name not in names:
                    names.append(layer.name)
    return names
