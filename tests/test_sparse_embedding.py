"""``PrivateKerasModel(..., embedding_noise="sparse")`` end to end, through the public API.

The mechanism's own statistics are tested in ``test_sparse_noise.py``; here: the same epsilon and ledger charge
as dense noise, only selected rows of the table move (the optimizer gets a sparse gradient), the noise std on
the selected rows and on the other variables is ``C sigma_gradient``, untouched rows are selected at the
false-positive rate, runs are reproducible from the seeds with one trace, and every configuration the
mechanism does not cover is refused before the ledger is touched.
"""

import warnings

import numpy as np
import pytest
import tensorflow as tf

import op_tensorflow as ot
from op_tensorflow import sparse_noise

warnings.filterwarnings("ignore", category=ot.PrivacyWarning)
L = tf.keras.layers


def table_model(vocab=500, width=4, seq=8, trainable_head=True, zero_head=False):
    tf.keras.utils.set_random_seed(0)
    head = L.Dense(
        1, activation="sigmoid", trainable=trainable_head, kernel_initializer="zeros" if zero_head else "glorot_uniform"
    )
    return tf.keras.Sequential(
        [L.Input((seq,), dtype="int32"), L.Embedding(vocab, width), L.GlobalAveragePooling1D(), head]
    )


def ids_data(n=2000, vocab=500, seq=8, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.zipf(1.5, (n, seq)) % vocab).astype("float32")
    return x, (x[:, 0] < 3).astype("float32")


def loader_of(x, y, batch_size, vocab=500, seed=2):
    return ot.PrivateDataLoader.from_arrays(
        x, y, batch_size, feature_bounds=(0, vocab - 1), label_categories=[0, 1], seed=seed
    )


def fit(mode, *, epochs=2, seed=1, model=None, lr=0.5, loader_seed=2):
    model = model or table_model()
    dp = ot.PrivateKerasModel(model, 1.0, 1.1, seed=seed, embedding_noise=mode)
    dp.compile(optimizer=tf.keras.optimizers.SGD(lr), loss="binary_crossentropy")
    x, y = ids_data()
    loader = loader_of(x, y, 64, seed=loader_seed)
    history = dp.fit(loader, epochs=epochs, verbose=0)
    return dp, loader, history


def test_sparse_noise_spends_what_dense_noise_spends_and_moves_only_selected_rows():
    dense, dense_loader, dense_history = fit("dense")
    before = table_model().get_weights()[0]
    sparse, sparse_loader, sparse_history = fit("sparse")
    assert sparse_history.history["epsilon"] == dense_history.history["epsilon"]
    assert sparse_loader.budget.spent() == pytest.approx(dense_loader.budget.spent())
    assert sparse.privacy["epsilon"] == pytest.approx(dense.privacy["epsilon"])
    moved = np.any(sparse.get_weights()[0] != before, axis=1)
    assert 0 < moved.sum() < 0.5 * len(moved)  # SGD: rows never selected keep their weights exactly
    assert np.all(np.any(dense.get_weights()[0] != before, axis=1))  # dense noise moves every row
    assert sparse._trace_count == 1


def test_sparse_runs_are_reproducible_from_the_seeds():
    a = fit("sparse", epochs=1)[0].get_weights()
    b = fit("sparse", epochs=1)[0].get_weights()
    c = fit("sparse", epochs=1, seed=7)[0].get_weights()
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_noise_on_selected_rows_and_selection_rate_of_untouched_rows():
    """q = 1, one step, a frozen zero head: the table's gradient is 0, so its update is the noise alone."""
    vocab, n, lr = 20_000, 200, 1.0
    model = table_model(vocab=vocab, width=8, seq=4, trainable_head=False, zero_head=True)
    before = model.get_weights()[0]
    dp = ot.PrivateKerasModel(model, 1.0, 1.1, seed=3, embedding_noise="sparse")
    dp.compile(optimizer=tf.keras.optimizers.SGD(lr), loss="binary_crossentropy")
    x = np.tile(np.arange(4, dtype="float32"), (n, 1))  # every example looks up rows 0-3: count n / 2 each
    loader = ot.PrivateDataLoader.from_arrays(
        x, np.zeros(n, "float32"), n, feature_bounds=(0, vocab - 1), label_categories=[0, 1], seed=1
    )
    assert loader.sampling_rate == 1.0
    dp.fit(loader, epochs=1, verbose=0)
    update = dp.get_weights()[0] - before
    moved = np.flatnonzero(np.any(update != 0, axis=1))
    config = sparse_noise.SparseEmbeddingNoise(noise_multiplier=1.1)
    assert set(range(4)) <= set(moved)  # count 100 >> threshold: always selected
    false_positives = len(set(moved) - set(range(4)))
    p, untouched = config.false_positive_rate(), vocab - 4
    assert abs(false_positives - p * untouched) < 6 * np.sqrt(untouched * p * (1 - p)) + 1
    values = update[moved].ravel()
    std = 1.0 * config.sigma_gradient * lr / n  # C sigma_grad lr / (q n)
    k = values.size
    chi2 = float(np.sum((values / std) ** 2))
    assert abs(chi2 - k) / np.sqrt(2 * k) < 5.0, np.std(values) / std


def test_other_variables_get_the_gradient_share_of_the_noise():
    """With a zero table gradient nowhere, the head's bias update alone over many steps: std C sigma_grad."""
    n, lr = 100, 1.0
    tf.keras.utils.set_random_seed(0)
    inputs = L.Input((2,), dtype="int32")
    pooled = L.GlobalAveragePooling1D()(L.Embedding(50, 2)(inputs))
    head = L.Dense(4000, kernel_initializer="zeros", bias_initializer="zeros")
    model = tf.keras.Model(inputs, L.Dense(1, trainable=False, kernel_initializer="zeros")(head(pooled)))
    dp = ot.PrivateKerasModel(model, 1.0, 1.1, seed=4, embedding_noise="sparse")
    dp.compile(optimizer=tf.keras.optimizers.SGD(lr), loss="mse")
    loader = ot.PrivateDataLoader.from_arrays(
        np.zeros((n, 2), "float32"), np.zeros(n, "float32"), n, feature_bounds=(0, 49), label_bounds=(-1, 1), seed=1
    )
    dp.fit(loader, epochs=1, verbose=0)
    bias = head.get_weights()[1]
    std = sparse_noise.SparseEmbeddingNoise(noise_multiplier=1.1).sigma_gradient * lr / n
    chi2 = float(np.sum((bias / std) ** 2))
    assert abs(chi2 - bias.size) / np.sqrt(2 * bias.size) < 5.0, np.std(bias) / std
    dense_std = 1.1 * lr / n  # the test can fail: dense noise's std is 11.8% smaller
    assert abs(float(np.sum((bias / dense_std) ** 2)) - bias.size) / np.sqrt(2 * bias.size) > 5.0


def two_table_model():
    inputs = L.Input((4,), dtype="int32")
    a = L.GlobalAveragePooling1D()(L.Embedding(50, 2)(inputs))
    b = L.GlobalAveragePooling1D()(L.Embedding(50, 2)(inputs))
    return tf.keras.Model(inputs, L.Dense(1)(L.Concatenate()([a, b])))


@pytest.mark.parametrize(
    "make, option, match",
    [
        (lambda: tf.keras.Sequential([L.Input((3,)), L.Dense(1)]), "sparse", "exactly one"),
        (two_table_model, "sparse", "exactly one"),
        (table_model, "sparsest", "embedding_noise must be"),
        (table_model, sparse_noise.SparseEmbeddingNoise(noise_multiplier=2.0), "noise_multiplier=2"),
    ],
)
def test_unsupported_models_and_options_are_refused_at_construction(make, option, match):
    with pytest.raises(ValueError, match=match):
        ot.PrivateKerasModel(make(), 1.0, 1.1, embedding_noise=option)


def test_per_example_path_is_refused_before_the_ledger():
    """A shared Dense sends the model to the per-example path, which keeps no sparse table sum."""
    inputs = L.Input((8,), dtype="int32")
    h = L.GlobalAveragePooling1D()(L.Embedding(500, 4)(inputs))
    shared = L.Dense(4)
    model = tf.keras.Model(inputs, L.Dense(1, activation="sigmoid")(shared(shared(h))))
    dp = ot.PrivateKerasModel(model, 1.0, 1.1, embedding_noise="sparse")
    dp.compile(optimizer="sgd", loss="binary_crossentropy")
    assert_fit_refused_before_the_ledger(dp, "ghost-norm")


def assert_fit_refused_before_the_ledger(dp, match):
    x, y = ids_data()
    loader = loader_of(x, y, 64)
    with pytest.raises(ValueError, match=match):
        dp.fit(loader, epochs=1, verbose=0)
    assert loader.budget.spent() == 0


def test_a_tuned_configuration_is_used():
    config = sparse_noise.SparseEmbeddingNoise(noise_multiplier=1.1, selection_share=0.5, threshold_sigmas=1.0)
    dp = ot.PrivateKerasModel(table_model(), 1.0, 1.1, seed=1, embedding_noise=config)
    assert dp._sparse_noise is config


def test_sparse_noise_is_refused_under_a_strategy():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        dp = ot.PrivateKerasModel(table_model(), 1.0, 1.1, embedding_noise="sparse")
        dp.compile(optimizer="sgd", loss="binary_crossentropy")
    assert_fit_refused_before_the_ledger(dp, "one device")
