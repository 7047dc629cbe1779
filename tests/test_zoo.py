"""A zoo of Keras architectures: every trained model's per-example influence is at most C, or it is refused.

Checked through the public API only. With sampling rate q = 1 (batch_size = n) and SGD(learning_rate=1), one
``fit`` step does ``w1 = w0 - (clipped_sum + noise) / n``, and the noise depends only on the model's ``seed``
and the weights' shapes. Two runs from the same initial weights on D (n rows) and D' (D without row 0) thus give
``(w0 - w1_D) * n - (w0 - w1_D') * (n - 1) = row 0's clipped gradient``, whose norm must be at most C
(the "remove-one" measure). Rows are chosen so that the clip binds for row 0 (its raw gradient norm is far above
C), so a model whose per-example norm is underestimated shows a ratio above 1.

Models with randomness inside trainable layers (dropout) draw differently in the two runs, so for them two 1-row
datasets {a} and {b} are trained with the same seeds (the noise cancels) and ``||release_a - release_b||`` must
be at most 2C (the "replace-one" measure).

Kinds of cases:

* ``control``: must train, and be bounded (for remove-one, with the clip binding: the ratio is close to 1).
* ``adversarial``: a class the engine handles exactly, so it must train, be bounded and (for remove-one) release
  row 0's clipped Keras gradient; with ``must_train=False`` it may instead be refused (``PrivacyError``/
  ``ValueError``/``TypeError`` from the constructor, ``compile`` or ``fit``) with ``spent()`` unchanged.
* ``mixing``: must be refused, with ``spent()`` unchanged (models and losses that mix examples in a batch, and
  invalid public input such as badly shaped validation data).

Set ``OP_TF_ZOO_TABLE=path`` to write the results as a markdown table (``zoo_table()``) when the module ends.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import op_tensorflow as ot

warnings.filterwarnings("ignore", category=ot.PrivacyWarning)

C = 0.05  # the clip bound; every raw per-example gradient below is far larger
SIGMA = 0.01  # the noise floor: the noise cancels between the two runs anyway
NOISE_SEED = 123
N = 8  # rows of the remove-one datasets
REL_TOL, ABS_TOL = 1e-3, 1e-4 * C
REFUSALS = (ot.PrivacyError, ValueError, TypeError)
L = tf.keras.layers

results: dict[str, str] = {}


# --------------------------------------------------------------------------------------------- data


def _frame(x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """Flattened features x0..x{k-1} and a label column y (or y0, y1, ... for several)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    columns = {f"x{i}": x[:, i] for i in range(x.shape[1])}
    if y.shape[1] == 1:
        columns["y"] = y[:, 0]
    else:
        columns.update({f"y{j}": y[:, j] for j in range(y.shape[1])})
    return pd.DataFrame(columns)


def _arrange(x: np.ndarray, y: np.ndarray, *, front=0, tie=1, mirror=False, boost=True):
    """Puts row ``front`` first and makes row 0 adversarial.

    Row 0 gets larger features and label (``boost``: its raw gradient is far above C); with ``tie`` its
    features are ``tie`` equal chunks along the first feature axis (so a layer shared across the chunks gets
    aligned gradients from each call); with ``mirror`` row 1 has row 0's features and the opposite label (for
    replace-one: the two rows' clipped gradients point in opposite directions, their difference is ~2C).
    """
    order = [front, *[i for i in range(len(x)) if i != front]]
    x, y = x[order].copy(), y[order].copy()
    if boost:
        x[0] *= 1.5
        y[0] = 8.0
    if tie > 1:
        x[0] = np.tile(x[0].reshape(tie, -1)[0], tie).reshape(x[0].shape)
    if mirror:
        x[1], y[1] = x[0], -y[0]
    return x, y


def floats(shape, *, n=N, seed=0, outputs=1, binary=False, **arrange):
    """Gaussian features of scale 2 and labels of scale 4 (0/1 if ``binary``), arranged by ``_arrange``."""

    def make() -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        x = rng.normal(0.0, 2.0, (n, *shape))
        if binary:
            y = rng.integers(0, 2, (n, outputs)).astype(float)
            x, y = _arrange(x, y, boost=False, **arrange)
            x[0] *= 1.5
        else:
            x, y = _arrange(x, rng.normal(0.0, 4.0, (n, outputs)), **arrange)
        return _frame(x, y)

    return make


def tokens(length, vocab, *, n=N, seed=0, zeros=False, classes=None, front=0, tie=1):
    """Integer-valued float token ids in [0, vocab); with ``zeros`` rows end in 1 .. length-1 padding zeros."""

    def make() -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        x = rng.integers(1, vocab, (n, length)).astype(float)
        if zeros:
            for i in range(n):
                x[i, 1 + i % (length - 1) :] = 0.0
        y = rng.integers(0, classes, n).astype(float) if classes else rng.normal(0.0, 4.0, n)
        return _frame(*_arrange(x, y, front=front, tie=tie, boost=False))  # labels of scale 4: the clip binds

    return make


def masked_steps(steps, features, *, n=N, seed=0, front=0):
    """Sequences ending in 1 .. steps-1 all-zero timesteps (for ``Masking(mask_value=0.)``)."""

    def make() -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        x = rng.normal(0.0, 2.0, (n, steps, features))
        for i in range(n):
            x[i, 1 + i % (steps - 1) :] = 0.0
        return _frame(*_arrange(x, rng.normal(0.0, 4.0, n), front=front))

    return make


def huge_feature(d, *, binary, value=1e30, columns=1):
    """Row 0 holds ``value`` (finite in float32) in its first ``columns`` features."""

    def make() -> pd.DataFrame:
        frame = floats((d,), binary=binary)()
        frame.loc[0, [f"x{i}" for i in range(columns)]] = value
        return frame

    return make


# --------------------------------------------------------------------------------------------- models


def seq(shape, *layers) -> tf.keras.Model:
    return tf.keras.Sequential([tf.keras.Input(shape), *layers])


def mlp():
    return seq((4,), L.Dense(8, activation="tanh"), L.Dense(4, activation="relu"), L.Dense(1))


def conv1d(**kwargs):
    def build():
        return seq((10, 3), L.Conv1D(4, 3, **kwargs), L.Flatten(), L.Dense(1))

    return build


def conv2d_strides():
    return seq((6, 6, 2), L.Conv2D(3, 3, strides=2), L.Flatten(), L.Dense(1))


def recurrent(layer_fn):
    def build():
        return seq((5, 3), layer_fn(), L.Dense(1))

    return build


def mha_residual():
    x = tf.keras.Input((5, 4))
    a = L.MultiHeadAttention(num_heads=2, key_dim=2)(x, x)
    h = L.LayerNormalization()(L.Add()([x, a]))
    return tf.keras.Model(x, L.Dense(1)(L.GlobalAveragePooling1D()(h)))


def conv1d_group_norm():
    return seq((10, 3), L.Conv1D(4, 3), L.GroupNormalization(groups=2), L.GlobalAveragePooling1D(), L.Dense(1))


def embedding_pooling():
    return seq((6,), L.Embedding(10, 3), L.GlobalAveragePooling1D(), L.Dense(1))


def time_distributed():
    return seq((5, 3), L.TimeDistributed(L.Dense(2, activation="tanh")), L.Flatten(), L.Dense(1))


def nested_sequential():
    inner = tf.keras.Sequential([tf.keras.Input((4,)), L.Dense(4, activation="tanh"), L.Dense(3)])
    x = tf.keras.Input((4,))
    return tf.keras.Model(x, L.Dense(1)(inner(L.Dense(4, activation="tanh")(x))))


def dropout_between_dense():
    return seq((4,), L.Dense(8, activation="tanh"), L.Dropout(0.5), L.Dense(1))


def blog_convnet():
    return seq((12, 6), L.Conv1D(8, 3), L.LayerNormalization(), L.Flatten(), L.Dense(1))


# -- shared layers (the heads are frozen where the shared layer's own norm is what is tested)


def frozen_head():
    return L.Dense(1, trainable=False)


def halves(x, layer, width):
    """``layer`` applied to the two halves of ``x`` along axis 1, the results added."""
    return L.Add()([layer(x[:, :width]), layer(x[:, width:])])


def shared_dense_slices():
    x = tf.keras.Input((8,))
    dense = L.Dense(2, activation="tanh")
    return tf.keras.Model(x, frozen_head()(L.Add()([dense(x[:, 2 * i : 2 * i + 2]) for i in range(4)])))


def shared_dense_chained():
    x = tf.keras.Input((4,))
    dense = L.Dense(4, activation="tanh")
    h = x
    for _ in range(4):
        h = dense(h)
    return tf.keras.Model(x, L.Dense(1)(h))


def shared_conv1d():
    x = tf.keras.Input((8, 2))
    conv = L.Conv1D(2, 3, padding="same", activation="tanh")
    return tf.keras.Model(x, frozen_head()(L.Flatten()(halves(x, conv, 4))))


def shared_layer_norm():
    x = tf.keras.Input((8,))
    return tf.keras.Model(x, frozen_head()(halves(x, L.LayerNormalization(), 4)))


def shared_lstm():
    x = tf.keras.Input((10, 3))
    return tf.keras.Model(x, frozen_head()(halves(x, L.LSTM(3, unroll=True), 5)))


def shared_embedding_slices():
    x = tf.keras.Input((6,))
    return tf.keras.Model(x, frozen_head()(L.Flatten()(halves(x, L.Embedding(10, 3), 3))))


def shared_embedding_same_input():
    x = tf.keras.Input((6,))
    emb = L.Embedding(10, 3)
    h = L.Multiply()([emb(x), emb(x)])
    return tf.keras.Model(x, L.Dense(1)(L.GlobalAveragePooling1D()(h)))


def shared_nested_sequential():
    inner = tf.keras.Sequential([tf.keras.Input((4,)), L.Dense(3, activation="tanh")])
    x = tf.keras.Input((8,))
    return tf.keras.Model(x, frozen_head()(halves(x, inner, 4)))


# -- weight tying


def tied_lambda_kernel():
    x = tf.keras.Input((4,))
    dense = L.Dense(6, activation="tanh")
    h = dense(x)  # builds dense: its kernel (4, 6) exists below
    back = L.Lambda(lambda t: tf.matmul(t, dense.kernel, transpose_b=True))(h)  # (batch, 4)
    return tf.keras.Model(x, L.Dense(1)(back))


def tied_embedding_output():
    x = tf.keras.Input((5,))
    emb = L.Embedding(10, 4, embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=2.0))  # the clip binds
    h = L.GlobalAveragePooling1D()(emb(x))
    logits = L.Lambda(lambda t: tf.matmul(t, emb.embeddings, transpose_b=True))(h)  # (batch, 10)
    return tf.keras.Model(x, logits)


class TiedDense(L.Layer):
    """Applies another (tracked) Dense layer's kernel and bias: a second, hidden call of that layer."""

    def __init__(self, source, **kwargs):
        super().__init__(**kwargs)
        self.source = source

    def call(self, inputs):
        return tf.tanh(tf.matmul(inputs, self.source.kernel) + self.source.bias)


class HiddenTiedTranspose(L.Layer):
    """Multiplies by the transpose of another layer's kernel, reached through a closure Keras does not track."""

    def __init__(self, source, **kwargs):
        super().__init__(**kwargs)
        self._kernel = lambda: source.kernel

    def call(self, inputs):
        return tf.matmul(inputs, self._kernel(), transpose_b=True)


def tied_custom_layer():
    x = tf.keras.Input((8,))
    dense = L.Dense(3, activation="tanh")
    h = L.Add()([dense(x[:, :4]), TiedDense(dense)(x[:, 4:])])
    return tf.keras.Model(x, frozen_head()(h))


def tied_custom_layer_untracked():
    x = tf.keras.Input((4,))
    dense = L.Dense(6, activation="tanh")
    return tf.keras.Model(x, L.Dense(1)(HiddenTiedTranspose(dense)(dense(x))))


_KERNEL_IN_LOSS = {}


def kernel_in_loss_model():
    """An MLP whose first kernel the loss below also reads: a use of a weight that no layer hook sees."""
    model = seq((4,), L.Dense(6, activation="tanh"), L.Dense(1))
    _KERNEL_IN_LOSS["kernel"] = model.layers[0].kernel
    return model


def loss_reading_a_kernel(y, p):
    return tf.reduce_mean(tf.square(y - p), axis=-1) * (1.0 + tf.reduce_sum(tf.square(_KERNEL_IN_LOSS["kernel"])))


# -- example mixing


class BatchCenter(L.Layer):
    """Scales, then subtracts the batch mean: every row's output depends on the other rows."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        h = inputs * self.scale
        return h - tf.reduce_mean(h, axis=0)


def mixing_model(layer_fn):
    def build():
        return seq((4,), L.Dense(4, activation="tanh"), layer_fn(), L.Dense(1))

    return build


def mixing_loss_aggregate(y, p):
    return tf.square(y - p)[:, 0] - tf.reduce_mean(tf.square(y - p))


def mixing_loss_batch_mean_added(y, p):
    return tf.square(y - p)[:, 0] + tf.reduce_mean(tf.square(y - p))


def mixing_loss_scalar(y, p):
    return tf.reduce_mean(tf.square(y - p))


# -- masks

# Which row is removed (moved to row 0): one whose gradient norm an engine that drops the mask when it re-runs a
# layer per example underestimates (for the Embedding + LSTM data no row is underestimated: any row will do).
FRONT = {"masking_lstm": 3, "embedding_lstm": 0, "mha": 1}


def masking_lstm():
    return seq((5, 3), L.Masking(mask_value=0.0), L.LSTM(4), L.Dense(1))


def masked_embedding_lstm():
    return seq((6,), L.Embedding(10, 3, mask_zero=True), L.LSTM(3, unroll=True), L.Dense(1))


def masked_embedding_mha():
    x = tf.keras.Input((6,))
    e = L.Embedding(10, 4, mask_zero=True)(x)
    a = L.MultiHeadAttention(num_heads=2, key_dim=2)(e, e)
    return tf.keras.Model(x, L.Dense(1)(L.GlobalAveragePooling1D()(a)))


# -- constant tensor arguments

T = 6


def constant_causal_mask():
    x = tf.keras.Input((T, 3))
    q = L.Dense(4)(x)
    causal = tf.constant(np.tril(np.ones((T, T), dtype=bool)))
    a = L.MultiHeadAttention(num_heads=2, key_dim=2)(q, q, attention_mask=causal)
    return tf.keras.Model(x, L.Dense(1)(L.Flatten()(a)))


# -- randomness inside trainable layers


def mha_dropout():
    x = tf.keras.Input((5, 4))
    a = L.MultiHeadAttention(num_heads=2, key_dim=2, dropout=0.5)(x, x)
    return tf.keras.Model(x, L.Dense(1)(L.GlobalAveragePooling1D()(a)))


# -- losses, metrics, validation


def sigmoid_mlp():
    return seq((4,), L.Dense(4, activation="tanh"), L.Dense(1, activation="sigmoid"))


def linear_mlp():
    return seq((4,), L.Dense(4), L.Dense(1))


def overflowing_mlp():
    """Row 0's features of 3e38 overflow the first layer's sums to inf (kernel of ones), its loss is NaN."""
    return seq((4,), L.Dense(4, kernel_initializer="ones"), L.Dense(1))


def two_outputs():
    x = tf.keras.Input((4,))
    h = L.Dense(4, activation="tanh")(x)
    return tf.keras.Model(x, [L.Dense(1, name="a")(h), L.Dense(1, name="b")(h)])


def validation(x_shape):
    """Public validation data for a (4,)-input model; ``x_shape`` may be wrong on purpose."""

    def make() -> dict:
        rng = np.random.default_rng(7)
        x = rng.normal(0.0, 1.0, (5, *x_shape)).astype(np.float32)
        return {"validation_data": (x, rng.normal(0.0, 1.0, (5, 1)).astype(np.float32))}

    return make


def mae_metric(y, p):
    return tf.reduce_mean(tf.abs(y - p))


# --------------------------------------------------------------------------------------------- the zoo


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], tf.keras.Model]
    loss: Any
    feature_shape: tuple[int, ...]
    data: Callable[[], pd.DataFrame]
    kind: str = "control"  # "control", "adversarial" or "mixing" (must be refused)
    measure: str = "remove"  # "remove" (remove-one <= C) or "replace" (replace-one <= 2C, rows 0 and 1)
    must_train: bool = False  # an adversarial case that must not be refused
    compile_kwargs: Callable[[], dict] = dict
    fit_kwargs: Callable[[], dict] = dict


def case(id, build, feature_shape, data, loss="mse", **kwargs) -> Case:
    return Case(id=id, build=build, loss=loss, feature_shape=tuple(feature_shape), data=data, **kwargs)


def adversarial(*args, must_train=True, **kwargs) -> Case:
    """A class the engine handles exactly: it must train (pass ``must_train=False`` where refusal is fine)."""
    return case(*args, kind="adversarial", must_train=must_train, **kwargs)


def mixing(*args, **kwargs) -> Case:
    return case(*args, kind="mixing", **kwargs)


CASES = [
    # controls: must train, bounded, the clip binding
    case("mlp", mlp, (4,), floats((4,))),
    case("conv1d_strides", conv1d(strides=2), (10, 3), floats((10, 3))),
    case("conv1d_dilation", conv1d(dilation_rate=2), (10, 3), floats((10, 3))),
    case("conv1d_causal", conv1d(padding="causal"), (10, 3), floats((10, 3))),
    case("conv2d_strides", conv2d_strides, (6, 6, 2), floats((6, 6, 2))),
    case("lstm", recurrent(lambda: L.LSTM(4)), (5, 3), floats((5, 3))),
    case("gru", recurrent(lambda: L.GRU(4)), (5, 3), floats((5, 3))),
    case("bidirectional_lstm", recurrent(lambda: L.Bidirectional(L.LSTM(3, unroll=True))), (5, 3), floats((5, 3))),
    case("simple_rnn", recurrent(lambda: L.SimpleRNN(4, unroll=True)), (5, 3), floats((5, 3))),
    case("mha_self_attention_layernorm_residual", mha_residual, (5, 4), floats((5, 4))),
    case("conv1d_group_norm", conv1d_group_norm, (10, 3), floats((10, 3))),
    case("embedding_pooling_dense", embedding_pooling, (6,), tokens(6, 10)),
    case("time_distributed_dense", time_distributed, (5, 3), floats((5, 3))),
    case("nested_sequential", nested_sequential, (4,), floats((4,))),
    case("dropout_between_dense", dropout_between_dense, (4,), floats((4,), mirror=True), measure="replace"),
    case("blog_convnet", blog_convnet, (12, 6), floats((12, 6))),
    # shared layers (row 0's chunks are equal, so the shared layer's per-call gradients are aligned)
    adversarial("shared_dense_4_slices", shared_dense_slices, (8,), floats((8,), tie=4)),
    adversarial("shared_dense_chained_4", shared_dense_chained, (4,), floats((4,))),
    adversarial("shared_conv1d_twice", shared_conv1d, (8, 2), floats((8, 2), tie=2)),
    adversarial("shared_layer_norm", shared_layer_norm, (8,), floats((8,), tie=2)),
    adversarial("shared_lstm_two_inputs", shared_lstm, (10, 3), floats((10, 3), tie=2)),
    adversarial("shared_embedding_two_slices", shared_embedding_slices, (6,), tokens(6, 10, tie=2)),
    adversarial("shared_embedding_same_input_twice", shared_embedding_same_input, (6,), tokens(6, 10)),
    adversarial("shared_nested_sequential", shared_nested_sequential, (8,), floats((8,), tie=2)),
    # weight tying
    adversarial("tied_lambda_kernel", tied_lambda_kernel, (4,), floats((4,))),
    adversarial(
        "tied_lambda_embedding_output",
        tied_embedding_output,
        (5,),
        tokens(5, 10, classes=10),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ),
    adversarial("tied_custom_layer", tied_custom_layer, (8,), floats((8,), tie=2)),
    adversarial("tied_custom_layer_untracked", tied_custom_layer_untracked, (4,), floats((4,))),
    adversarial("tied_kernel_read_by_the_loss", kernel_in_loss_model, (4,), floats((4,)), loss=loss_reading_a_kernel),
    # example mixing: must be refused
    mixing("mixing_custom_layer_batch_mean", mixing_model(BatchCenter), (4,), floats((4,))),
    mixing(
        "mixing_lambda_batch_mean",
        mixing_model(lambda: L.Lambda(lambda t: t - tf.reduce_mean(t, axis=0))),
        (4,),
        floats((4,)),
    ),
    mixing("mixing_unit_normalization_axis0", mixing_model(lambda: L.UnitNormalization(axis=0)), (4,), floats((4,))),
    mixing("mixing_softmax_axis0", mixing_model(lambda: L.Softmax(axis=0)), (4,), floats((4,))),
    mixing("mixing_loss_batch_aggregate_per_row", mlp, (4,), floats((4,)), loss=mixing_loss_aggregate),
    mixing("mixing_loss_batch_mean_added_per_row", mlp, (4,), floats((4,)), loss=mixing_loss_batch_mean_added),
    mixing("mixing_loss_scalar_for_batch", mlp, (4,), floats((4,)), loss=mixing_loss_scalar),
    # masks
    adversarial("mask_masking_lstm", masking_lstm, (5, 3), masked_steps(5, 3, front=FRONT["masking_lstm"])),
    adversarial(
        "mask_embedding_mask_zero_lstm",
        masked_embedding_lstm,
        (6,),
        tokens(6, 10, zeros=True, front=FRONT["embedding_lstm"]),
    ),
    adversarial(
        "mask_embedding_mask_zero_mha", masked_embedding_mha, (6,), tokens(6, 10, zeros=True, front=FRONT["mha"])
    ),
    # a constant (non-batched) tensor argument
    adversarial("constant_causal_mask_n_eq_T", constant_causal_mask, (T, 3), floats((T, 3), n=T)),
    adversarial("constant_causal_mask_n_ne_T", constant_causal_mask, (T, 3), floats((T, 3), n=T + 3)),
    # randomness inside trainable layers
    adversarial(
        "lstm_dropout",
        recurrent(lambda: L.LSTM(4, dropout=0.5)),
        (5, 3),
        floats((5, 3), mirror=True),
        measure="replace",
    ),
    adversarial("mha_dropout", mha_dropout, (5, 4), floats((5, 4), mirror=True), measure="replace"),
    # non-finite examples: must train
    adversarial(
        "nonfinite_huge_feature_bce",
        sigmoid_mlp,
        (4,),
        huge_feature(4, binary=True),
        loss=tf.keras.losses.BinaryCrossentropy(),
    ),
    adversarial("nonfinite_loss_mse_overflow", linear_mlp, (4,), huge_feature(4, binary=False)),
    adversarial(
        "nonfinite_forward_overflow_mse",
        overflowing_mlp,
        (4,),
        huge_feature(4, binary=False, value=3e38, columns=4),
    ),
    # several outputs, loss weights, weighted metrics: bounded or refused
    adversarial(
        "multi_output_loss_list", two_outputs, (4,), floats((4,), outputs=2), loss=["mse", "mse"], must_train=False
    ),
    adversarial(
        "multi_output_loss_dict",
        two_outputs,
        (4,),
        floats((4,), outputs=2),
        loss={"a": "mse", "b": "mse"},
        must_train=False,
    ),
    adversarial(
        "compile_loss_weights",
        linear_mlp,
        (4,),
        floats((4,)),
        compile_kwargs=lambda: {"loss_weights": [3.0]},
        must_train=False,
    ),
    adversarial(
        "compile_weighted_metrics",
        linear_mlp,
        (4,),
        floats((4,)),
        compile_kwargs=lambda: {"weighted_metrics": ["mae"]},
        must_train=False,
    ),
    # metrics and validation data
    adversarial(
        "metric_python_function_with_validation",
        linear_mlp,
        (4,),
        floats((4,)),
        compile_kwargs=lambda: {"metrics": [mae_metric]},
        fit_kwargs=validation((4,)),
    ),
    mixing("bad_validation_data_shape", linear_mlp, (4,), floats((4,)), fit_kwargs=validation((3,))),
]
assert len({c.id for c in CASES}) == len(CASES) >= 32


# --------------------------------------------------------------------------------------------- harness


@dataclasses.dataclass
class Refused:
    error: BaseException
    spent_before: float
    spent_after: float

    @property
    def message(self) -> str:
        return str(self.error)


def _flat(variables) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in variables])


def _train_once(c: Case, model: tf.keras.Model, w0: list, frame: pd.DataFrame):
    """One fit from ``w0`` on ``frame`` (q = 1, one step): the trainable weights after it, or a ``Refused``."""
    model.set_weights(w0)
    frame = frame.reset_index(drop=True)
    pdf = ot.PrivateDataFrame(frame, budget=None)
    features = [col for col in frame.columns if col.startswith("x")]
    labels = [col for col in frame.columns if col.startswith("y")]
    loader = ot.PrivateDataLoader(
        pdf[features],
        pdf[labels[0]] if len(labels) == 1 else pdf[labels],
        batch_size=len(frame),
        seed=0,
        feature_shape=c.feature_shape,
    )
    assert loader.sampling_rate == 1.0
    before = loader.budget.spent()
    try:
        dp = ot.PrivateKerasModel(model=model, l2_norm_clip=C, noise_multiplier=SIGMA, seed=NOISE_SEED)
        dp.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=1.0), loss=c.loss, **c.compile_kwargs())
        dp.fit(x=loader, epochs=1, verbose=0, **c.fit_kwargs())
    except REFUSALS as err:
        return Refused(err, before, loader.budget.spent())
    return _flat(v.numpy() for v in dp.model.trainable_weights)


@dataclasses.dataclass
class Measured:
    sensitivity: float  # remove-one: ||row 0's released contribution||; replace-one: ||release_a - release_b||
    release: np.ndarray  # the first run's (w0 - w1) * n
    deviation: float | None  # remove-one: ||row 0's contribution - its clipped Keras gradient|| / C
    raw_norm: float | None  # ||row 0's Keras gradient|| / C: > 1 means the clip binds


def keras_clipped_gradient(c: Case, model: tf.keras.Model, frame: pd.DataFrame) -> tuple[np.ndarray, float] | None:
    """Row 0's gradient by plain Keras (at the current weights), clipped to C, and its raw norm / C."""
    if isinstance(c.loss, (list, tuple, dict)) or c.kind == "mixing":
        return None
    x = frame[[col for col in frame.columns if col.startswith("x")]].to_numpy(np.float32)[:1]
    y = frame[[col for col in frame.columns if col.startswith("y")]].to_numpy(np.float32)[:1]
    try:
        with tf.GradientTape() as tape:
            pred = model(x.reshape((1, *c.feature_shape)), training=True)
            loss = tf.reduce_mean(tf.keras.losses.get(c.loss)(y, pred))
        grads = tape.gradient(loss, model.trainable_weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    except Exception:  # informational only: some models have no plain per-example gradient to compare with
        return None
    g = _flat(tf.convert_to_tensor(v).numpy() for v in grads)
    with np.errstate(all="ignore"):  # a non-finite row's gradient stays non-finite
        norm = float(np.linalg.norm(g))
        return g * min(1.0, C / norm) if norm > 0 else g, norm / C


def measure(c: Case) -> Measured | Refused:
    """Trains ``c`` twice from the same initial weights (see the module docstring), or reports the refusal."""
    tf.keras.utils.set_random_seed(0)
    model = c.build()
    w0 = model.get_weights()
    start = _flat(v.numpy() for v in model.trainable_weights)
    frame = c.data()
    reference = keras_clipped_gradient(c, model, frame) if c.measure == "remove" else None
    if c.measure == "remove":
        runs = [(frame, len(frame)), (frame.iloc[1:], len(frame) - 1)]
    else:
        runs = [(frame.iloc[:1], 1), (frame.iloc[1:2], 1)]
    releases = []
    for rows, n in runs:
        after = _train_once(c, model, w0, rows)
        if isinstance(after, Refused):
            return after
        releases.append((start - after) * n)
    contribution = releases[0] - releases[1]
    deviation = None if reference is None else float(np.linalg.norm(contribution - reference[0]) / C)
    return Measured(
        float(np.linalg.norm(contribution)), releases[0], deviation, None if reference is None else reference[1]
    )


@pytest.fixture(scope="module", autouse=True)
def _write_zoo_table(request):
    def write():
        path = os.environ.get("OP_TF_ZOO_TABLE")
        if path:
            with open(path, "w", encoding="utf-8") as f:
                f.write(zoo_table())

    request.addfinalizer(write)


def zoo_table() -> str:
    """The results so far as a markdown table, one row per case."""
    lines = ["| case | kind | measure | result |", "| --- | --- | --- | --- |"]
    for c in CASES:
        kind = f"{c.kind} (must train)" if c.must_train else c.kind
        bound = "remove-one <= C" if c.measure == "remove" else "replace-one <= 2C"
        result = results.get(c.id, "not run").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {c.id} | {kind} | {bound} | {result} |")
    return "\n".join(lines) + "\n"


def _last_line(err: BaseException) -> str:
    """The error's type and the last line of its message (TensorFlow puts the cause last)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return (last if last.startswith(f"{type(err).__name__}:") else f"{type(err).__name__}: {last}")[:120]


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_zoo_case_is_bounded_or_refused(c: Case):
    try:
        outcome = measure(c)
    except Exception as err:  # a crash is neither bounded nor refused
        results[c.id] = f"crashed: {_last_line(err)}"
        raise
    if isinstance(outcome, Refused):
        if outcome.spent_after != outcome.spent_before:  # an error inside training, not a refusal
            results[c.id] = f"crashed after charging the ledger: {_last_line(outcome.error)}"
        else:
            results[c.id] = f"refused: {outcome.message[:100]}"
        assert c.kind != "control" and not c.must_train, f"{c.id} must train but was refused: {outcome.error!r}"
        assert outcome.message.strip(), f"{c.id} was refused with an empty message ({type(outcome.error).__name__})"
        assert outcome.spent_after == outcome.spent_before, f"{c.id} was refused but the ledger was charged"
        return

    sens, release = outcome.sensitivity, outcome.release
    limit = (1 if c.measure == "remove" else 2) * C
    ratio = sens / C
    within = bool(np.isfinite(release).all()) and sens <= limit * (1 + REL_TOL) + ABS_TOL
    results[c.id] = f"{'bounded' if within else 'UNBOUNDED'}, sens/C = {ratio:.3f}"
    if outcome.deviation is not None:  # informational: how far row 0's contribution is from clipped Keras
        results[c.id] += f" (vs clipped Keras gradient: {outcome.deviation:.2g} C; raw norm {outcome.raw_norm:.3g} C)"
    assert c.kind != "mixing", f"{c.id} mixes examples and must be refused, but trained (sens/C = {ratio:.3g})"
    assert np.isfinite(release).all(), f"{c.id}: the trained weights are not finite"
    assert sens <= limit * (1 + REL_TOL) + ABS_TOL, f"{c.id}: sensitivity {sens:.4g} > {limit:g} (sens/C = {ratio:.3g})"
    assert np.linalg.norm(release) > 0, f"{c.id}: the weights did not change"
    if c.measure == "replace":  # trains: the two rows' clipped gradients differ, beyond the (cancelled) noise
        assert sens > 0.05 * C, f"{c.id}: the released gradient does not depend on the data (sens/C = {ratio:.3g})"
        return
    if c.kind == "control":  # the harness can fail: the clip binds, and row 0's contribution is the clipped gradient
        assert outcome.raw_norm is not None and outcome.raw_norm > 2, f"{c.id}: the clip does not bind for row 0"
        assert sens > 0.99 * C, f"{c.id}: row 0's contribution is below C although the clip binds (sens/C = {ratio})"
    if outcome.raw_norm is not None and np.isfinite(outcome.raw_norm):
        # exactness, not just the bound: the engine trains what model(x) computes (masks, shared weights, ...)
        assert outcome.deviation < 1e-2, f"{c.id}: row 0's contribution is not its clipped gradient"
