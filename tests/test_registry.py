"""Layer registry: per-example squared gradient norms vs. an explicit one-example-at-a-time loop."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from conftest import KERAS3, keras2_only
from tensorflow_privacy.privacy.fast_gradient_clipping import clip_grads

import op_tensorflow.registry as registry_module
from op_tensorflow import keras_seam
from op_tensorflow.registry import conv, fallback, fallback_layer_computation, make_registry, register_layer

# Keras 2.15 seeds its initializers with `randint(1, 1e9)` after `set_random_seed`.
pytestmark = pytest.mark.filterwarnings("ignore:non-integer arguments to randrange:DeprecationWarning")

RTOL = 1e-4
ATOL = 1e-6


# ----------------------------------------------------------------------------------------------------------------
# Custom layers for the fallback.
# ----------------------------------------------------------------------------------------------------------------
class GatedPair(tf.keras.layers.Layer):
    """Nested inputs ``[a, (b, c)]``, a batched keyword tensor ``gate`` and two outputs."""

    def build(self, input_shape):
        dim = input_shape[0][-1]
        self.w = self.add_weight(name="w", shape=(dim,), initializer="random_normal")
        self.v = self.add_weight(name="v", shape=(dim, dim), initializer="random_normal")

    def call(self, inputs, gate=None, training=None):
        a, (b, c) = inputs
        first = tf.tanh(a * self.w + tf.matmul(b, self.v))
        second = c * tf.square(self.w) * gate
        return [first, second]


class MyDense(tf.keras.layers.Dense):
    """A Dense subclass: must not match the registered Dense (it could override ``call``)."""


class Scale(tf.keras.layers.Layer):
    """One weight per feature; registered in the ``register_layer`` tests."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="random_normal")

    def call(self, inputs):
        return inputs * self.scale


# ----------------------------------------------------------------------------------------------------------------
# Cases.
# ----------------------------------------------------------------------------------------------------------------
def normal(*shape: int) -> Callable[[np.random.Generator, int], tf.Tensor]:
    return lambda rng, batch: tf.constant(rng.normal(size=(batch, *shape)), tf.float32)


def binary(*shape: int) -> Callable[[np.random.Generator, int], tf.Tensor]:
    return lambda rng, batch: tf.constant(rng.integers(0, 2, size=(batch, *shape)), tf.float32)


def ids(vocab: int, length: int) -> Callable[[np.random.Generator, int], tf.Tensor]:
    return lambda rng, batch: tf.constant(rng.integers(0, vocab, size=(batch, length)), tf.int32)


@dataclasses.dataclass
class Case:
    name: str
    make_layer: Callable[[], tf.keras.layers.Layer]
    args: Any  # nested structure of input makers `(rng, batch) -> tensor`
    registered: bool = True
    kwargs: dict = dataclasses.field(default_factory=dict)
    keras2_only: bool = False  # a call Keras 3 does not have (its GroupNormalization takes no mask)

    def inputs(self, batch: int, seed: int = 0) -> tuple[tuple, dict]:
        rng = np.random.default_rng(seed)
        return tf.nest.map_structure(lambda make: make(rng, batch), (tuple(self.args), self.kwargs))


CASES = [
    Case("dense_2d", lambda: tf.keras.layers.Dense(5, activation="tanh"), [normal(4)]),
    Case("dense_3d", lambda: tf.keras.layers.Dense(3, activation="sigmoid"), [normal(6, 4)]),
    Case("embedding", lambda: tf.keras.layers.Embedding(7, 3), [ids(7, 5)]),
    Case("layer_norm", lambda: tf.keras.layers.LayerNormalization(), [normal(6)]),
    Case("layer_norm_2_axes", lambda: tf.keras.layers.LayerNormalization(axis=[1, 2]), [normal(3, 4)]),
    Case("layer_norm_no_center", lambda: tf.keras.layers.LayerNormalization(center=False), [normal(2, 5)]),
    Case("conv1d_valid", lambda: tf.keras.layers.Conv1D(4, 3), [normal(10, 2)]),
    Case("conv1d_same_stride", lambda: tf.keras.layers.Conv1D(4, 3, 2, "same", activation="tanh"), [normal(11, 2)]),
    Case("conv1d_same_dilated", lambda: tf.keras.layers.Conv1D(3, 2, padding="same", dilation_rate=3), [normal(9, 2)]),
    Case(
        "conv1d_causal_dilated_nobias",
        lambda: tf.keras.layers.Conv1D(3, 3, padding="causal", dilation_rate=2, use_bias=False),
        [normal(12, 2)],
    ),
    Case("conv1d_causal_stride", lambda: tf.keras.layers.Conv1D(3, 4, strides=3, padding="causal"), [normal(10, 3)]),
    Case("conv1d_ghost", lambda: tf.keras.layers.Conv1D(16, 4, strides=4), [normal(8, 8)]),
    Case("conv2d_valid", lambda: tf.keras.layers.Conv2D(4, 3), [normal(6, 6, 2)]),
    Case(
        "conv2d_same_stride_nobias",
        lambda: tf.keras.layers.Conv2D(3, (3, 2), (2, 1), "same", use_bias=False, activation="tanh"),
        [normal(7, 6, 2)],
    ),
    Case(
        "conv2d_same_dilated",
        lambda: tf.keras.layers.Conv2D(3, 2, padding="same", dilation_rate=(2, 1)),
        [normal(6, 5, 3)],
    ),
    Case("conv2d_ghost", lambda: tf.keras.layers.Conv2D(16, 3, strides=2), [normal(5, 5, 8)]),
    Case("group_norm", lambda: tf.keras.layers.GroupNormalization(groups=2), [normal(5, 4)]),
    Case("group_norm_image_no_center", lambda: tf.keras.layers.GroupNormalization(3, center=False), [normal(3, 3, 6)]),
    Case(
        "group_norm_mask",
        lambda: tf.keras.layers.GroupNormalization(groups=2),
        [normal(5, 4)],
        kwargs={"mask": binary(5, 1)},
        keras2_only=True,
    ),
    Case("group_norm_axis_1", lambda: tf.keras.layers.GroupNormalization(groups=2, axis=1), [normal(4, 5)]),
    Case("fallback_simple_rnn", lambda: tf.keras.layers.SimpleRNN(4), [normal(5, 3)], registered=False),
    Case("fallback_lstm_map_fn", lambda: tf.keras.layers.LSTM(3), [normal(4, 2)], registered=False),
    Case("conv2d_grouped", lambda: tf.keras.layers.Conv2D(4, 3, groups=2), [normal(5, 5, 4)]),
    Case("conv1d_grouped_causal", lambda: tf.keras.layers.Conv1D(6, 2, padding="causal", groups=3), [normal(7, 3)]),
    Case("fallback_prelu", lambda: tf.keras.layers.PReLU(), [normal(6)], registered=False),
    Case("fallback_dense_subclass", lambda: MyDense(3, activation="tanh"), [normal(4)], registered=False),
    Case(
        "fallback_nested_inputs",
        GatedPair,
        [[normal(3), (normal(3), normal(2, 3))]],
        registered=False,
        kwargs={"gate": normal(2, 3)},
    ),
]


# ----------------------------------------------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------------------------------------------
def per_example_loss(outputs: Any, weights: Any) -> tf.Tensor:
    """A per-example loss with non-trivial gradients: ``sum(w * y + y^2)`` over the non-batch axes."""
    losses = []
    for out, w in zip(tf.nest.flatten(outputs), tf.nest.flatten(weights), strict=True):
        axes = list(range(1, out.shape.rank))
        losses.append(tf.reduce_sum(w * out + tf.square(out), axis=axes))
    return tf.add_n(losses)


def loss_weights(outputs: Any, seed: int = 1, batch: int | None = None) -> Any:
    """Random weights shaped like ``outputs`` (with ``batch`` rows if given)."""
    rng = np.random.default_rng(seed)

    def weights(out: tf.Tensor) -> tf.Tensor:
        shape = out.shape if batch is None else (batch, *out.shape[1:])
        return tf.constant(rng.normal(size=shape), tf.float32)

    return tf.nest.map_structure(weights, outputs)


def registry_function(case: Case, layer: tf.keras.layers.Layer) -> Callable:
    """The function the engine uses: the registered one, or the fallback if unregistered or unsupported."""
    registry = make_registry()
    assert registry.is_elem(layer) == case.registered
    if not case.registered:
        return fallback_layer_computation
    registered_fn = registry.lookup(layer)

    def fn(layer_instance, input_args, input_kwargs, tape, num_microbatches=None):
        try:
            return registered_fn(layer_instance, input_args, input_kwargs, tape, num_microbatches)
        except NotImplementedError:
            return fallback_layer_computation(layer_instance, input_args, input_kwargs, tape, num_microbatches)

    return fn


def registry_sqr_norms(fn: Callable, layer, args, kwargs, weights) -> tuple[tf.Tensor, Any]:
    """Per-example squared norms through ``fn``, used as ``clip_grads.compute_gradient_norms`` does."""
    tape = tf.GradientTape(persistent=True, watch_accessed_variables=False)
    with tape:
        base_vars, outputs, sqr_norm_fn = fn(layer, args, kwargs, keras_seam.registry_tape(tape), None)
        summed_loss = tf.reduce_sum(per_example_loss(outputs, weights))
    targets = tf.nest.map_structure(keras_seam.tape_target, base_vars)
    grads = tape.gradient(summed_loss, targets, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return sqr_norm_fn(grads), outputs


def slice_batch(structure: Any, i: int) -> Any:
    return tf.nest.map_structure(lambda t: t[i : i + 1] if tf.is_tensor(t) and t.shape.rank else t, structure)


def loop_sqr_norms(layer, args, kwargs, weights) -> np.ndarray:
    """The reference: one backward pass per example."""
    batch = tf.shape(tf.nest.flatten(args)[0])[0]
    norms = []
    for i in range(batch):
        args_i, kwargs_i, weights_i = slice_batch((args, kwargs, weights), i)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(per_example_loss(layer(*args_i, **kwargs_i), weights_i))
        grads = tape.gradient(loss, layer.trainable_variables)
        norms.append(sum(float(tf.reduce_sum(tf.square(tf.convert_to_tensor(g)))) for g in grads))
    return np.array(norms, np.float32)


def build(case: Case) -> tf.keras.layers.Layer:
    if case.keras2_only and KERAS3:
        pytest.skip("Keras 2 only")
    tf.keras.utils.set_random_seed(0)
    layer = case.make_layer()
    args, kwargs = case.inputs(2)
    layer(*args, **kwargs)
    return layer


# ----------------------------------------------------------------------------------------------------------------
# Tests.
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_per_example_loop(case: Case, caplog):
    caplog.set_level(logging.INFO)
    layer = build(case)
    args, kwargs = case.inputs(5)
    expected_outputs = layer(*args, **kwargs)
    weights = loss_weights(expected_outputs)

    norms, outputs = registry_sqr_norms(registry_function(case, layer), layer, args, kwargs, weights)

    tf.nest.map_structure(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), outputs, expected_outputs
    )
    assert norms.shape == (5,)
    expected = loop_sqr_norms(layer, args, kwargs, weights)
    assert np.all(expected > 0)
    np.testing.assert_allclose(norms, expected, rtol=RTOL, atol=ATOL)
    # on TF >= 2.16 every RNN loops (its vectorized while loop is not trusted there), on TF 2.15 only LSTM
    loops = case.name.endswith("map_fn") or ("While" in fallback._UNTRUSTED_OPS and case.name.endswith("rnn"))
    assert ("using tf.map_fn" in caplog.text) == loops


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_in_tf_function_with_unknown_batch(case: Case):
    layer = build(case)
    fn = registry_function(case, layer)
    example_inputs = case.inputs(1)
    example_outputs = layer(*example_inputs[0], **example_inputs[1])
    example_weights = loss_weights(example_outputs)
    structure = (example_inputs, example_weights)
    flat = tf.nest.flatten(structure)
    signature = [tf.TensorSpec([None, *t.shape[1:]], t.dtype) for t in flat]
    traces = []

    @tf.function(input_signature=signature)
    def sqr_norms(*flat_tensors):
        traces.append(1)
        (args, kwargs), weights = tf.nest.pack_sequence_as(structure, list(flat_tensors))
        return registry_sqr_norms(fn, layer, args, kwargs, weights)[0]

    for batch in (0, 1, 7):
        args, kwargs = case.inputs(batch, seed=batch)
        weights = loss_weights(example_outputs, seed=batch, batch=batch)
        norms = sqr_norms(*tf.nest.flatten(((args, kwargs), weights)))
        assert norms.shape == (batch,)
        np.testing.assert_allclose(norms, loop_sqr_norms(layer, args, kwargs, weights), rtol=RTOL, atol=ATOL)
    assert len(traces) == 1


def test_conv1d_unknown_length_picks_method_at_run_time():
    layer = tf.keras.layers.Conv1D(6, 3, padding="same")
    layer.build((None, None, 2))
    traces = []

    @tf.function(input_signature=[tf.TensorSpec([None, None, 2]), tf.TensorSpec([None, None, 6])])
    def sqr_norms(x, w):
        traces.append(1)
        return registry_sqr_norms(make_registry().lookup(layer), layer, (x,), {}, w)[0]

    rng = np.random.default_rng(3)
    for batch, length in ((3, 2), (4, 9), (0, 5)):  # length 2 -> ghost norm, 9 -> explicit.
        x = tf.constant(rng.normal(size=(batch, length, 2)), tf.float32)
        w = tf.constant(rng.normal(size=(batch, length, 6)), tf.float32)
        np.testing.assert_allclose(sqr_norms(x, w), loop_sqr_norms(layer, (x,), {}, w), rtol=RTOL, atol=ATOL)
    assert len(traces) == 1


def test_ghost_and_explicit_kernel_norms_agree():
    rng = np.random.default_rng(4)
    patches = tf.constant(rng.normal(size=(3, 5, 7)), tf.float32)
    grads = tf.constant(rng.normal(size=(3, 5, 2)), tf.float32)
    ghost = conv.kernel_sqr_norms(patches, grads, "ghost")
    explicit = conv.kernel_sqr_norms(patches, grads, "explicit")
    np.testing.assert_allclose(ghost, explicit, rtol=RTOL)
    with pytest.raises(ValueError, match="method"):
        conv.kernel_sqr_norms(patches, grads, "other")


@pytest.mark.parametrize(
    "make_layer, shape",
    [
        (lambda: tf.keras.layers.Conv1D(4, 3, data_format="channels_first"), (2, 3, 8)),
        pytest.param(lambda: tf.keras.layers.Conv2D(4, 3), (2, 3, 5, 5, 4), marks=keras2_only),  # Keras 3: no build
    ],
    ids=["channels_first", "extra_batch_dimension"],
)
def test_unsupported_conv_raises_not_implemented(make_layer, shape):
    layer = make_layer()
    layer.build(shape)
    tape = tf.GradientTape(persistent=True, watch_accessed_variables=False)
    with pytest.raises(NotImplementedError):
        make_registry().lookup(layer)(layer, (tf.zeros(shape),), {}, tape, None)


@pytest.mark.parametrize(
    "make_layer",
    [lambda: tf.keras.layers.Conv1D(2, 3), lambda: tf.keras.layers.GroupNormalization(2), tf.keras.layers.PReLU],
    ids=["conv1d", "group_norm", "fallback"],
)
def test_microbatches_not_supported(make_layer):
    layer = make_layer()
    x = tf.zeros((4, 6, 2))
    layer(x)
    registry = make_registry()
    fn = registry.lookup(layer) if registry.is_elem(layer) else fallback_layer_computation
    with pytest.raises(NotImplementedError, match="microbatches"):
        fn(layer, (x,), {}, tf.GradientTape(persistent=True), 2)


def test_default_registry_contents():
    registry = make_registry()
    layers = tf.keras.layers
    for layer in (
        layers.Dense(1),
        layers.Embedding(2, 1),
        layers.LayerNormalization(),
        layers.Conv1D(1, 1),
        layers.Conv2D(1, 1),
        layers.GroupNormalization(1),
    ):
        assert registry.is_elem(layer), type(layer).__name__
    for layer in (MyDense(1), layers.Conv1DTranspose(1, 1), layers.SimpleRNN(1), layers.PReLU()):
        assert not registry.is_elem(layer), type(layer).__name__


@pytest.fixture
def clean_table(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTERED", dict(registry_module._REGISTERED))


def test_register_layer_adds_to_new_registries(clean_table):
    assert not make_registry().is_elem(Scale())

    @register_layer(Scale)
    def scale_computation(layer_instance, input_args, input_kwargs, tape, num_microbatches=None):
        return fallback_layer_computation(layer_instance, input_args, input_kwargs, tape, num_microbatches)

    assert make_registry().lookup(Scale()) is scale_computation
    with pytest.raises(TypeError, match="Layer subclass"):
        register_layer(int)


@keras2_only  # TF Privacy's clip_grads walks Keras 2 graphs only; the engine's tests cover Keras 3
def test_end_to_end_with_tensorflow_privacy_clip_grads(clean_table):
    register_layer(Scale)(fallback_layer_computation)
    tf.keras.utils.set_random_seed(5)
    inputs = tf.keras.Input((10, 3))
    hidden = tf.keras.layers.Conv1D(4, 3, padding="causal", activation="relu")(inputs)
    hidden = tf.keras.layers.GroupNormalization(2)(hidden)
    hidden = Scale()(hidden)
    hidden = tf.keras.layers.Conv1D(3, 2, strides=2, activation="tanh")(hidden)
    hidden = tf.keras.layers.LayerNormalization()(tf.keras.layers.Flatten()(hidden))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2)(hidden))
    registry = make_registry()

    def loss_fn(y_true, y_pred, sample_weight=None):
        return tf.reduce_sum(tf.square(y_true - y_pred), axis=1)

    @tf.function(input_signature=[tf.TensorSpec([None, 10, 3]), tf.TensorSpec([None, 2])])
    def gradient_norms(x, y):
        return clip_grads.compute_gradient_norms(model, registry, x, y, per_example_loss_fn=loss_fn)

    rng = np.random.default_rng(6)
    for batch in (0, 6):
        x = tf.constant(rng.normal(size=(batch, 10, 3)), tf.float32)
        y = tf.constant(rng.normal(size=(batch, 2)), tf.float32)
        expected = []
        for i in range(batch):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(loss_fn(y[i : i + 1], model(x[i : i + 1])))
            grads = tape.gradient(loss, model.trainable_variables)
            expected.append(np.sqrt(sum(float(tf.reduce_sum(tf.square(g))) for g in grads)))
        np.testing.assert_allclose(gradient_norms(x, y), np.array(expected, np.float32).reshape(batch), rtol=RTOL)
