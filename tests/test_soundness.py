"""Unit tests of the mechanisms that keep every accepted model's per-example influence within the clip.

Each mechanism is checked against a one-example-at-a-time computation written here: cross-node
accumulation for shared layers, masks, constant (non-batched) layer arguments, non-finite examples, the
batch-independence preflight, the clipping plan, dropout inside trainable layers, and the compile/fit
arguments refused before any budget is spent. The model zoo (``test_zoo.py``) checks the same classes end
to end through the public API.
"""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import op_tensorflow as ot
from op_tensorflow import clipping, preflight
from op_tensorflow.registry import make_registry
from op_tensorflow.registry.fallback import _batched_positions

warnings.filterwarnings("ignore", category=ot.PrivacyWarning)
L = tf.keras.layers
MSE = tf.keras.losses.MeanSquaredError(reduction="none")
T = 4


def one_at_a_time_norms(model, x, y, loss_fn=MSE, training=False):
    norms = []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            loss = clipping.per_example_losses(loss_fn, y[i : i + 1], model(x[i : i + 1], training=training))[0]
        grads = tape.gradient(loss, model.trainable_variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        norms.append(math.sqrt(sum(float(tf.reduce_sum(tf.square(tf.cast(g, tf.float64)))) for g in grads)))
    return np.array(norms)


def graph_fn(model, path, loss_fn=MSE, training=False, x_shape=None):
    """``clipped_gradient_sum`` in a tf.function with an unknown batch dimension, as the engine runs it."""
    spec = [tf.TensorSpec([None, *x_shape]), tf.TensorSpec([None])]
    return tf.function(
        lambda a, b: clipping.clipped_gradient_sum(model, a, b, loss_fn, 1e9, path=path, training=training),
        input_signature=spec,
    )


def shared_dense_model():
    tf.keras.utils.set_random_seed(0)
    inputs = L.Input((3,))
    dense = L.Dense(3, activation="tanh")
    h = inputs
    for _ in range(4):
        h = dense(h)
    return tf.keras.Model(inputs, L.Dense(1)(h))


def data(n=6, shape=(3,), seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.normal(0, 2, (n, *shape)), tf.float32), tf.constant(rng.normal(0, 2, n), tf.float32)


# ------------------------------------------------------------------------------ cross-node accumulation


def test_shared_layer_norms_are_exact_on_the_per_example_path_and_ghost_sums_would_be_wrong():
    model = shared_dense_model()
    x, y = data()
    reference = one_at_a_time_norms(model, x, y)
    _, exact, _ = graph_fn(model, clipping.PER_EXAMPLE, x_shape=(3,))(x, y)
    np.testing.assert_allclose(exact.numpy(), reference, rtol=1e-4)
    _, ghost, _ = graph_fn(model, clipping.GHOST, x_shape=(3,))(x, y)
    assert not np.allclose(ghost.numpy(), reference, rtol=1e-2)  # summing per-node squares drops cross terms
    plan = preflight.plan_clipping(model, x)
    assert plan.path == clipping.PER_EXAMPLE and "dense" in " ".join(plan.reasons)


def test_weights_read_outside_their_layer_are_detected():
    tf.keras.utils.set_random_seed(0)
    inputs = L.Input((3,))
    dense = L.Dense(3)
    h = dense(inputs)
    h = L.Lambda(lambda t: tf.matmul(t, dense.kernel, transpose_b=True))(h)
    model = tf.keras.Model(inputs, L.Dense(1)(h))
    plan = preflight.plan_clipping(model, data()[0])
    assert plan.path == clipping.PER_EXAMPLE and "outside the layer that owns them" in plan.reasons[0]


def test_unshared_models_keep_the_ghost_path():
    tf.keras.utils.set_random_seed(0)
    inner = tf.keras.Sequential([L.Input((3,)), L.Dense(4, activation="relu")])
    inputs = L.Input((3,))
    model = tf.keras.Model(inputs, L.Dense(1)(inner(inputs)))
    assert preflight.plan_clipping(model, data()[0]) == preflight.ClippingPlan()


# ------------------------------------------------------------------------------------------------ masks


def masked_model():
    tf.keras.utils.set_random_seed(0)
    return tf.keras.Sequential([L.Input((T,)), L.Embedding(6, 3, mask_zero=True), L.LSTM(3), L.Dense(1)])


def test_masked_models_train_what_model_x_computes():
    model = masked_model()
    x = tf.constant([[1, 2, 0, 0], [3, 0, 0, 0], [4, 5, 1, 0], [2, 2, 2, 2]], tf.float32)
    y = tf.constant([1.0, -1.0, 0.5, 2.0])
    plan = preflight.plan_clipping(model, x)
    assert plan.path == clipping.PER_EXAMPLE and "mask" in plan.reasons[0]
    _, norms, losses = graph_fn(model, plan.path, x_shape=(T,))(x, y)
    np.testing.assert_allclose(losses.numpy(), clipping.per_example_losses(MSE, y, model(x)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(norms.numpy(), one_at_a_time_norms(model, x, y), rtol=1e-4)
    # the mask matters: the same rows unmasked give other losses, so the check above can fail
    unmasked = tf.keras.Sequential([L.Input((T,)), L.Embedding(6, 3), L.LSTM(3), L.Dense(1)])
    unmasked.set_weights(model.get_weights())
    assert not np.allclose(clipping.per_example_losses(MSE, y, unmasked(x)).numpy(), losses.numpy(), rtol=1e-3)


# ------------------------------------------------------------------------------ constant layer arguments


@pytest.mark.parametrize("batch", [T, T + 2])
def test_constant_attention_mask_is_not_sliced_as_a_batch(batch):
    tf.keras.utils.set_random_seed(0)
    causal = tf.constant(np.tril(np.ones((T, T), bool)))
    inputs = L.Input((T, 2))
    h = L.MultiHeadAttention(2, 2)(inputs, inputs, attention_mask=causal)
    model = tf.keras.Model(inputs, L.Dense(1)(L.Flatten()(h)))
    x, y = data(batch, (T, 2))
    _, norms, _ = graph_fn(model, clipping.GHOST, x_shape=(T, 2))(x, y)
    np.testing.assert_allclose(norms.numpy(), one_at_a_time_norms(model, x, y), rtol=1e-4)


def test_batched_positions_rule():
    mask = tf.zeros((T, T))

    @tf.function(input_signature=[tf.TensorSpec([None, T, 2])])
    def traced(x):
        assert _batched_positions([x, mask, x]) == [0, 2]
        return x

    traced(tf.zeros((T, T, 2)))
    assert _batched_positions([tf.zeros((5, 2)), tf.zeros((3, 3)), 1.0]) == [0]  # eager: by the first batch


# ---------------------------------------------------------------------------------- non-finite examples


@pytest.mark.parametrize("path", clipping.PATHS)
def test_a_non_finite_example_contributes_zero_and_the_rest_is_unchanged(path):
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([L.Input((3,)), L.Dense(4), L.Dense(1)])
    x, y = data()
    x = tf.tensor_scatter_nd_update(x, [[0, 0]], [1e30])  # finite in float32; its squared error overflows
    fn = graph_fn(model, path, x_shape=(3,))
    grads, norms, losses = fn(x, y)
    assert not math.isfinite(float(losses[0]))
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    rest, _, _ = fn(x[1:], y[1:])
    for g, r in zip(grads, rest, strict=True):
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-5, atol=1e-6)


def test_dense_norms_do_not_overflow_for_a_large_finite_feature():
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([L.Input((3,)), L.Dense(1, activation="sigmoid")])
    bce = tf.keras.losses.BinaryCrossentropy(reduction="none")
    x = tf.constant([[1e20, 0.0, 0.0], [1.0, 2.0, 3.0]])
    y = tf.constant([0.0, 1.0])
    model.set_weights([np.array([[-1e-19], [0.1], [0.1]], np.float32), np.zeros(1, np.float32)])
    _, norms, _ = graph_fn(model, clipping.GHOST, loss_fn=bce, x_shape=(3,))(x, y)
    reference = one_at_a_time_norms(model, x, y, bce)
    # (1e20)^2 overflows float32, the squared norm (about 2e29) does not; tensorflow-privacy's function gave inf
    assert np.isfinite(reference).all() and reference[0] > 1e14
    np.testing.assert_allclose(norms.numpy(), reference, rtol=1e-4)


# ----------------------------------------------------------------------------- preflight: independence


def batch_mean_model():
    inputs = L.Input((3,))
    return tf.keras.Model(inputs, L.Dense(1)(L.Lambda(lambda t: t - tf.reduce_mean(t, axis=0))(inputs)))


class MixInTraining(L.Layer):
    """Subtracts the batch mean in training mode only."""

    def call(self, t, training=None):
        return t - tf.reduce_mean(t, axis=0) if training else t


def training_only_mixing_model():
    inputs = L.Input((3,))
    return tf.keras.Model(inputs, L.Dense(1)(MixInTraining()(inputs)))


@pytest.mark.parametrize(
    "build, loss, message",
    [
        (batch_mean_model, MSE, "mixes examples in inference mode"),
        (training_only_mixing_model, MSE, "mixes examples in training mode"),
        (
            lambda: tf.keras.Sequential([L.Input((3,)), L.Dense(1)]),
            lambda a, b: tf.reduce_mean((a - b) ** 2),
            "1 value",
        ),
        (
            lambda: tf.keras.Sequential([L.Input((3,)), L.Dense(1)]),
            lambda a, b: tf.square(a - b)[:, 0] - tf.reduce_mean(tf.square(a - b)),
            "the loss mixes examples",
        ),
    ],
)
def test_batch_independence_refuses_mixing(build, loss, message):
    x, y = data()
    x_alt = tf.tensor_scatter_nd_update(x, [[0]], [[9.0, -9.0, 3.0]])
    y_alt = tf.tensor_scatter_nd_update(y, [[0]], [7.0])
    with pytest.raises(ot.PrivacyError, match=message):
        preflight.check_batch_independence(build(), loss, x, y, x_alt, y_alt)
    independent = tf.keras.Sequential([L.Input((3,)), L.Dense(1)])
    preflight.check_batch_independence(independent, MSE, x, y, x_alt, y_alt)  # passes: the check can pass


# ------------------------------------------------------------------------------- randomness and dropout


def test_dropout_inside_a_trainable_layer_is_active_and_clipped_with_the_same_draw():
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([L.Input((T, 2)), L.LSTM(4, dropout=0.5), L.Dense(1)])
    x, y = data(1, (T, 2))
    plan = preflight.plan_clipping(model, x)
    assert plan.path == clipping.PER_EXAMPLE and "random" in plan.reasons[0]
    clip = 1e-3
    fn = tf.function(
        lambda a, b: clipping.clipped_gradient_sum(model, a, b, MSE, clip, path=plan.path)[0],
        input_signature=[tf.TensorSpec([None, T, 2]), tf.TensorSpec([None])],
    )
    sums = [np.concatenate([g.numpy().ravel() for g in fn(x, y)]) for _ in range(6)]
    assert not all(np.allclose(sums[0], s) for s in sums[1:])  # dropout draws differ: it is on in training
    for s in sums:  # each released contribution is one draw's gradient clipped with that draw's norm
        assert np.linalg.norm(s) <= clip * (1 + 1e-4)
        assert np.linalg.norm(s) > 0.99 * clip


# ------------------------------------------------------------------ refused before the ledger is touched


def private_loader(n=8, features=3, label_columns=("y",), metadata=None):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(n, features)), columns=[f"x{i}" for i in range(features)])
    for c in label_columns:
        df[c] = rng.normal(size=n)
    pdf = ot.PrivateDataFrame(df, budget=(100.0, 1e-5), metadata=metadata or {})
    labels = pdf[label_columns[0]] if len(label_columns) == 1 else pdf[list(label_columns)]
    return ot.PrivateDataLoader(pdf[[f"x{i}" for i in range(features)]], labels, 4, seed=0)


def two_output_model():
    inputs = L.Input((3,))
    return tf.keras.Model(inputs, [L.Dense(1, name="a")(inputs), L.Dense(1, name="b")(inputs)])


@pytest.mark.parametrize(
    "build, kwargs, match",
    [
        (two_output_model, {"loss": ["mse", "mse"]}, "outputs"),
        (lambda: tf.keras.Sequential([L.Input((3,)), L.Dense(1)]), {"loss": ["mse", "mae"]}, "2 entries"),
        (lambda: tf.keras.Sequential([L.Input((3,)), L.Dense(1)]), {"loss": {"a": "mse", "b": "mae"}}, "2 entries"),
        (
            lambda: tf.keras.Sequential([L.Input((3,)), L.Dense(1)]),
            {"loss": "mse", "loss_weights": [2.0]},
            "loss_weights",
        ),
        (
            lambda: tf.keras.Sequential([L.Input((3,)), L.Dense(1)]),
            {"loss": "mse", "weighted_metrics": ["mae"]},
            "weighted",
        ),
    ],
)
def test_compile_refuses_what_the_engine_would_ignore(build, kwargs, match):
    dp = ot.PrivateKerasModel(build(), 1.0, 1.1)
    with pytest.raises(ValueError, match=match):
        dp.compile(optimizer="sgd", **kwargs)


def test_a_one_element_loss_list_is_the_loss():
    dp = ot.PrivateKerasModel(tf.keras.Sequential([L.Input((3,)), L.Dense(1)]), 1.0, 1.1)
    dp.compile(optimizer="sgd", loss=["mse"])
    loader = private_loader()
    dp.fit(loader, epochs=1, verbose=0)
    assert loader.budget.spent() > 0


class FailsAtStart(tf.keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        raise RuntimeError("callback set-up failed")


@pytest.mark.parametrize(
    "fit_kwargs, error",
    [
        ({"validation_data": (np.zeros((4, 5)), np.zeros(4))}, ValueError),  # wrong feature count
        ({"callbacks": [FailsAtStart()]}, RuntimeError),
    ],
)
def test_fit_failures_surface_before_the_reservation(fit_kwargs, error):
    dp = ot.PrivateKerasModel(tf.keras.Sequential([L.Input((3,)), L.Dense(1)]), 1.0, 1.1)
    dp.compile(optimizer="sgd", loss="mse", metrics=[lambda a, b: tf.reduce_mean(tf.abs(a - b))])
    loader = private_loader()
    with pytest.raises(error):
        dp.fit(loader, epochs=1, verbose=0, **fit_kwargs)
    assert loader.budget.spent() == 0 and loader.budget.entries == []


def test_shape_errors_surface_in_the_preflight():
    dp = ot.PrivateKerasModel(tf.keras.Sequential([L.Input((3,)), L.Dense(3, activation="softmax")]), 1.0, 1.1)
    dp.compile(optimizer="sgd", loss="categorical_crossentropy")  # labels (batch,) against 3 outputs
    loader = private_loader()
    with pytest.raises(ValueError, match="cannot train on the loader's shapes"):
        dp.fit(loader, epochs=1, verbose=0)
    assert loader.budget.entries == []


def test_features_are_clamped_to_their_metadata_bounds():
    loader = private_loader(metadata={"x0": (-0.5, 0.5)})
    assert loader._x[:, 0].min() >= -0.5 and loader._x[:, 0].max() <= 0.5
    assert np.abs(loader._x[:, 1]).max() > 0.5  # unbounded columns are untouched


def test_the_plan_is_reported_and_cached():
    dp = ot.PrivateKerasModel(shared_dense_model(), 1.0, 1.1)
    dp.compile(optimizer="sgd", loss="mse")
    assert dp.clipping_plan is None
    loader = private_loader()
    dp.fit(loader, epochs=1, verbose=0)
    plan = dp.clipping_plan
    assert plan.path == clipping.PER_EXAMPLE and "per-example" in str(plan)
    dp.fit(loader, epochs=1, verbose=0)
    assert dp.clipping_plan is plan


def test_private_predictions_and_metrics_refuse_models_that_mix_rows():
    pdf_x = ot.PrivateDataFrame(pd.DataFrame(np.ones((6, 3)), columns=["x0", "x1", "x2"]), budget=(10.0, 1e-5))
    mixing = ot.PrivateKerasModel(tf.keras.Sequential([L.Input((3,)), L.Dense(2), L.Softmax(axis=0)]), 1.0, 1.1)
    with pytest.raises(ot.PrivacyError, match="mixes examples"):
        mixing.predict(pdf_x)
    fine = ot.PrivateKerasModel(tf.keras.Sequential([L.Input((3,)), L.Dense(2), L.Softmax()]), 1.0, 1.1)
    assert len(fine.predict(pdf_x)) == 6


def test_the_norm_self_check_routes_a_wrong_registry_function_to_the_exact_path_and_names_the_layer():
    from op_tensorflow.registry import _REGISTERED, dense, register_layer

    class HalvedDense(L.Dense):
        """A Dense subclass with a deliberately wrong fast-norm function (half the true squared norm)."""

    def halved(layer, args, kwargs, tape, num_microbatches=None):
        base_vars, outputs, sqr_norm_fn = dense.dense_computation(layer, args, kwargs, tape, num_microbatches)
        return base_vars, outputs, lambda g: 0.5 * sqr_norm_fn(g)

    register_layer(HalvedDense)(halved)
    try:
        tf.keras.utils.set_random_seed(0)
        model = tf.keras.Sequential([L.Input((3,)), HalvedDense(4, activation="tanh", name="halved"), L.Dense(1)])
        loss = tf.keras.losses.MeanSquaredError(reduction="none")
        plan = preflight.run_preflight(model, loss, private_loader(), make_registry())
    finally:
        _REGISTERED.pop(HalvedDense)
    assert plan.path == clipping.PER_EXAMPLE
    assert "['halved']" in plan.reasons[0] and "did not match" in plan.reasons[0]


def test_the_refusal_names_the_layer_that_mixes_examples():
    model = tf.keras.Sequential([L.Input((3,)), L.Dense(2), L.Softmax(axis=0, name="batch_softmax"), L.Dense(1)])
    x, y = data()
    x_alt = tf.tensor_scatter_nd_update(x, [[0]], [[9.0, -9.0, 3.0]])
    with pytest.raises(ot.PrivacyError, match="at layer 'batch_softmax'"):
        preflight.check_batch_independence(model, MSE, x, y, x_alt, y)


@pytest.mark.parametrize("path", clipping.PATHS)
def test_a_batch_of_only_non_finite_examples_gives_a_zero_sum(path):
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([L.Input((3,)), L.Dense(4), L.Dense(1)])
    x = tf.fill((3, 3), 1e30)  # every squared error overflows
    grads, _, losses = graph_fn(model, path, x_shape=(3,))(x, tf.zeros(3))
    assert not np.isfinite(losses.numpy()).any()
    assert all(np.array_equal(g.numpy(), np.zeros(g.shape)) for g in grads)
