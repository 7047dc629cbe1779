"""Refuse Keras layers that break per-example differential privacy, and rewrite BatchNormalization away.

DP-SGD bounds each example's influence on a training step by clipping that example's gradient and adding
noise calibrated to the clipping norm. That argument needs (a) a gradient that depends on one example only
and (b) no other channel through which the data reaches the released weights. Some layers break it:

* ``BatchNormalization`` (and its subclasses, including ``SyncBatchNormalization`` and the TF1 layer)
  normalizes with statistics of the whole batch, and stores moving statistics of the raw data.
* Recurrent layers built with ``stateful=True`` carry one example's hidden state into another example.

``validate_model`` refuses such models with an explanation; ``incompatible_layers`` lists the offenders
without raising; ``fix_model`` returns a copy of a model with each ``BatchNormalization`` replaced by a
per-example ``GroupNormalization`` (``LayerNormalization`` with ``norm="layer"``, or with a warning when no
group count fits).

``tf.keras.layers.Normalization`` and the other preprocessing layers are accepted: their statistics come
from an explicit ``adapt()`` call, never from training. Note that ``adapt()`` on private data is itself a
release that the DP-SGD guarantee does not cover.
"""

import math
import warnings
from collections.abc import Callable, Iterator

import tensorflow as tf

from op_tensorflow import keras_seam
from op_tensorflow._checks import one_of
from op_tensorflow.layer_channels import channel_hints

__all__ = [
    "CONDITIONALLY_INCOMPATIBLE",
    "INCOMPATIBLE",
    "all_layers",
    "fix_model",
    "incompatible_layers",
    "validate_model",
]

MAX_GROUPS = 32
NORMS = ("group", "layer")

_BATCH_NORM_REASON = (
    "BatchNormalization normalizes each example with the mean and variance of the whole batch during "
    "training, so one example's values change the batch statistics and thus the other examples' outputs and "
    "gradients. A per-example gradient therefore does not exist, and per-example clipping cannot bound one "
    "example's influence on the update, which is what the differential privacy guarantee rests on. Its "
    "moving mean and variance are also updated from the raw data with no noise and saved with the weights, "
    "releasing non-private statistics of the training data. tensorflow-privacy checks neither.\n"
    "Fix: `op_tensorflow.fix_model(model)` or `PrivateKerasModel(..., fix=True)` returns a copy with each "
    "BatchNormalization replaced by GroupNormalization, which normalizes every example on its own "
    "(`fix_model(model, norm='layer')` uses LayerNormalization); or remove the layers."
)

_STATEFUL_RNN_REASON = (
    "A recurrent layer built with stateful=True carries the final hidden state of example i in one batch "
    "into example i of the next batch, outside the gradient computation, so one example's data changes "
    "another example's output and gradient, and per-example clipping no longer bounds its influence (with "
    "the random batches DP-SGD needs, the carried state is meaningless anyway).\n"
    "Fix: build the layer with stateful=False (the default)."
)

INCOMPATIBLE: dict[type, str] = {
    **{cls: _BATCH_NORM_REASON for cls in keras_seam.BATCH_NORM_CLASSES},
}
"""Layer classes (subclasses included) that are never compatible with DP training, and why."""

CONDITIONALLY_INCOMPATIBLE: dict[type, tuple[Callable[[tf.keras.layers.Layer], bool], str]] = {
    tf.keras.layers.RNN: (lambda layer: bool(getattr(layer, "stateful", False)), _STATEFUL_RNN_REASON),
}
"""Layer classes incompatible only in some configurations: ``{class: (predicate(layer), reason)}``."""


# --------------------------------------------------------------------------------------------- checking


def _reason(layer: tf.keras.layers.Layer) -> str | None:
    """Returns why ``layer`` is incompatible with DP training, or None if it is fine."""
    for cls, reason in INCOMPATIBLE.items():
        if isinstance(layer, cls):
            return reason
    for cls, (applies, reason) in CONDITIONALLY_INCOMPATIBLE.items():
        if isinstance(layer, cls) and applies(layer):
            return reason
    return None


def _children(layer: tf.keras.layers.Layer) -> list[tf.keras.layers.Layer]:
    """The layers directly tracked by ``layer`` (nested models, wrapped layers, custom sublayers)."""
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _walk(layer: tf.keras.layers.Layer, prefix: str = "", seen: set[int] | None = None) -> Iterator:
    """Yields ``(path, layer)`` for every layer below ``layer``, each once, depth first."""
    seen = set() if seen is None else seen
    for child in _children(layer):
        if id(child) in seen or isinstance(child, tf.keras.layers.InputLayer):
            continue
        seen.add(id(child))
        path = f"{prefix}{child.name}"
        yield path, child
        yield from _walk(child, f"{path}/", seen)


def all_layers(model: tf.keras.layers.Layer) -> list[tf.keras.layers.Layer]:
    """Every layer below ``model`` (nested models, wrapped layers, custom sublayers), each once."""
    return [layer for _, layer in _walk(model)]


def _check_is_layer(model) -> None:
    if not isinstance(model, tf.keras.layers.Layer):
        raise TypeError(f"model must be a tf.keras Model or Layer, got {type(model).__name__}.")


def _offenders(model: tf.keras.layers.Layer) -> list[tuple[str, tf.keras.layers.Layer, str]]:
    """``(path, layer, reason)`` for ``model`` itself and every layer below it that is incompatible."""
    _check_is_layer(model)
    candidates = [(model.name, model), *_walk(model)]
    found = []
    for path, layer in candidates:
        reason = _reason(layer)
        if reason is not None:
            found.append((path, layer, reason))
    return found


def incompatible_layers(model: tf.keras.layers.Layer) -> list[tuple[tf.keras.layers.Layer, str]]:
    """Lists the layers of ``model`` that break per-example differential privacy.

    Walks every layer, recursively into nested models, wrappers (``TimeDistributed``, ``Bidirectional``)
    and custom layers' sublayers.

    Args:
        model: A Keras model (or layer).

    Returns:
        ``[(layer, reason), ...]`` in depth-first order, empty if the model is fine.

    Raises:
        TypeError: ``model`` is not a Keras layer or model.
    """
    return [(layer, reason) for _, layer, reason in _offenders(model)]


def _format_refusal(model: tf.keras.layers.Layer, offenders: list) -> str:
    """One paragraph per distinct reason, listing the layers it applies to."""
    by_reason: dict[str, list[str]] = {}
    for path, layer, reason in offenders:
        by_reason.setdefault(reason, []).append(f"  - '{path}' ({type(layer).__name__})")
    lines = [
        f"Model '{model.name}' cannot be trained with differential privacy: {len(offenders)} layer(s) let one "
        "example's data affect other examples' gradients or the saved weights without noise."
    ]
    for reason, layers in by_reason.items():
        lines += ["", *layers, reason]
    return "\n".join(lines)


def validate_model(model: tf.keras.layers.Layer) -> None:
    """Raises if any layer of ``model`` breaks per-example differential privacy.

    See ``INCOMPATIBLE`` and ``CONDITIONALLY_INCOMPATIBLE`` for the refused layers and why.

    Args:
        model: A Keras model (or layer), walked recursively into nested models and sublayers.

    Raises:
        ValueError: Naming each offending layer (path and class), why it is refused and how to fix it.
        TypeError: ``model`` is not a Keras layer or model.
    """
    offenders = _offenders(model)
    if offenders:
        raise ValueError(_format_refusal(model, offenders))


# --------------------------------------------------------------------------------------------- fixing


def _is_batch_norm(layer: tf.keras.layers.Layer) -> bool:
    return isinstance(layer, keras_seam.BATCH_NORM_CLASSES)


def _contains_batch_norm(layer: tf.keras.layers.Layer) -> bool:
    return any(_is_batch_norm(child) for _, child in _walk(layer))


def _is_graph_model(layer: tf.keras.layers.Layer) -> bool:
    """True for Sequential and functional models, which ``clone_model`` can rebuild layer by layer."""
    return isinstance(layer, tf.keras.Sequential) or keras_seam.has_layer_graph(layer)


def _bn_axes(bn: tf.keras.layers.Layer) -> list[int]:
    axis = bn.axis
    return [int(a) for a in axis] if hasattr(axis, "__len__") else [int(axis)]


def _input_shape(layer: tf.keras.layers.Layer) -> tuple | None:
    """The input shape of a built layer (Keras 2's ``input_shape``, Keras 3's ``input.shape``), None if unknown."""
    for read in (lambda: layer.input_shape, lambda: tuple(layer.input.shape)):
        try:
            shape = read()
        except (AttributeError, RuntimeError, ValueError):
            continue
        if isinstance(shape, tuple):
            return shape
    return None


def _values_per_channel(bn: tf.keras.layers.Layer, axes: list[int]) -> int | None:
    """How many values one example has per channel (product of the non-batch, non-channel dims)."""
    spec = bn.input_spec
    if spec is not None and spec.ndim == 2:
        return 1
    shape = _input_shape(bn)
    if shape is None:
        return None
    dims = [d for i, d in enumerate(shape) if i != 0 and i not in axes and i - len(shape) not in axes]
    return None if any(d is None for d in dims) else math.prod(dims)


def _group_count(channels: int, per_channel: int | None) -> int | None:
    """Largest divisor of ``channels`` <= MAX_GROUPS whose groups hold more than one value per example.

    A group with a single value normalizes to zero, so for inputs without spatial dims (e.g. after Dense)
    each group needs at least two channels. Unknown spatial size is assumed to be > 1.
    """
    per_channel = 2 if per_channel is None else per_channel
    for groups in range(min(MAX_GROUPS, channels), 0, -1):
        if channels % groups == 0 and (channels // groups) * per_channel >= 2:
            return groups
    return None


def _norm_kwargs(bn: tf.keras.layers.Layer) -> dict:
    """The BatchNormalization settings that carry over to a per-example norm (not the initializers)."""
    return {
        "epsilon": bn.epsilon,
        "center": bn.center,
        "scale": bn.scale,
        "beta_regularizer": bn.beta_regularizer,
        "gamma_regularizer": bn.gamma_regularizer,
        "beta_constraint": bn.beta_constraint,
        "gamma_constraint": bn.gamma_constraint,
        "name": bn.name,
        "trainable": bn.trainable,
        "dtype": bn.dtype_policy,
    }


def _replacement(bn: tf.keras.layers.Layer, norm: str, channels_hint: int | None = None) -> tf.keras.layers.Layer:
    """A fresh per-example normalization layer (gamma = 1, beta = 0) standing in for ``bn``.

    ``channels_hint`` is the channel count of an unbuilt ``bn`` as the layers before it give it (None: unknown).
    """
    axes = _bn_axes(bn)
    if bn.built:
        channels = int(bn.moving_mean.shape[0]) if len(axes) == 1 else None
        per_channel = _values_per_channel(bn, axes)
    else:  # the spatial size is unknown: one value per channel is assumed, so each group keeps two channels
        channels, per_channel = (channels_hint, 1) if axes == [-1] else (None, None)
    if bn.built and channels is not None and channels * (per_channel or 2) < 2:
        warnings.warn(
            f"Layer '{bn.name}' normalizes a single value per example; any per-example normalization of it "
            "outputs a constant. Consider removing the layer instead.",
            UserWarning,
            stacklevel=2,
        )
    layer_norm_axis = axes if len(axes) > 1 else axes[0]
    if norm == "layer":
        return tf.keras.layers.LayerNormalization(axis=layer_norm_axis, **_norm_kwargs(bn))
    groups = None if channels is None else _group_count(channels, per_channel)
    if groups is not None:
        return tf.keras.layers.GroupNormalization(groups=groups, axis=axes[0], **_norm_kwargs(bn))
    if len(axes) > 1:
        why = f"it normalizes over several axes {axes}, and GroupNormalization takes one channel axis"
    elif channels is None:
        why = (
            "its channel count is unknown: the model is not built and the layer before it does not fix the count "
            "(start the model with tf.keras.Input(shape) to get GroupNormalization)"
        )
    else:
        why = f"its {channels} channel(s) cannot form groups of more than one value per example"
    warnings.warn(
        f"fix_model: BatchNormalization '{bn.name}' is replaced by LayerNormalization, not GroupNormalization: {why}.",
        UserWarning,
        stacklevel=2,
    )
    return tf.keras.layers.LayerNormalization(axis=layer_norm_axis, **_norm_kwargs(bn))


def _clone_wrapper(wrapper: tf.keras.layers.Wrapper, norm: str) -> tf.keras.layers.Layer:
    """Rebuilds a wrapper (e.g. ``TimeDistributed(BatchNormalization())``) around the replacement layer."""
    config = wrapper.get_config()
    config["layer"] = tf.keras.layers.serialize(_replacement(wrapper.layer, norm))
    return wrapper.__class__.from_config(config)


class _Cloner:
    """Clone function for ``tf.keras.models.clone_model`` that swaps BatchNormalization out.

    Records ``(old, new)`` for every layer that keeps its weights, so they can be copied afterwards.
    """

    def __init__(self, norm: str):
        self.norm = norm
        self.pairs: list[tuple[tf.keras.layers.Layer, tf.keras.layers.Layer]] = []
        self.hints: dict[int, int | None] = {}

    def __call__(self, layer: tf.keras.layers.Layer) -> tf.keras.layers.Layer:
        if _is_batch_norm(layer):
            return _replacement(layer, self.norm, self.hints.get(id(layer)))
        if _is_graph_model(layer):
            return self.clone_model(layer)
        if isinstance(layer, tf.keras.layers.Wrapper) and _is_batch_norm(layer.layer):
            return _clone_wrapper(layer, self.norm)
        if _contains_batch_norm(layer):
            raise ValueError(
                f"Cannot replace the BatchNormalization inside layer '{layer.name}' "
                f"({type(layer).__name__}): fix_model only rewrites Sequential and functional models and "
                "simple wrappers. Replace it in that layer's code with tf.keras.layers.GroupNormalization."
            )
        new = layer.__class__.from_config(layer.get_config())
        self.pairs.append((layer, new))
        return new

    def clone_model(self, model: tf.keras.Model) -> tf.keras.Model:
        if isinstance(model, tf.keras.Sequential) and not model.built:
            self.hints.update(channel_hints(model))
        new = keras_seam.clone_model(model, self)
        if model.built and not new.built and getattr(model, "_build_input_shape", None) is not None:
            new.build(model._build_input_shape)
        return new

    def copy_weights(self) -> None:
        for old, new in self.pairs:
            if old.weights:
                new.set_weights(old.get_weights())


def fix_model(model: tf.keras.Model, *, norm: str = "group") -> tf.keras.Model:
    """Returns a copy of ``model`` with every BatchNormalization replaced by a per-example normalization.

    Each ``BatchNormalization`` becomes ``GroupNormalization(groups=g, axis=bn.axis, epsilon=bn.epsilon,
    center=bn.center, scale=bn.scale)``, with ``g`` the largest divisor of the channel count that is <= 32
    (and, for inputs without spatial dims such as after ``Dense``, leaves at least two channels per group,
    since a one-value group normalizes to zero). In a Sequential that is not built yet the channel count is
    read from the layers before (the last ``filters``/``units``/``output_dim``, through activations, dropout,
    pooling, ...; see :mod:`op_tensorflow.layer_channels`), and as the spatial size is unknown each group
    keeps at least two channels. Only when no group count fits (the channel count is unknown, or the layer
    normalizes over several axes) ``LayerNormalization`` over the same axes is used, with a ``UserWarning``
    naming the layer and why. With ``norm="layer"`` every one becomes ``LayerNormalization(axis=bn.axis)``
    (``-1`` for channels-last), silently.

    The replacements keep the BatchNormalization's name, epsilon, center/scale, regularizers, constraints,
    trainability and dtype policy, and start at gamma = 1, beta = 0: BatchNormalization's gamma/beta are
    NOT copied, since they were fitted to batch statistics and are meaningless under another normalization
    (and its moving mean/variance are the non-private statistics being removed). Every other layer keeps
    its class, config, name and weights (copied, not shared). Nested Sequential/functional models are
    rewritten recursively, as is ``TimeDistributed(BatchNormalization())``. The input model is untouched.
    The copy is not compiled.

    Args:
        model: A Sequential (built or not) or functional Keras model.
        norm: ``"group"`` (default) or ``"layer"``.

    Returns:
        A new model that passes ``validate_model`` as far as BatchNormalization is concerned.

    Raises:
        ValueError: ``norm`` is unknown, or a BatchNormalization sits inside a subclassed model or custom
            layer that cannot be rebuilt from its config.
        TypeError: ``model`` is not a Sequential or functional Keras model.
    """
    one_of("norm", norm, NORMS)
    if not isinstance(model, tf.keras.Model) or not _is_graph_model(model):
        raise TypeError(
            f"fix_model needs a Sequential or functional tf.keras model, got {type(model).__name__}; "
            "subclassed models cannot be rebuilt layer by layer: replace BatchNormalization in their code "
            "with tf.keras.layers.GroupNormalization."
        )
    cloner = _Cloner(norm)
    new = cloner.clone_model(model)
    cloner.copy_weights()
    return new
