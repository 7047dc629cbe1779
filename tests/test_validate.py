"""validate_model refuses batch-mixing layers; fix_model swaps BatchNormalization for per-example norms."""

import warnings

import numpy as np
import pytest
import tensorflow as tf
from conftest import KERAS3

from op_tensorflow.validate import INCOMPATIBLE, fix_model, incompatible_layers, validate_model

L = tf.keras.layers

# Keras 2.15 seeds its initializers with random.randint(1, 1e9).
pytestmark = pytest.mark.filterwarnings("ignore:non-integer arguments to randrange:DeprecationWarning")


def blog_convnet(*, with_input: bool = True) -> tf.keras.Sequential:
    """The 1-D convnet of the RStudio blog 'Differential Privacy with TensorFlow', inputs (12, 6)."""
    layers = [
        L.Conv1D(32, 3, activation="relu"),
        L.BatchNormalization(),
        L.Conv1D(64, 5, activation="relu"),
        L.BatchNormalization(),
        L.Conv1D(128, 5, activation="relu"),
        L.BatchNormalization(),
        L.GlobalAveragePooling1D(),
        L.Dense(128, activation="relu"),
        L.Dense(1),
    ]
    return tf.keras.Sequential(([tf.keras.Input((12, 6))] if with_input else []) + layers)


def kinds(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def assert_same_weights(a, b) -> None:
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb) > 0
    for x, y in zip(wa, wb, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def blog():
    tf.keras.utils.set_random_seed(0)
    return blog_convnet()


def test_blog_convnet_is_refused_with_why_and_fix(blog):
    with pytest.raises(ValueError) as info:
        validate_model(blog)
    msg = str(info.value)
    bns = [layer for layer in blog.layers if isinstance(layer, L.BatchNormalization)]
    assert len(bns) == 3
    for bn in bns:
        assert f"'{bn.name}' (BatchNormalization)" in msg
    for conv in blog.layers[::2][:3]:
        assert f"'{conv.name}'" not in msg
    assert "batch statistics" in msg and "per-example" in msg
    assert "fix_model" in msg and "GroupNormalization" in msg and "fix=True" in msg
    assert [layer for layer, _ in incompatible_layers(blog)] == bns


def test_fix_model_on_blog_convnet(blog):
    before = [w.copy() for w in blog.get_weights()]
    fixed = fix_model(blog)
    assert fixed is not blog
    validate_model(fixed)
    assert incompatible_layers(fixed) == []
    assert not any(isinstance(layer, L.BatchNormalization) for layer in fixed.layers)
    expected = ["GroupNormalization" if k == "BatchNormalization" else k for k in kinds(blog)]
    assert kinds(fixed) == expected
    assert [layer.name for layer in fixed.layers] == [layer.name for layer in blog.layers]
    for old, new in zip(blog.layers, fixed.layers, strict=True):
        if isinstance(old, L.BatchNormalization):
            old_axis = old.axis if isinstance(old.axis, int) else old.axis[0]  # Keras 2: [2], Keras 3: -1
            assert new.groups == 32 and new.axis == old_axis and old_axis % 3 == 2 and new.epsilon == old.epsilon
            np.testing.assert_array_equal(new.gamma.numpy(), np.ones(new.gamma.shape))
            np.testing.assert_array_equal(new.beta.numpy(), np.zeros(new.beta.shape))
        else:
            assert new is not old and new.get_config() == old.get_config()
            if old.weights:
                assert_same_weights(old, new)
                assert all(a is not b for a, b in zip(old.weights, new.weights, strict=True))
    x = np.random.default_rng(0).normal(size=(4, 12, 6)).astype("float32")
    assert fixed.output_shape == blog.output_shape == (None, 1)
    assert fixed(x).shape == blog(x).shape == (4, 1)
    # The original is untouched: same classes, same weights.
    assert kinds(blog).count("BatchNormalization") == 3
    for a, b in zip(before, blog.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_fixed_model_trains_and_is_per_example(blog):
    """With GroupNormalization, one example's output no longer depends on the rest of the batch."""
    fixed = fix_model(blog)
    x = np.random.default_rng(1).normal(size=(8, 12, 6)).astype("float32")
    alone = fixed(x[:1], training=True).numpy()
    in_batch = fixed(x, training=True).numpy()[:1]
    np.testing.assert_allclose(alone, in_batch, rtol=1e-5, atol=1e-6)
    fixed.compile(optimizer="adam", loss="mse")
    fixed.fit(x, np.zeros((8, 1)), epochs=1, verbose=0)


def test_functional_model_with_nested_sequential():
    tf.keras.utils.set_random_seed(1)
    inner = tf.keras.Sequential([L.Dense(16), L.BatchNormalization(), L.Dense(8)], name="inner")
    inputs = tf.keras.Input((12, 6))
    h = L.Conv1D(8, 3)(inputs)
    h = L.BatchNormalization(name="outer_bn")(h)
    outputs = L.Dense(1)(inner(L.Flatten()(h)))
    model = tf.keras.Model(inputs, outputs, name="outer")

    with pytest.raises(ValueError, match="'outer_bn' \\(BatchNormalization\\)") as info:
        validate_model(model)
    assert "'inner/batch_normalization" in str(info.value)

    fixed = fix_model(model)
    validate_model(fixed)
    assert fixed.name == "outer"
    assert kinds(fixed) == ["InputLayer", "Conv1D", "GroupNormalization", "Flatten", "Sequential", "Dense"]
    new_inner = fixed.get_layer("inner")
    assert new_inner is not inner
    assert kinds(new_inner) == ["Dense", "GroupNormalization", "Dense"]
    assert new_inner.layers[1].groups == 8  # Dense outputs: at least two channels per group
    assert_same_weights(inner.layers[0], new_inner.layers[0])
    assert_same_weights(inner.layers[2], new_inner.layers[2])
    assert_same_weights(model.layers[1], fixed.layers[1])
    assert isinstance(inner.layers[1], L.BatchNormalization)  # original untouched
    x = np.ones((2, 12, 6), "float32")
    assert fixed(x).shape == (2, 1)


def test_unbuilt_sequential_gets_group_normalization_from_the_layers_before():
    model = blog_convnet(with_input=False)
    assert not model.built
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # GroupNormalization everywhere: no fallback warning
        fixed = fix_model(model)
    validate_model(fixed)
    assert kinds(fixed) == ["GroupNormalization" if k == "BatchNormalization" else k for k in kinds(model)]
    # channels 32, 64, 128 from the convolutions' filters; the spatial size is unknown: two channels per group
    assert [layer.groups for layer in fixed.layers if isinstance(layer, L.GroupNormalization)] == [16, 32, 32]
    x = np.random.default_rng(3).normal(size=(4, 12, 6)).astype("float32")
    assert fixed(x).shape == (4, 1)
    np.testing.assert_allclose(fixed(x[:1], training=True), fixed(x, training=True)[:1], rtol=1e-5, atol=1e-6)


def test_channels_are_carried_through_layers_that_keep_them():
    model = tf.keras.Sequential([L.Dense(12), L.Activation("relu"), L.Dropout(0.1), L.BatchNormalization()])
    fixed = fix_model(model)
    assert isinstance(fixed.layers[-1], L.GroupNormalization) and fixed.layers[-1].groups == 6
    assert fixed(np.ones((2, 5), "float32")).shape == (2, 12)


def test_fallback_to_layer_normalization_warns_naming_the_layer_and_why():
    unknown = tf.keras.Sequential([L.Reshape((4, 3)), L.BatchNormalization(name="after_reshape"), L.Dense(1)])
    with pytest.warns(
        UserWarning, match=r"'after_reshape' is replaced by LayerNormalization.*channel count is unknown"
    ):
        fixed = fix_model(unknown)
    assert kinds(fixed) == ["Reshape", "LayerNormalization", "Dense"]
    one_value = tf.keras.Sequential([tf.keras.Input((3,)), L.Dense(1), L.BatchNormalization(name="one_channel")])
    with (
        pytest.warns(UserWarning, match="normalizes a single value per example"),
        pytest.warns(UserWarning, match=r"'one_channel' is replaced by LayerNormalization.*1 channel\(s\) cannot"),
    ):
        assert kinds(fix_model(one_value)) == ["Dense", "LayerNormalization"]
    if not KERAS3:  # Keras 3's BatchNormalization takes one axis only
        several = tf.keras.Sequential([tf.keras.Input((4, 3)), L.BatchNormalization(axis=[1, 2], name="two_axes")])
        with pytest.warns(UserWarning, match=r"'two_axes' is replaced by LayerNormalization.*several axes"):
            assert kinds(fix_model(several)) == ["LayerNormalization"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # asked for: no warning
        assert kinds(fix_model(unknown, norm="layer")) == ["Reshape", "LayerNormalization", "Dense"]


def test_fix_true_is_fix_model():
    import op_tensorflow as ot

    for with_input in (True, False):
        direct = fix_model(blog_convnet(with_input=with_input))
        wrapped = ot.PrivateKerasModel(blog_convnet(with_input=with_input), fix=True).model
        assert kinds(wrapped) == kinds(direct)
        groups = [getattr(layer, "groups", None) for layer in direct.layers]
        assert [getattr(layer, "groups", None) for layer in wrapped.layers] == groups


def test_sequential_built_by_call_keeps_weights():
    model = blog_convnet(with_input=False)
    model(np.ones((2, 12, 6), "float32"))
    fixed = fix_model(model)
    assert kinds(fixed).count("GroupNormalization") == 3
    assert_same_weights(model.layers[-1], fixed.layers[-1])


def test_norm_layer(blog):
    fixed = fix_model(blog, norm="layer")
    validate_model(fixed)
    norms = [layer for layer in fixed.layers if isinstance(layer, L.LayerNormalization)]
    assert len(norms) == 3 and all([a % 3 for a in np.ravel(n.axis)] == [2] for n in norms)  # -1 for rank-3 inputs


def test_bad_norm(blog):
    with pytest.raises(ValueError, match="norm"):
        fix_model(blog, norm="batch")


def test_clean_model_validates_silently():
    inputs = tf.keras.Input((12, 6))
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(2).normal(size=(32, 12, 6)))  # explicit adapt: allowed
    h = L.LSTM(8)(norm(inputs))
    h = L.LayerNormalization()(h)
    h = L.Dropout(0.1)(L.GroupNormalization(groups=4)(h))
    model = tf.keras.Model(inputs, L.Dense(1)(h))
    assert validate_model(model) is None
    assert incompatible_layers(model) == []


def test_stateful_rnn_is_refused():
    model = tf.keras.Sequential([tf.keras.Input((5, 3), batch_size=4), L.LSTM(4, stateful=True), L.Dense(1)])
    with pytest.raises(ValueError, match="stateful=False"):
        validate_model(model)


def test_subclasses_are_refused_and_table_is_extensible():
    if KERAS3:  # one class, with a flag
        sync, v1 = L.BatchNormalization(synchronized=True), L.BatchNormalization()
    else:
        sync, v1 = L.experimental.SyncBatchNormalization(), tf.compat.v1.keras.layers.BatchNormalization()
    model = tf.keras.Sequential([tf.keras.Input((4,)), sync, L.Dense(4), v1])
    assert [layer for layer, _ in incompatible_layers(model)] == [sync, v1]

    class Leaky(L.Layer):
        pass

    INCOMPATIBLE[Leaky] = "test reason"
    try:
        found = incompatible_layers(tf.keras.Sequential([tf.keras.Input((4,)), Leaky()]))
        assert [reason for _, reason in found] == ["test reason"]
    finally:
        del INCOMPATIBLE[Leaky]


def test_time_distributed_batch_norm_is_replaced():
    inputs = tf.keras.Input((10, 8))
    model = tf.keras.Model(inputs, L.TimeDistributed(L.BatchNormalization())(inputs))
    fixed = fix_model(model)
    validate_model(fixed)
    inner = fixed.layers[1].layer
    assert isinstance(inner, L.GroupNormalization) and inner.groups == 4


def test_rejects_non_models():
    with pytest.raises(TypeError):
        validate_model("model")
    with pytest.raises(TypeError):
        fix_model(L.Dense(1))
