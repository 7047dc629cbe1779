"""PrivateKerasModel: DP-SGD mechanics, training, budget, predict, save/load, the seed guide."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import KERAS3
from scipy import stats

import op_tensorflow as ot
from op_tensorflow import clipping
from op_tensorflow.frame import _raw

warnings.filterwarnings("ignore", category=ot.PrivacyWarning)


def blobs(n=2000, d=2, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 1, (n, d)) + (2 * y[:, None] - 1) * 1.5
    cols = {f"feature{i + 1}": x[:, i] for i in range(d)}
    return pd.DataFrame({**cols, "target": y.astype(float)})


def mlp(d=2):
    return tf.keras.Sequential(
        [
            tf.keras.layers.Dense(16, activation="relu", input_shape=(d,)),
            tf.keras.layers.Dense(8, activation="relu"),
            tf.keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


def loader_for(df, batch_size=64, budget=(50.0, 1e-6), seed=0, **kwargs):
    pdf = ot.PrivateDataFrame(df, budget=budget)
    features = [c for c in df.columns if c != "target"]
    return ot.PrivateDataLoader(pdf[features], pdf["target"], batch_size, seed=seed, **kwargs), pdf


def explicit_clipped_sum(model, x, y, loss_fn, clip):
    """One example at a time: the definition that the fast path must reproduce."""
    total = [tf.zeros_like(v) for v in model.trainable_variables]
    norms = []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(clipping.per_example_losses(loss_fn, y[i : i + 1], model(x[i : i + 1], training=True)))
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]  # dense rows
        norm = tf.linalg.global_norm(grads)
        norms.append(norm)
        factor = clip / tf.maximum(norm, clip)
        total = [t + factor * g for t, g in zip(total, grads, strict=True)]
    return total, np.array(norms)


def convnet():
    inputs = tf.keras.Input((12, 6))
    h = tf.keras.layers.Conv1D(8, 3, activation="relu")(inputs)
    h = tf.keras.layers.LayerNormalization()(h)
    h = tf.keras.layers.Conv1D(8, 5, activation="relu", padding="same")(h)
    h = tf.keras.layers.GroupNormalization(groups=4)(h)
    h = tf.keras.layers.GlobalAveragePooling1D()(h)
    h = tf.keras.layers.Dense(8, activation="relu")(h)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(1)(h))


def embedding_model():
    return tf.keras.Sequential(
        [
            tf.keras.layers.Embedding(50, 4, input_length=6),
            tf.keras.layers.GlobalAveragePooling1D(),
            tf.keras.layers.Dense(1),
        ]
    )


def fallback_model():
    inputs = tf.keras.Input((5, 3))
    h = tf.keras.layers.SimpleRNN(4)(inputs)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(1)(h))


@pytest.mark.parametrize(
    "make,x_shape,integer_inputs",
    [(mlp, (2,), False), (convnet, (12, 6), False), (embedding_model, (6,), True), (fallback_model, (5, 3), False)],
    ids=["mlp", "convnet", "embedding", "fallback-rnn"],
)
def test_clipped_sum_matches_one_example_at_a_time(make, x_shape, integer_inputs):
    tf.keras.utils.set_random_seed(1)
    model = make()
    model.build((None, *x_shape))  # Keras 3 builds a Sequential without Input only when called
    rng = np.random.default_rng(2)
    x = rng.integers(0, 50, (9, *x_shape)) if integer_inputs else rng.normal(0, 3, (9, *x_shape))
    x = tf.constant(x, tf.float32)
    y = tf.constant(rng.normal(0, 5, (9,)), tf.float32)
    loss = tf.keras.losses.MeanSquaredError(reduction="none")
    _, slow_norms = explicit_clipped_sum(model, x, y, loss, 1.0)
    clip = float(np.median(slow_norms))  # some examples are clipped, some are not
    fast, norms, _ = clipping.clipped_gradient_sum(model, x, y, loss, clip)
    slow, _ = explicit_clipped_sum(model, x, y, loss, clip)
    np.testing.assert_allclose(norms.numpy(), slow_norms, rtol=1e-4)
    for f, s in zip(fast, slow, strict=True):
        np.testing.assert_allclose(f.numpy(), s.numpy(), rtol=1e-4, atol=1e-5)


def test_every_example_contribution_is_bounded_even_for_adversarial_examples():
    tf.keras.utils.set_random_seed(3)
    model = mlp()
    x = tf.constant([[1e6, -1e6], [1e4, 3e5], [0.1, 0.2], [1e8, 1e8]], tf.float32)
    y = tf.constant([0.0, 1.0, 1.0, 0.0])
    loss = tf.keras.losses.BinaryCrossentropy(reduction="none")
    for i in range(len(x)):
        grads, norms, _ = clipping.clipped_gradient_sum(model, x[i : i + 1], y[i : i + 1], loss, 1.0)
        assert tf.linalg.global_norm(grads).numpy() <= 1.0 * (1 + 1e-5)
    grads, norms, _ = clipping.clipped_gradient_sum(model, x, y, loss, 1.0)
    assert tf.linalg.global_norm(grads).numpy() <= 4.0 * (1 + 1e-5)


def test_empty_batch_gives_zero_clipped_sum():
    model = convnet()
    grads, norms, losses = clipping.clipped_gradient_sum(
        model, tf.zeros([0, 12, 6]), tf.zeros([0]), tf.keras.losses.MeanSquaredError(reduction="none"), 1.0
    )
    assert norms.shape == (0,) and all(float(tf.reduce_sum(tf.abs(g))) == 0.0 for g in grads)


@pytest.mark.slow
def test_released_noise_has_the_promised_standard_deviation():
    # x = 0 makes every kernel gradient exactly 0, so one SGD step with lr=1 moves the
    # kernel by -noise / (q n): its entries must be N(0, (C sigma / (q n))^2).
    d, n, batch, clip, sigma = 100, 400, 40, 0.7, 1.3
    df = pd.DataFrame(np.zeros((n, d)), columns=[f"x{i}" for i in range(d)]).assign(target=1.0)
    loader, _ = loader_for(df, batch_size=batch, budget=(math.inf, 1e-6))
    model = tf.keras.Sequential([tf.keras.layers.Dense(100, input_shape=(d,))])
    dp_model = ot.PrivateKerasModel(model=model, l2_norm_clip=clip, noise_multiplier=sigma, seed=0)
    dp_model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=1.0), loss="mse")
    before = model.layers[0].kernel.numpy().copy()
    dp_model.fit(x=loader, epochs=1, verbose=0, steps_per_execution=1)
    steps = loader.total_steps(1)
    delta = (model.layers[0].kernel.numpy() - before).ravel()
    expected_sd = clip * sigma / batch * math.sqrt(steps)  # sum of `steps` independent noise draws
    assert stats.kstest(delta, stats.norm(scale=expected_sd).cdf).pvalue > 1e-4
    assert stats.kstest(delta, stats.norm(scale=0.9 * expected_sd).cdf).pvalue < 1e-4


OPTIMIZERS = ["sgd", "adam", "rmsprop", "adagrad", "nadam"]


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_training_learns_with_every_optimizer(optimizer):
    tf.keras.utils.set_random_seed(4)
    df = blobs()
    loader, pdf = loader_for(df)
    dp_model = ot.PrivateKerasModel(model=mlp(), l2_norm_clip=1.0, noise_multiplier=0.8, seed=1)
    lr = {"sgd": 0.5, "adagrad": 0.5}.get(optimizer, 0.02)
    opt = tf.keras.optimizers.get({"class_name": optimizer, "config": {"learning_rate": lr}})
    dp_model.compile(optimizer=opt, loss="binary_crossentropy", metrics=["accuracy"])
    dp_model.fit(x=loader, epochs=3, verbose=0)
    test = blobs(500, seed=9)
    acc = dp_model.evaluate(test[["feature1", "feature2"]].to_numpy(), test["target"].to_numpy())["accuracy"]
    assert acc > 0.85


@pytest.mark.slow
@pytest.mark.parametrize(
    "loss,labels",
    [
        ("mse", "binary"),
        (tf.keras.losses.BinaryCrossentropy(), "binary"),
        ("categorical_crossentropy", "onehot"),
        (tf.keras.losses.sparse_categorical_crossentropy, "sparse"),
    ],
    ids=["mse", "bce", "cce", "sparse-fn"],
)
def test_training_learns_with_every_loss(loss, labels):
    tf.keras.utils.set_random_seed(5)
    df = blobs()
    if labels == "onehot":
        df = df.assign(t0=1 - df["target"], t1=df["target"]).drop(columns="target")
        pdf = ot.PrivateDataFrame(df, budget=(50.0, 1e-6))
        loader = ot.PrivateDataLoader(pdf[["feature1", "feature2"]], pdf[["t0", "t1"]], 64, seed=0)
    else:
        loader, pdf = loader_for(df)
    units, act = (1, "sigmoid") if labels == "binary" else (2, "softmax")
    model = tf.keras.Sequential([tf.keras.layers.Dense(8, "relu", input_shape=(2,)), tf.keras.layers.Dense(units, act)])
    dp_model = ot.PrivateKerasModel(model=model, l2_norm_clip=1.0, noise_multiplier=0.8, seed=2)
    dp_model.compile(optimizer=tf.keras.optimizers.Adam(0.02), loss=loss, metrics=["accuracy"])
    dp_model.fit(x=loader, epochs=3, verbose=0)
    test = blobs(500, seed=9)
    pred = dp_model.predict(test[["feature1", "feature2"]].to_numpy())
    guess = np.round(pred[:, 0]) if units == 1 else np.argmax(pred, axis=1)
    assert (guess == test["target"].to_numpy()).mean() > 0.85


def test_fit_charges_exactly_the_estimate_and_reports_epsilon_per_epoch():
    loader, pdf = loader_for(blobs(1000), batch_size=50, budget=(10.0, 1e-5))
    dp_model = ot.PrivateKerasModel(model=mlp(), l2_norm_clip=1.0, noise_multiplier=1.1)
    dp_model.compile(optimizer="sgd", loss="mse")
    history = dp_model.fit(x=loader, epochs=3, target_delta=1e-5, verbose=0)
    expected = [ot.get_privacy_budget(1000, 50, e, 1.1, 1e-5, verbose=False) for e in (1, 2, 3)]
    np.testing.assert_allclose(history.history["epsilon"], expected, rtol=1e-12)
    assert pdf.budget.spent() == pytest.approx(expected[-1], rel=1e-12)
    assert pdf.budget.entries[-1].status == "committed"
    assert dp_model.privacy["steps"] == loader.total_steps(3)


def test_budget_refusal_happens_before_any_step():
    loader, pdf = loader_for(blobs(1000), batch_size=50, budget=(0.5, 1e-5))
    model = mlp()
    dp_model = ot.PrivateKerasModel(model=model, l2_norm_clip=1.0, noise_multiplier=1.1)
    dp_model.compile(optimizer="sgd", loss="mse")
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ot.BudgetExceededError):
        dp_model.fit(x=loader, epochs=10, verbose=0)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert pdf.budget.spent() == 0.0 and pdf.budget.entries == []


def test_same_seed_gives_identical_weights():
    def run():
        tf.keras.utils.set_random_seed(7)
        loader, _ = loader_for(blobs(500), batch_size=25, seed=11)
        dp_model = ot.PrivateKerasModel(model=mlp(), l2_norm_clip=1.0, noise_multiplier=1.0, seed=3)
        dp_model.compile(optimizer="adam", loss="mse")
        dp_model.fit(x=loader, epochs=2, verbose=0)
        return dp_model.get_weights()

    first, second = run(), run()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    tf.keras.utils.set_random_seed(7)
    loader, _ = loader_for(blobs(500), batch_size=25, seed=11)
    other = ot.PrivateKerasModel(model=mlp(), l2_norm_clip=1.0, noise_multiplier=1.0, seed=4)
    other.compile(optimizer="adam", loss="mse")
    other.fit(x=loader, epochs=2, verbose=0)
    assert not np.array_equal(other.get_weights()[0], first[0])


def test_poisson_batches_never_retrace_and_empty_batches_train():
    # n=200, batch 2: batch sizes vary from 0 to ~8 and about 13% of steps are empty.
    loader, _ = loader_for(blobs(200), batch_size=2)
    model = mlp()
    dp_model = ot.PrivateKerasModel(model=model, l2_norm_clip=1.0, noise_multiplier=1.0, seed=0)
    dp_model.compile(optimizer="sgd", loss="mse")
    dp_model.fit(x=loader, epochs=3, verbose=0, steps_per_execution=7)
    assert dp_model._trace_count == 1
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_imported_json_model_fine_tunes_from_its_weights():
    tf.keras.utils.set_random_seed(8)
    local = mlp()
    local.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    df, test = blobs(1000), blobs(500, seed=9)
    local.fit(df[["feature1", "feature2"]].to_numpy(), df["target"].to_numpy(), epochs=5, verbose=0)
    assert local.evaluate(test[["feature1", "feature2"]].to_numpy(), test["target"].to_numpy(), verbose=0)[1] > 0.85
    model_info, weights = local.to_json(), local.get_weights()

    model = tf.keras.models.model_from_json(model_info)
    model.set_weights(weights)
    dp_model = ot.PrivateKerasModel(model=model, l2_norm_clip=2, noise_multiplier=1.5)
    np.testing.assert_array_equal(dp_model.get_weights()[0], weights[0])
    dp_model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    loader, _ = loader_for(df)
    dp_model.fit(x=loader, epochs=1, verbose=0)
    assert not np.array_equal(dp_model.get_weights()[0], weights[0])
    assert dp_model.evaluate(test[["feature1", "feature2"]].to_numpy(), test["target"].to_numpy())["accuracy"] > 0.85


def blog_convnet_with_batchnorm():
    return tf.keras.Sequential(
        [
            tf.keras.layers.Conv1D(32, 3, activation="relu", input_shape=(12, 6)),
            tf.keras.layers.BatchNormalization(),
            tf.keras.layers.Conv1D(64, 5, activation="relu"),
            tf.keras.layers.BatchNormalization(),
            tf.keras.layers.Conv1D(128, 5, activation="relu"),
            tf.keras.layers.BatchNormalization(),
            tf.keras.layers.GlobalAveragePooling1D(),
            tf.keras.layers.Dense(128, activation="relu"),
            tf.keras.layers.Dense(1),
        ]
    )


def test_batchnorm_is_refused_and_fixed():
    with pytest.raises(ValueError, match="fix_model"):
        ot.PrivateKerasModel(model=blog_convnet_with_batchnorm())
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(300, 72)), columns=[f"c{i}" for i in range(72)]).assign(
        target=rng.normal(size=300)
    )
    loader, _ = loader_for(df, batch_size=30, feature_shape=(12, 6))
    dp_model = ot.PrivateKerasModel(model=blog_convnet_with_batchnorm(), fix=True, seed=0)
    assert not any(isinstance(layer, tf.keras.layers.BatchNormalization) for layer in dp_model.model.layers)
    dp_model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    history = dp_model.fit(x=loader, epochs=1, verbose=0)
    assert len(history.history["epsilon"]) == 1


def test_predict_keeps_private_inputs_private():
    df = blobs(400)
    loader, pdf = loader_for(df)
    dp_model = ot.PrivateKerasModel(model=mlp(), l2_norm_clip=1.0, noise_multiplier=1.0)
    dp_model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    dp_model.fit(x=loader, epochs=1, verbose=0)
    X_train, X_test, y_train, y_test = ot.train_test_split(
        pdf[["feature1", "feature2"]], pdf["target"], test_size=0.25, random_state=0
    )
    result_pdf = dp_model.predict(x=X_test, label_columns=["result"])
    assert isinstance(result_pdf, ot.PrivateDataFrame) and result_pdf.columns == ["result"]
    assert result_pdf.budget is pdf.budget and len(result_pdf) == len(X_test)
    assert result_pdf.metadata == {"result": (0.0, 1.0)}  # sigmoid output: bounded, so DP means work
    with pytest.raises(ot.PrivacyError):
        np.asarray(result_pdf)
    with pytest.raises(ot.PrivacyError):
        result_pdf.to_pandas()
    np.testing.assert_allclose(
        _raw(result_pdf)["result"].to_numpy(), dp_model.predict(_raw(X_test).to_numpy())[:, 0], rtol=1e-6
    )
    default_cols = dp_model.predict(x=X_test)
    assert default_cols.columns == [0]
    spent = pdf.budget.spent()
    metrics = dp_model.evaluate(X_test, y_test, eps=0.5)
    assert set(metrics) == {"accuracy"} and 0 <= metrics["accuracy"] <= 1
    assert pdf.budget.spent() > spent


def test_save_and_load_round_trip(tmp_path):
    loader, _ = loader_for(blobs(300), batch_size=30)
    dp_model = ot.PrivateKerasModel(model=mlp(), l2_norm_clip=1.5, noise_multiplier=1.2)
    dp_model.compile(optimizer="adam", loss="mse")
    dp_model.fit(x=loader, epochs=2, target_delta=1e-6, verbose=0)
    path = tmp_path / "model.optf"
    dp_model.save(path)
    loaded = ot.load_private_model(path)
    for a, b in zip(dp_model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.privacy == dp_model.privacy
    assert loaded.privacy["epsilon"] > 0 and loaded.privacy["steps"] == loader.total_steps(2)
    assert loaded.l2_norm_clip == 1.5 and loaded.noise_multiplier == 1.2
    loaded.fit(x=loader, epochs=1, verbose=0)  # still compiled: training continues
    with pytest.raises(ValueError, match="not a model saved"):
        (tmp_path / "junk").write_text("nope")
        ot.load_private_model(tmp_path / "junk")


def test_bad_input_is_refused_with_clear_errors():
    loader, _ = loader_for(blobs(100), batch_size=10)
    with pytest.raises(TypeError, match="model must be"):
        ot.PrivateKerasModel(model="not a model")
    with pytest.raises(ValueError, match="l2_norm_clip"):
        ot.PrivateKerasModel(model=mlp(), l2_norm_clip=0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        ot.PrivateKerasModel(model=mlp(), noise_multiplier=-1)
    dp_model = ot.PrivateKerasModel(model=mlp())
    with pytest.raises(RuntimeError, match="compile"):
        dp_model.fit(x=loader)
    if not KERAS3:  # on Keras 3 the DP optimizer cannot even be built (test_optimizers_keras3.py)
        with pytest.raises(ValueError, match="already adds DP noise"):
            dp_model.compile(optimizer=ot.DPKerasAdamOptimizer(1.0, 1.0, 1), loss="mse")
    dp_model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(TypeError, match="PrivateDataLoader"):
        dp_model.fit(x=np.zeros((10, 2)))
    with pytest.raises(ValueError, match="epochs"):
        dp_model.fit(x=loader, epochs=0)
    with pytest.raises(ValueError, match="target_delta"):
        dp_model.fit(x=loader, target_delta=2)
    wrong_shape, _ = loader_for(blobs(100, d=3), batch_size=10)
    with pytest.raises(ValueError, match="input_shape"):
        dp_model.fit(x=wrong_shape)


def test_seed_guide_code_runs_as_written(capsys):
    # ../shared/seeds/001: the code blocks, on a PrivateDataFrame of our own.
    pdf = ot.PrivateDataFrame(blobs(2000), budget=(10.0, 1e-5))

    from tensorflow.keras.layers import Dense
    from tensorflow.keras.models import Sequential

    from op_tensorflow import PrivateKerasModel

    seqM = Sequential(
        [
            Dense(16, activation="relu", input_shape=(2,)),
            Dense(8, activation="relu"),
            Dense(1, activation="sigmoid"),
        ]
    )
    dp_model = PrivateKerasModel(model=seqM, l2_norm_clip=1, noise_multiplier=1.2)
    optimizer = tf.keras.optimizers.SGD(learning_rate=0.01)
    loss = tf.keras.losses.MeanSquaredError()
    dp_model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])

    from op_tensorflow import PrivateDataLoader

    X = pdf[["feature1", "feature2"]]
    y = pdf["target"]
    data_loader = PrivateDataLoader(feature_df=X, label_df=y, batch_size=4)
    history = dp_model.fit(x=data_loader, epochs=2, target_delta=1e-5)
    assert "epsilon" in capsys.readouterr().out  # the progress bar shows it
    assert history.history["epsilon"][-1] == pytest.approx(
        ot.get_privacy_budget(2000, 4, 2, 1.2, 1e-5, verbose=False), rel=1e-12
    )

    from op_tensorflow import get_privacy_budget

    get_privacy_budget(sample_size=100000, batch_size=32, num_epochs=1000, noise_multiplier=1.5, target_delta=1e-5)

    local_model = seqM
    model_info = local_model.to_json()
    weights = local_model.get_weights()
    import tensorflow

    model = tensorflow.keras.models.model_from_json(model_info)
    model.set_weights(weights)
    dp_model = PrivateKerasModel(model=model, l2_norm_clip=2, noise_multiplier=1.5)

    test_pdf = ot.test_train_split(X, test_size=0.25)[1]
    result_pdf = dp_model.predict(x=test_pdf, label_columns=["result"])
    assert result_pdf.columns == ["result"] and len(result_pdf) == 500
