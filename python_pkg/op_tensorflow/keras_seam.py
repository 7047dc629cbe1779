"""The one place where Keras 2 and Keras 3 differ for the DP engine.

op_tensorflow runs on three stacks: TensorFlow 2.16+ with Keras 3 (the default ``tf.keras``), TensorFlow
2.16+ with Keras 2 from ``tf_keras`` (``TF_USE_LEGACY_KERAS=1`` set before ``tf.keras`` is first used),
and TensorFlow 2.15 with Keras 2. Everything else in the package is written against ``tf.keras`` and the
functions below, which name what the engine needs from Keras internals:

* which Keras is in use (:data:`KERAS3`, :data:`KERAS_PACKAGE`), detected once, at import;
* walking a Sequential or functional model layer by layer with a hook around every layer call
  (:func:`has_layer_graph`, :func:`forward_pass`), which is how registry functions replace layer calls;
* the ``training`` argument of layer calls (:func:`call_has_training_arg`, :func:`with_training`);
* the tensors a ``tf.GradientTape`` watches for a model's variables (:func:`tape_variables`);
* losses without reduction (:func:`unreduced_loss`), the compiled loss and metrics
  (:func:`compiled_loss`, :func:`compiled_metrics`), BatchNormalization's classes
  (:data:`BATCH_NORM_CLASSES`), saving (:func:`save_model`);
* TF Privacy's Keras 2 modules (:func:`tf_privacy_module`), whose package ``__init__`` fails on TF >= 2.16.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import tensorflow as tf

__all__ = [
    "BATCH_NORM_CLASSES",
    "KERAS3",
    "KERAS_PACKAGE",
    "call_has_training_arg",
    "check_model",
    "clone_model",
    "compiled_loss",
    "compiled_metrics",
    "forward_pass",
    "has_layer_graph",
    "keras_description",
    "random_states",
    "registry_tape",
    "restore_random_states",
    "save_model",
    "tape_target",
    "tape_variables",
    "tf_privacy_module",
    "unreduced_loss",
    "with_training",
]

Hook = Callable[[Any, tuple, dict], tuple[Any, Any]]

_LEGACY_REQUESTED = os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")

KERAS_PACKAGE: str = tf.keras.Model.__module__.split(".")[0]  # "keras" or "tf_keras"
_keras_root = importlib.import_module(KERAS_PACKAGE)
KERAS3: bool = KERAS_PACKAGE == "keras" and str(getattr(_keras_root, "__version__", "2")).startswith("3")

if _LEGACY_REQUESTED and KERAS3:
    raise ImportError(
        "TF_USE_LEGACY_KERAS=1 is set, but tf.keras is already Keras 3: tf.keras was used before the variable "
        "was set. Set TF_USE_LEGACY_KERAS=1 before importing tensorflow (or op_tensorflow), or unset it to use "
        "Keras 3."
    )


def keras_description() -> str:
    """E.g. ``"Keras 3.15.1 on TensorFlow 2.21.0"``."""
    version = getattr(_keras_root, "__version__", None) or getattr(tf.keras, "__version__", "?")
    return f"{'Keras' if KERAS_PACKAGE == 'keras' else 'tf_keras'} {version} on TensorFlow {tf.__version__}"


def _other_keras_model_class():
    """The Model class of the Keras that is installed but not in use (None if there is none)."""
    other = "tf_keras" if KERAS3 else "keras"
    module = sys.modules.get(other)
    if module is None or (other == "keras" and not str(getattr(module, "__version__", "")).startswith("3")):
        return None
    return getattr(module, "Model", None)


def check_model(model, what: str = "model") -> None:
    """Refuses anything but a ``tf.keras`` model, explaining a model built with the other Keras."""
    if isinstance(model, tf.keras.Model):
        return
    other = _other_keras_model_class()
    if other is not None and isinstance(model, other):
        fix = (
            "build it with tf.keras (or `import keras`), or unset TF_USE_LEGACY_KERAS"
            if not KERAS3
            else "build it with tf.keras (or `import keras`), or set TF_USE_LEGACY_KERAS=1 before importing "
            "tensorflow to run on Keras 2"
        )
        raise TypeError(
            f"{what} was built with {'Keras 3' if not KERAS3 else 'tf_keras (Keras 2)'}, but op_tensorflow runs on "
            f"{keras_description()} (the Keras behind tf.keras); {fix}."
        )
    raise TypeError(f"{what} must be a tf.keras Model (Sequential or functional), got {type(model).__name__}.")


# -- TF Privacy -----------------------------------------------------------------------------------------------
TF_PRIVACY_INSTALL = (
    "pip install --no-deps tensorflow-privacy==0.9.0 tensorflow-empirical-privacy==0.1.0 "
    "(their declared pins would downgrade TensorFlow; see the README)"
)


def tf_privacy_module(name: str):
    """Imports ``tensorflow_privacy.<name>``, with an install hint if TF Privacy is missing.

    The import works on TF >= 2.16 too: see :mod:`op_tensorflow._tf_privacy_hook`.
    """
    try:
        return importlib.import_module(f"tensorflow_privacy.{name}")
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("tensorflow_privacy"):
            raise ImportError(f"op_tensorflow needs TF Privacy: {TF_PRIVACY_INSTALL}.") from None
        raise


# -- the layer graph ----------------------------------------------------------------------------------------
if KERAS3:
    from keras import Variable as _KerasVariable
    from keras.src.models.functional import Functional as _Functional

    def has_layer_graph(model) -> bool:
        """Whether ``model`` is Sequential or functional (a layer graph the engine can walk)."""
        if isinstance(model, tf.keras.Sequential):
            return getattr(model, "_functional", None) is not None
        return isinstance(model, _Functional)

    def _graph_of(model):
        return model._functional if isinstance(model, tf.keras.Sequential) else model

    def forward_pass(model, inputs, hook: Hook) -> tuple[Any, list]:
        """Runs ``model`` on ``inputs`` node by node, nested models included, calling ``hook(layer, args, kwargs)``.

        ``hook`` must return ``(layer outputs, anything)``; the second items are returned in call order.
        """
        records: list = []

        def run(current, current_inputs):
            functional = _graph_of(current)

            def call_fn(layer, *args, **kwargs):
                if not isinstance(layer, tf.keras.layers.Layer):  # a keras.ops operation in the graph
                    return layer(*args, **kwargs)
                if has_layer_graph(layer):
                    return run(layer, args[0] if len(args) == 1 else list(args))
                outputs, record = hook(layer, args, kwargs)
                records.append(record)
                return outputs

            outputs = functional._run_through_graph(functional._standardize_inputs(current_inputs), call_fn=call_fn)
            return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs

        return run(model, inputs), records

    def call_has_training_arg(layer) -> bool:
        return bool(getattr(layer, "_call_has_training_arg", False))

    def tape_target(x):
        """The ``tf.Variable`` behind a Keras 3 variable (what a tape watches and differentiates); else ``x``."""
        return x.value if isinstance(x, _KerasVariable) else x

    class _TapeWatchingValues:
        """A tape whose ``watch`` takes Keras 3 variables (tensorflow-privacy's registry functions watch them)."""

        def __init__(self, tape: tf.GradientTape):
            self._tape = tape

        def watch(self, tensors) -> None:
            self._tape.watch(tf.nest.map_structure(tape_target, tensors))

        def __getattr__(self, name):
            return getattr(self._tape, name)

    def registry_tape(tape: tf.GradientTape):
        """``tape`` as registry functions get it: on Keras 3, ``watch`` accepts Keras variables."""
        return _TapeWatchingValues(tape)

else:
    _tfp_graph = tf_privacy_module("privacy.fast_gradient_clipping.gradient_clipping_utils")

    def has_layer_graph(model) -> bool:
        """Whether ``model`` is Sequential or functional (a layer graph the engine can walk)."""
        return _tfp_graph.has_internal_compute_graph(model)

    def forward_pass(model, inputs, hook: Hook) -> tuple[Any, list]:
        """Runs ``model`` on ``inputs`` node by node, nested models included, calling ``hook(layer, args, kwargs)``.

        ``hook`` must return ``(layer outputs, anything)``; the second items are returned in call order.
        """
        return _tfp_graph.model_forward_pass(model, inputs, hook)

    def call_has_training_arg(layer) -> bool:
        return bool(getattr(layer, "_expects_training_arg", False))

    def tape_target(x):
        return x

    def registry_tape(tape: tf.GradientTape):
        return tape


def tape_variables(variables) -> list:
    """What a ``tf.GradientTape`` watches and differentiates for these Keras variables (the same on Keras 2)."""
    return [tape_target(v) for v in variables]


def with_training(layer, kwargs: dict, training: bool) -> dict:
    """The call's keyword arguments with ``training`` set, for layers that take it (unless the graph set it).

    Keras 3 records ``training=None`` in functional graph nodes, and ``training=False`` in the graph a
    Sequential builds of itself; neither is the user's choice, so on Keras 3 only a recorded True is kept.
    """
    recorded = kwargs.get("training")
    if call_has_training_arg(layer) and (recorded is None or (KERAS3 and recorded is False)):
        return {**kwargs, "training": training}
    return kwargs


def output_has_mask(outputs) -> bool:
    """Whether a layer call's outputs carry a Keras mask (both Keras versions attach it as ``_keras_mask``)."""
    return any(getattr(t, "_keras_mask", None) is not None for t in tf.nest.flatten(outputs))


# -- losses, metrics, saving ---------------------------------------------------------------------------------
if KERAS3:
    from keras.src.losses import LossFunctionWrapper as _LossFunctionWrapper

    _NO_REDUCTION = None
else:
    _LossFunctionWrapper = importlib.import_module(f"{KERAS_PACKAGE}.src.losses").LossFunctionWrapper
    _NO_REDUCTION = tf.keras.losses.Reduction.NONE


def unreduced_loss(loss):
    """``loss`` (a Keras loss instance or a function) returning one value per example."""
    if isinstance(loss, tf.keras.losses.Loss):
        config = loss.get_config()
        config["reduction"] = _NO_REDUCTION
        return type(loss).from_config(config)
    return _LossFunctionWrapper(loss, reduction=_NO_REDUCTION, name=getattr(loss, "__name__", None))


def compiled_loss(model):
    """The loss the user gave ``model.compile`` (None if it was not compiled with one)."""
    if KERAS3:
        return getattr(model, "loss", None)
    compiled = getattr(model, "compiled_loss", None)
    return None if compiled is None else compiled._user_losses


def compiled_metrics(model) -> list:
    """The metrics the user gave ``model.compile``, flattened (names, functions or metric objects)."""
    if KERAS3:
        config = getattr(model, "_compile_config", None)
        metrics = None if config is None else config.config.get("metrics")
    else:
        compiled = getattr(model, "compiled_metrics", None)
        metrics = None if compiled is None else compiled._user_metrics
    return tf.nest.flatten(metrics) if metrics is not None else []


def random_states(model) -> list:
    """The states of the seed generators Keras 3 layers draw from (Keras 2 layers use TF's global seed)."""
    if not KERAS3:
        return []
    generators = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        generators.extend(g for g in getattr(layer, "_seed_generators", []) if g not in generators)
    return [(g, g.state.numpy()) for g in generators]


def restore_random_states(states: list) -> None:
    """Puts seed generators back to states from :func:`random_states`: the next draws repeat."""
    for generator, value in states:
        generator.state.assign(value)


def save_model(model, path: str) -> None:
    """Saves ``model`` in the ``.keras`` zip format."""
    if KERAS3:
        model.save(path)
    else:  # pinned: Keras 2.15 otherwise falls back to HDF5 in a thread that ran load_model
        model.save(path, save_format="keras_v3")


def clone_model(model, clone_function):
    """``tf.keras.models.clone_model`` with ``clone_function``; a replacement layer that takes no mask gets none.

    Keras 3 records ``mask=None`` in a graph node when the original layer's call takes a mask (e.g.
    BatchNormalization) and passes it to whatever layer replaces it (GroupNormalization takes none).
    """
    if not KERAS3 or isinstance(model, tf.keras.Sequential):  # a Sequential's layers are listed, not called
        return tf.keras.models.clone_model(model, clone_function=clone_function)

    def call_function(layer, *args, **kwargs):
        if "mask" in kwargs and not getattr(layer, "_call_has_mask_arg", True):
            kwargs.pop("mask")
        return layer(*args, **kwargs)

    return tf.keras.models.clone_model(model, clone_function=clone_function, call_function=call_function)


# -- layer classes --------------------------------------------------------------------------------------------
def _batch_norm_classes() -> tuple[type, ...]:
    if KERAS3:
        return (tf.keras.layers.BatchNormalization,)
    try:  # the common base of BatchNormalization (v2 and TF1) and SyncBatchNormalization in Keras 2
        module = importlib.import_module(f"{KERAS_PACKAGE}.src.layers.normalization.batch_normalization")
        return (module.BatchNormalizationBase,)
    except (ImportError, AttributeError):  # pragma: no cover - other Keras 2 layouts
        return (tf.keras.layers.BatchNormalization,)


BATCH_NORM_CLASSES: tuple[type, ...] = _batch_norm_classes()
