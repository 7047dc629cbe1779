"""The clipped gradient sum from the norm pass (no second backward pass) against the two-pass engine.

For every registered layer type (Dense on 2-D and sequence inputs, Conv1D/Conv2D with strides, dilation,
causal padding and groups, Embedding, LayerNormalization, GroupNormalization) and for a model mixing them with
a fallback layer, ``clipping.clipped_gradient_sum`` must equal (a) the old two-pass computation (a second
backward pass of the per-example losses weighted by the clip factors, written here from the norm pass) and
(b) the per-example path's sum of individually clipped gradients, with a clip small enough that every
example is clipped.
"""

import numpy as np
import pytest
import tensorflow as tf

from op_tensorflow import clipping, keras_seam
from op_tensorflow.registry import make_registry

L = tf.keras.layers
MSE = tf.keras.losses.MeanSquaredError(reduction="none")
CLIP = 0.05


def two_pass_sum(model, x, y, clip):
    """The engine's former algorithm: the norm pass, then a second backward pass weighted by the factors."""
    registry = make_registry()
    hooks, base_grads, losses, tape = clipping._norm_pass(model, x, y, MSE, registry, True)
    norms = tf.sqrt(tf.add_n([h[2](g) for h, g in zip(hooks, base_grads, strict=True)]))
    factors, _ = clipping.clip_factors(norms, losses, clip)
    variables = keras_seam.tape_variables(model.trainable_variables)
    grads = tape.gradient(losses, variables, output_gradients=factors, unconnected_gradients="zero")
    return [tf.convert_to_tensor(g) for g in grads]


def graph_sums(model, x, y, path):
    spec = [tf.TensorSpec([None, *x.shape[1:]], x.dtype), tf.TensorSpec([None], tf.float32)]
    fn = tf.function(
        lambda a, b: clipping.clipped_gradient_sum(model, a, b, MSE, CLIP, path=path)[0], input_signature=spec
    )
    return fn(x, y)


def direct_layers(model, x):
    """The layers whose clipped sum comes from the norm pass, in a traced forward pass."""
    covered = []

    @tf.function(autograph=False)
    def trace(a):
        tape = tf.GradientTape(persistent=True)
        with tape:
            _, records = keras_seam.forward_pass(model, a, clipping.layer_hook(tape, make_registry()))
        covered.extend(r[0].name for r in records if r is not None and r[3] is not None)
        return 0

    trace(x)
    return covered


class Scale(L.Layer):
    """An unregistered layer with a weight: the engine's fallback (its clipped sum takes the second pass)."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return tf.tanh(inputs * self.w)


def model_of(layers, input_shape, dtype="float32"):
    tf.keras.utils.set_random_seed(1)
    inputs = L.Input(input_shape, dtype=dtype)
    h = inputs
    for layer in layers:
        h = layer(h)
    return tf.keras.Model(inputs, L.Dense(1)(L.Flatten()(h)))


def cases():
    return {
        "dense_2d": (lambda: [L.Dense(7, activation="tanh"), L.Dense(5, use_bias=False)], (4,)),
        "dense_sequence_ghost": (lambda: [L.Dense(16, activation="relu")], (3, 6)),  # 2 T^2 <= d_in d_out
        "dense_sequence_explicit": (lambda: [L.Dense(2)], (9, 3)),
        "conv1d_causal_dilated": (
            lambda: [L.Conv1D(4, 3, padding="causal", dilation_rate=2, activation="relu")],
            (10, 3),
        ),
        "conv1d_strided_groups": (lambda: [L.Conv1D(6, 3, strides=2, groups=3, padding="same")], (9, 3)),
        "conv2d": (
            lambda: [L.Conv2D(3, (2, 3), strides=(1, 2), activation="tanh"), L.Conv2D(2, 2, use_bias=False)],
            (6, 7, 2),
        ),
        "layer_norm": (lambda: [L.Dense(6), L.LayerNormalization()], (5,)),
        "group_norm": (lambda: [L.Conv1D(6, 2), L.GroupNormalization(groups=3)], (7, 2)),
        "mixed_with_fallback": (lambda: [L.Dense(6), Scale(), L.Dense(3)], (5, 2)),
    }


@pytest.mark.parametrize("name", list(cases()))
def test_one_pass_equals_two_pass_and_per_example(name):
    make_layers, shape = cases()[name]
    model = model_of(make_layers(), shape)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(0, 1.5, (11, *shape)), tf.float32)
    y = tf.constant(rng.normal(0, 2, 11), tf.float32)
    one_pass = graph_sums(model, x, y, clipping.GHOST)
    per_example = graph_sums(model, x, y, clipping.PER_EXAMPLE)
    two_pass = tf.function(lambda a, b: two_pass_sum(model, a, b, CLIP))(x, y)
    for got, old, exact, v in zip(one_pass, two_pass, per_example, model.trainable_variables, strict=True):
        scale = float(tf.reduce_max(tf.abs(exact))) + 1e-12
        np.testing.assert_allclose(got, old, atol=2e-5 * scale, err_msg=v.name)
        np.testing.assert_allclose(got, exact, atol=2e-5 * scale, err_msg=v.name)
    # every example was clipped, so the sum's norm is at most n C
    total = np.sqrt(sum(float(tf.reduce_sum(tf.square(g))) for g in one_pass))
    assert total <= 11 * CLIP * (1 + 1e-5)


def test_registered_layers_need_no_second_pass():
    model = model_of([L.Conv1D(4, 3), L.LayerNormalization(), L.GroupNormalization(groups=2), L.Dense(3)], (8, 2))
    names = direct_layers(model, tf.zeros([2, 8, 2]))
    assert len(names) == 5  # conv, both norms, both dense: the engine skips the second backward pass
    custom = model_of([Scale()], (4, 2))
    assert len(direct_layers(custom, tf.zeros([2, 4, 2]))) == 1  # only the head; Scale's weight takes the second pass


def test_embedding_sum_is_sparse_and_exact():
    tf.keras.utils.set_random_seed(2)
    inputs = L.Input((6,), dtype="int32")
    h = L.GlobalAveragePooling1D()(L.Embedding(50, 4)(inputs))
    model = tf.keras.Model(inputs, L.Dense(1)(L.Dense(5, activation="relu")(h)))
    x = tf.constant(np.random.default_rng(3).integers(0, 50, (9, 6)), tf.int32)
    y = tf.constant(np.random.default_rng(4).normal(size=9), tf.float32)

    @tf.function
    def sparse_sum(a, b):
        return clipping._ghost_clipped_sum(model, a, b, MSE, CLIP, make_registry(), True, dense=False)[0]

    grads = sparse_sum(x, y)
    assert isinstance(grads[0], tf.IndexedSlices)
    np.testing.assert_array_equal(tf.sort(tf.unique(grads[0].indices)[0]), np.unique(x.numpy()))
    exact = graph_sums(model, x, y, clipping.PER_EXAMPLE)
    for got, want in zip(grads, exact, strict=True):
        np.testing.assert_allclose(tf.convert_to_tensor(got), want, atol=1e-6)


def test_nonfinite_example_is_left_out_of_the_one_pass_sum():
    model = model_of([L.Dense(4, activation="tanh")], (3,))
    x = np.random.default_rng(5).normal(size=(5, 3)).astype("float32")
    y = np.zeros(5, "float32")
    x_bad = x.copy()
    x_bad[2, 0] = np.inf
    with_bad = graph_sums(model, tf.constant(x_bad), tf.constant(y), clipping.GHOST)
    without = graph_sums(model, tf.constant(np.delete(x, 2, 0)), tf.constant(np.delete(y, 2)), clipping.GHOST)
    for a, b in zip(with_bad, without, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_noise_groups_fuse_small_variables_only():
    sizes = [576, 32, 10240, 64, 64, 40960, 128, 16384, 128, 128, 1]
    groups = clipping.noise_groups(sizes)
    assert sorted(i for g in groups for i in g) == list(range(len(sizes)))  # every variable exactly once
    assert [2] in groups and [5] in groups and [7] in groups  # >= FUSE_BELOW: alone
    assert [0, 1, 3, 4, 6, 8, 9, 10] in groups
    many = clipping.noise_groups([4000] * 40)
    assert all(sum(4000 for _ in g) <= clipping.FUSED_GROUP_MAX for g in many) and len(many) == 3


def test_fused_noise_has_the_stated_std_and_is_seeded():
    grads = [tf.zeros([30, 20]), tf.zeros([20]), tf.zeros([7, 3, 2]), tf.zeros([9000])]
    seed = tf.constant([3, 4], tf.int64)
    noisy = clipping.add_noise(grads, 2.0, seed, divide_by=4.0)
    values = np.concatenate([np.ravel(n) for n in noisy])
    k = values.size
    chi2 = float(np.sum((values / 0.5) ** 2))  # std 2 / 4
    assert abs(chi2 - k) / np.sqrt(2 * k) < 5.0
    assert all(n.shape == g.shape for n, g in zip(noisy, grads, strict=True))
    again = clipping.add_noise(grads, 2.0, seed, divide_by=4.0)
    other = clipping.add_noise(grads, 2.0, tf.constant([3, 5], tf.int64), divide_by=4.0)
    assert all(np.array_equal(a, b) for a, b in zip(noisy, again, strict=True))
    assert not np.allclose(noisy[0], other[0])
    # the fused parts are independent draws: no two variables of a group repeat each other
    assert not np.allclose(np.ravel(noisy[1]), np.ravel(noisy[0])[:20])


@pytest.mark.parametrize("shape", [(7, 5), (6,), (0, 4), (3, 2, 3)])
def test_embedding_norms_equal_per_row_sums(shape):
    """Sorted segment sums against a numpy reference: each example's gradient rows summed per id, squared."""
    from op_tensorflow.registry import embedding_sqr_norms

    rng = np.random.default_rng(1)
    ids = rng.integers(0, 4, shape)  # few ids: many repeats within an example
    values = rng.normal(size=(int(np.prod(shape)), 3)).astype("float32")
    fn = tf.function(embedding_sqr_norms, input_signature=[tf.TensorSpec([None, 3]), tf.TensorSpec(None, tf.int32)])
    got = fn(values, ids.astype("int32")).numpy()
    per_example = ids.reshape(shape[0], int(np.prod(shape[1:])))
    rows = values.reshape(shape[0], per_example.shape[1], 3)
    want = [
        sum(np.sum(rows[b][per_example[b] == r].sum(0) ** 2) for r in np.unique(per_example[b]))
        for b in range(shape[0])
    ]
    np.testing.assert_allclose(got, np.array(want, "float32").reshape(-1), rtol=1e-5)
