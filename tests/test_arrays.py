"""private_arrays and PrivateDataLoader.from_arrays: sequences and images as private data."""

import copy
import math
import warnings

import numpy as np
import pytest
import tensorflow as tf

import op_tensorflow as ot

warnings.filterwarnings("ignore", category=ot.PrivacyWarning)


def sequences(n=40, t=5, f=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, t, f)), rng.integers(0, 2, n).astype(float)


def test_features_and_labels_share_one_ledger_and_remember_the_example_shape():
    x, y = sequences()
    features, labels = ot.private_arrays(x, y, feature_bounds=(0, 1), label_categories=[0, 1], epsilon=3, delta=1e-4)
    assert isinstance(features, ot.PrivateDataFrame) and isinstance(labels, ot.PrivateSeries)
    assert features.example_shape == (5, 3) and features.shape == (40, 15) and len(labels) == 40
    assert features.columns[:4] == ["x[0,0]", "x[0,1]", "x[0,2]", "x[1,0]"] and features.columns[-1] == "x[4,2]"
    assert features.metadata["x[3,1]"] == (0.0, 1.0) and labels.metadata == [0, 1] and labels.name == "y"
    assert features.budget is labels.budget
    assert (features.budget.epsilon, features.budget.delta) == (3, 1e-4)


def test_column_x_t_f_holds_example_values_x_i_t_f():
    """Row-major flattening, checked with DP sums at a huge epsilon (noise ~1e-6)."""
    x = np.zeros((30, 4, 3))
    x[:, 2, 1] = 1.0  # timestep 2, feature 1
    x[:10, 0, 2] = 1.0
    features, _ = ot.private_arrays(x, np.zeros(30), feature_bounds=(0, 1), label_bounds=(0, 1))
    assert features["x[2,1]"].sum(eps=1e6) == pytest.approx(30, abs=0.01)
    assert features["x[0,2]"].sum(eps=1e6) == pytest.approx(10, abs=0.01)
    assert features["x[1,2]"].sum(eps=1e6) == pytest.approx(0, abs=0.01)


def test_the_loader_needs_no_feature_shape_and_gets_the_examples_back():
    x, y = sequences(n=20)
    features, labels = ot.private_arrays(x, y, feature_bounds=(0, 1), label_bounds=(0, 1))
    loader = ot.PrivateDataLoader(features, labels, batch_size=20, seed=0)  # q = 1: every row, shuffled
    assert loader.input_shape == (5, 3) and loader._label_shape == ()
    xb, yb = loader._sample()
    order = np.argsort(xb[:, 0, 0])
    np.testing.assert_allclose(xb[order], x[np.argsort(x[:, 0, 0])].astype(np.float32))
    # an explicit feature_shape still wins, if it fits
    assert ot.PrivateDataLoader(features, labels, 4, feature_shape=(15,)).input_shape == (15,)
    with pytest.raises(ValueError, match="product of feature_shape"):
        ot.PrivateDataLoader(features, labels, 4, feature_shape=(4, 3))


def test_images_with_per_channel_bounds_are_clamped_by_the_loader():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (12, 4, 4, 2))
    x[0, 1, 1, 1] = 50.0  # outside channel 1's bounds: kept, clamped where used
    features, labels = ot.private_arrays(
        x, rng.integers(0, 3, 12), feature_bounds=[(0, 1), (0, 0.5)], label_categories=[0, 1, 2]
    )
    assert features.example_shape == (4, 4, 2)
    assert features.metadata["x[1,1,1]"] == (0.0, 0.5) and features.metadata["x[1,1,0]"] == (0.0, 1.0)
    loader = ot.PrivateDataLoader(features, labels, 3)
    assert loader.input_shape == (4, 4, 2)
    assert loader._x[..., 1].max() <= 0.5 and loader._x[0, 1, 1, 1] == 0.5
    assert loader._label_bounds == [(0.0, 2.0)]  # numeric categories give the label range
    assert features["x[1,1,1]"].sum(eps=1e6) <= 12 * 0.5 + 0.01  # DP sums clamp too


def test_two_dimensional_labels_become_a_frame():
    x, _ = sequences(n=10)
    onehot = np.eye(3)[np.arange(10) % 3]
    features, labels = ot.private_arrays(x, onehot, feature_bounds=(0, 1), label_bounds=(0, 1))
    assert isinstance(labels, ot.PrivateDataFrame) and labels.columns == ["y[0]", "y[1]", "y[2]"]
    assert ot.PrivateDataLoader(features, labels, 2)._label_shape == (3,)


def test_the_shape_survives_splits_copies_clipping_and_arithmetic_but_not_column_changes():
    x, y = sequences()
    features, labels = ot.private_arrays(x, y, feature_bounds=(0, 1), label_bounds=(0, 1))
    x_train, x_test, y_train, y_test = ot.train_test_split(features, labels, test_size=0.25, random_state=0)
    assert x_train.example_shape == x_test.example_shape == (5, 3)
    assert (len(x_train), len(x_test)) == (30, 10)
    assert ot.PrivateDataLoader(x_train, y_train, 5).input_shape == (5, 3)
    assert copy.copy(features).example_shape == (5, 3)
    assert (features * 2).example_shape == (5, 3)
    assert features.clip({"x[0,0]": (0, 0.5)}).example_shape == (5, 3)
    assert features[features.columns].example_shape == (5, 3)
    assert features[features.columns[:3]].example_shape is None
    assert features.drop("x[0,0]").example_shape is None
    assert features[features.columns[::-1]].example_shape is None
    mutated = copy.copy(features)
    mutated["extra"] = 1.0
    assert mutated.example_shape is None and features.example_shape == (5, 3)
    assert ot.PrivateDataFrame(__import__("pandas").DataFrame({"a": [1.0]})).example_shape is None


def test_budget_arguments():
    x, y = sequences(n=10)
    args = dict(feature_bounds=(0, 1), label_bounds=(0, 1))
    unlimited, _ = ot.private_arrays(x, y, **args)
    assert math.isinf(unlimited.budget.epsilon) and unlimited.budget.delta == pytest.approx(1 / 100)
    ledger = ot.PrivacyBudget(2.0, 1e-5)
    assert ot.private_arrays(x, y, budget=ledger, **args)[0].budget is ledger
    assert ot.private_arrays(x, y, budget=(1.0, 1e-3), **args)[1].budget.epsilon == 1.0
    assert ot.private_arrays(x, y, delta=1e-3, **args)[0].budget.delta == 1e-3
    with pytest.raises(ValueError, match="delta must be given with epsilon"):
        ot.private_arrays(x, y, epsilon=1.0, **args)
    with pytest.raises(ValueError, match="either budget= or epsilon="):
        ot.private_arrays(x, y, epsilon=1.0, delta=1e-5, budget=ledger, **args)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(x=np.zeros(10)), ValueError, "x must have shape \\(n, ...\\)"),
        (dict(y=np.zeros(9)), ValueError, "x has 10 examples but y has 9"),
        (dict(y=np.zeros((10, 2, 2))), ValueError, "y must have shape"),
        (dict(x=np.array([["a"] * 3] * 10)), ValueError, "x must hold numbers"),
        (dict(x=np.zeros((10, 3)) + 1j), ValueError, "x must hold numbers"),
        (dict(x=np.zeros((0, 3)), y=np.zeros(0)), ValueError, "at least one example"),
        (dict(x=np.zeros((10, 0))), ValueError, "must not be empty"),
        (dict(x=None), TypeError, "x must be an array"),
        (dict(feature_bounds=None), ValueError, "feature_bounds must be .* none were given"),
        (dict(feature_bounds=(1, 0)), ValueError, "lower <= upper"),
        (dict(feature_bounds=(0, math.inf)), ValueError, "finite"),
        (dict(feature_bounds=[(0, 1)] * 2), ValueError, "one \\(lower, upper\\) per feature .* 3 here"),
        (dict(feature_bounds="0,1"), TypeError, "feature_bounds"),
        (dict(label_bounds=None), ValueError, "exactly one of label_bounds"),
        (dict(label_categories=[0, 1]), ValueError, "exactly one of label_bounds"),
        (dict(label_bounds=None, label_categories=[]), ValueError, "non-empty list"),
        (dict(label_bounds=None, label_categories=["a", "b"]), ValueError, "numeric class codes"),
        (dict(label_bounds=None, label_categories=[0, 0]), ValueError, "repeated"),
        (dict(label_bounds=None, label_categories=3), TypeError, "label_categories must be a list"),
    ],
)
def test_bad_arguments_are_refused_naming_them(kwargs, error, match):
    args = dict(x=np.zeros((10, 3)), y=np.zeros(10), feature_bounds=(0, 1), label_bounds=(0, 1))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        ot.private_arrays(args.pop("x"), args.pop("y"), **args)


def test_private_inputs_are_refused():
    features, labels = ot.private_arrays(np.zeros((10, 3)), np.zeros(10), feature_bounds=(0, 1), label_bounds=(0, 1))
    with pytest.raises(TypeError, match="already private"):
        ot.private_arrays(features, labels, feature_bounds=(0, 1), label_bounds=(0, 1))


def test_the_callers_arrays_are_copied():
    x, y = sequences(n=10)
    features, _ = ot.private_arrays(x, y, feature_bounds=(0, 1), label_bounds=(0, 1))
    x[:] = 0.0
    assert features["x[0,0]"].sum(eps=1e6) > 0.5


def test_from_arrays_builds_the_loader_in_one_call():
    x, y = sequences(n=20)
    loader = ot.PrivateDataLoader.from_arrays(
        x, y, 4, feature_bounds=(0, 1), label_categories=[0, 1], epsilon=2.0, delta=1e-4, seed=3
    )
    assert loader.input_shape == (5, 3) and loader.sample_size == 20 and loader.batch_size == 4
    assert loader.budget.epsilon == 2.0 and loader.label_columns == ["y"]
    with pytest.raises(ValueError, match="feature_bounds"):
        ot.PrivateDataLoader.from_arrays(x, y, 4, feature_bounds=None, label_bounds=(0, 1))


def test_a_model_trains_predicts_and_evaluates_on_private_sequences():
    x, y = sequences(n=60, t=6, f=2, seed=4)
    features, labels = ot.private_arrays(x, y, feature_bounds=(0, 1), label_categories=[0, 1], delta=1e-4)
    x_train, x_test, y_train, y_test = ot.train_test_split(features, labels, test_size=0.25, random_state=0)
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(6, 2)),
            tf.keras.layers.Conv1D(4, 3, activation="relu"),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    dp_model = ot.PrivateKerasModel(model, l2_norm_clip=1.0, noise_multiplier=1.1, seed=0)
    dp_model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    dp_model.fit(ot.PrivateDataLoader(x_train, y_train, 9, seed=0), epochs=1, verbose=0)
    predictions = dp_model.predict(x_test, label_columns=["p"])
    assert isinstance(predictions, ot.PrivateDataFrame) and predictions.shape == (15, 1)
    # the private predictions are the model's outputs on the examples in their original shape
    p_sum = predictions["p"].sum(eps=1e6)
    test_rows = np.sort(np.random.default_rng(0).permutation(60)[:15])
    assert p_sum == pytest.approx(float(model.predict(x[test_rows], verbose=0).sum()), abs=1e-3)
    accuracy = dp_model.evaluate(x_test, y_test, eps=1.0)["accuracy"]
    assert 0.0 <= accuracy <= 1.0


def test_wide_reprs_are_compact_and_show_the_layout():
    x, y = sequences(n=12, t=12, f=6)
    features, labels = ot.private_arrays(x, y, feature_bounds=(0, 1), label_bounds=(0, 1), epsilon=3, delta=1e-4)
    text = repr(features)
    lines = text.splitlines()
    assert len(lines) <= 20 and max(map(len, lines)) <= 120
    assert lines[0] == "PrivateDataFrame(rows=12, columns=72)"
    assert "per-example shape: (12, 6)" in text and "... and 62 more columns" in text
    assert "x[0,0]: float64, [0, 1]" in text
    assert "epsilon total 3, spent 0, remaining 3; delta 0.0001" in text
    loader = ot.PrivateDataLoader(features, labels, 4)
    loader_lines = repr(loader).splitlines()
    assert len(loader_lines) <= 20 and "input_shape=(12, 6)" in loader_lines[0]
    assert "feature columns (72: x[0,0]" in repr(loader) and "... and 62 more" in repr(loader)
