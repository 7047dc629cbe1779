"""PrivateDataLoader: Poisson sampling statistics, step counts, validation and refused paths."""

import copy
import math
import pickle

import numpy as np
import pandas as pd
import pytest

from op_tensorflow import accounting
from op_tensorflow.errors import PrivacyError
from op_tensorflow.frame import PrivateDataFrame, _raw, train_test_split
from op_tensorflow.loader import PrivateDataLoader


def private(df: pd.DataFrame) -> PrivateDataFrame:
    return PrivateDataFrame(df, budget=(10.0, 1e-6))


def id_frame(n: int) -> PrivateDataFrame:
    """Row ``i`` has feature ``id = i`` and label ``2 i + 1``, so batches can be traced back to rows."""
    ids = np.arange(n, dtype=float)
    return private(pd.DataFrame({"id": ids, "y": 2 * ids + 1}))


def row_ids(loader: PrivateDataLoader, epochs: int) -> list[np.ndarray]:
    batches = []
    for epoch in range(epochs):
        for x, y in loader._epoch_batches(epoch):
            np.testing.assert_array_equal(y, 2 * x[:, 0] + 1)  # features and labels gathered from the same rows
            batches.append(x[:, 0].astype(np.int64))
    return batches


# -- Poisson sampling ------------------------------------------------------------------------


def test_batch_sizes_and_row_inclusion_follow_poisson_sampling():
    n, b = 1000, 50
    q = b / n
    pdf = id_frame(n)
    loader = PrivateDataLoader(pdf[["id"]], pdf["y"], b, seed=0)
    batches = row_ids(loader, 100)
    assert len(batches) == loader.total_steps(100) == 2000
    for rows in batches:
        assert np.unique(rows).size == rows.size  # rows are drawn without replacement within a step

    sizes = np.array([rows.size for rows in batches], dtype=float)
    steps = sizes.size
    mean, var = n * q, n * q * (1 - q)
    mu4 = var * (1 + 3 * (n - 2) * q * (1 - q))  # binomial central 4th moment
    assert abs(sizes.mean() - mean) < 4 * math.sqrt(var / steps)
    assert abs(sizes.var(ddof=1) - var) < 4 * math.sqrt((mu4 - var**2 * (steps - 3) / (steps - 1)) / steps)

    counts = np.bincount(np.concatenate(batches), minlength=n)
    z = (counts - steps * q) / math.sqrt(steps * q * (1 - q))
    assert np.abs(z).max() < 5.0  # 1000 simultaneous tests: P(any |z| > 5) is about 6e-4


def test_empty_batches_occur_with_probability_one_minus_q_to_the_n():
    pdf = id_frame(100)
    loader = PrivateDataLoader(pdf["id"], pdf["y"], 1, seed=1)
    sizes = np.array([rows.size for rows in row_ids(loader, 50)])
    p_empty = (1 - 0.01) ** 100
    assert sizes.size == 5000
    assert abs((sizes == 0).mean() - p_empty) < 4 * math.sqrt(p_empty * (1 - p_empty) / sizes.size)


def test_high_sampling_rates_include_every_row_equally_often():
    pdf = id_frame(10)
    loader = PrivateDataLoader(pdf[["id"]], pdf["y"], 8, seed=2)  # q = 0.8: large batches relative to n
    batches = row_ids(loader, 1600)
    counts = np.bincount(np.concatenate(batches), minlength=10)
    z = (counts - len(batches) * 0.8) / math.sqrt(len(batches) * 0.8 * 0.2)
    assert np.abs(z).max() < 4.0
    full = PrivateDataLoader(pdf[["id"]], pdf["y"], 10, seed=2)  # q = 1: every row, every step
    assert all(sorted(rows.tolist()) == list(range(10)) for rows in row_ids(full, 3))


def test_batch_shapes_dtypes_and_empty_batches():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=30), "b": rng.integers(0, 5, 30), "flag": rng.random(30) > 0.5})
    df["t1"], df["t2"] = rng.normal(size=30), rng.normal(size=30)
    pdf = private(df)
    loader = PrivateDataLoader(pdf[["a", "b", "flag"]], pdf[["t1", "t2"]], 1, seed=3)
    batches = list(loader._epoch_batches(0)) + list(loader._epoch_batches(1))
    assert any(x.shape[0] == 0 for x, _ in batches)
    for x, y in batches:
        assert x.dtype == y.dtype == np.float32
        assert x.shape == (x.shape[0], 3) and y.shape == (x.shape[0], 2)
        assert set(np.unique(x[:, 2])) <= {0.0, 1.0}  # bool feature as 0/1
    single = PrivateDataLoader(pdf["a"], pdf["t1"], 1, seed=3)
    assert single.input_shape == (1,) and single.feature_columns == ["a"] and single.label_columns == ["t1"]
    shapes = {(x.shape[1:], y.shape[1:]) for e in range(3) for x, y in single._epoch_batches(e)}
    assert shapes == {((1,), ())}


# -- seeds -------------------------------------------------------------------------------------


def all_batches(loader, epochs=2):
    return [(x.copy(), y.copy()) for e in range(epochs) for x, y in loader._epoch_batches(e)]


def same(a, b):
    return len(a) == len(b) and all(
        np.array_equal(x1, x2) and np.array_equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True)
    )


def test_same_seed_gives_identical_batches_and_other_seeds_differ():
    pdf = id_frame(200)
    make = lambda seed: PrivateDataLoader(pdf[["id"]], pdf["y"], 10, seed=seed)  # noqa: E731
    assert same(all_batches(make(7)), all_batches(make(7)))
    assert not same(all_batches(make(7)), all_batches(make(8)))
    assert not same(all_batches(make(None)), all_batches(make(None)))


def test_epochs_and_repeated_iteration_draw_fresh_batches():
    pdf = id_frame(200)
    loader = PrivateDataLoader(pdf[["id"]], pdf["y"], 10, seed=7)
    assert not same(list(loader._epoch_batches(0)), list(loader._epoch_batches(0)))


# -- step counts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "b", "epochs"),
    [(100, 10, 3), (101, 10, 3), (1000, 7, 5), (97, 97, 4), (97, 1, 2), (10, 3, 7), (12345, 256, 3), (3989, 32, 20)],
)
def test_epoch_steps_sum_to_total_steps(n, b, epochs):
    pdf = private(pd.DataFrame({"x": np.zeros(n), "y": np.zeros(n)}))
    loader = PrivateDataLoader(pdf[["x"]], pdf["y"], b)
    total = accounting.steps_for(n, b, epochs)
    assert sum(loader.steps_in_epoch(k) for k in range(epochs)) == loader.total_steps(epochs) == total
    assert loader.steps_per_epoch == math.ceil(n / b) == loader.total_steps(1)
    assert all(loader.steps_in_epoch(k) in (n // b, n // b + 1) for k in range(epochs))
    if n <= 1000:
        assert sum(1 for k in range(epochs) for _ in loader._epoch_batches(k)) == total


def test_public_attributes_and_dp_event():
    pdf = id_frame(1000)
    loader = PrivateDataLoader(pdf[["id"]], pdf["y"], 40)
    assert (loader.sample_size, loader.batch_size, loader.sampling_rate) == (1000, 40, 0.04)
    assert loader.budget is pdf.budget
    assert loader.total_steps(2.5) == 63
    assert loader.dp_event(2.5, 1.1) == accounting.dp_sgd_event(0.04, 1.1, 63)
    with pytest.raises(ValueError, match="epochs"):
        loader.total_steps(0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        loader.dp_event(1, -1.0)
    with pytest.raises(ValueError, match="epoch"):
        loader.steps_in_epoch(-1)


# -- validation ------------------------------------------------------------------------------


def frame_with(**columns) -> PrivateDataFrame:
    base = {"a": np.arange(6, dtype=float), "b": np.arange(6) % 2 == 0, "y": np.arange(6, dtype=float)}
    base.update(columns)
    return private(pd.DataFrame(base))


def test_labels_from_another_dataset_are_refused():
    one, two = frame_with(), frame_with()
    with pytest.raises(ValueError, match="label_df.*different private dataset"):
        PrivateDataLoader(one[["a"]], two["y"], 2)


def test_misaligned_labels_are_refused():
    pdf = id_frame(50)
    x_train, x_test, y_train, y_test = train_test_split(pdf[["id"]], pdf["y"], test_size=0.2, random_state=0)
    PrivateDataLoader(x_train, y_train, 5)  # one split call: aligned
    with pytest.raises(ValueError, match="label_df is not row-aligned"):
        PrivateDataLoader(x_train, y_test, 5)
    _, _, y_train_other, _ = train_test_split(pdf[["id"]], pdf["y"], test_size=0.2, random_state=1)
    with pytest.raises(ValueError, match="label_df is not row-aligned"):
        PrivateDataLoader(x_train, y_train_other, 5)
    with pytest.raises(ValueError, match="label_df is not row-aligned"):
        PrivateDataLoader(x_train, pdf["y"], 5)


def test_unverifiable_alignment_with_repeated_row_labels_is_refused():
    df = pd.DataFrame({"x": np.arange(20.0), "y": np.arange(20.0)}, index=np.repeat(np.arange(10), 2))
    pdf = private(df)
    PrivateDataLoader(pdf[["x"]], pdf["y"], 2)  # the whole dataset: aligned
    x_train, _, y_train, _ = train_test_split(pdf[["x"]], pdf["y"], random_state=0)
    with pytest.raises(ValueError, match="label_df.*reset the index"):
        PrivateDataLoader(x_train, y_train, 2)


def test_raw_pandas_is_refused():
    pdf = frame_with()
    with pytest.raises(TypeError, match="feature_df"):
        PrivateDataLoader(pd.DataFrame({"a": [1.0]}), pdf["y"], 1)
    with pytest.raises(TypeError, match="label_df"):
        PrivateDataLoader(pdf[["a"]], np.zeros(6), 1)


@pytest.mark.parametrize(
    "values",
    [
        ["u", "v", "w", "u", "v", "w"],
        pd.Categorical(["u", "v", "w", "u", "v", "w"]),
        pd.date_range("2020-01-01", periods=6),
        np.arange(6) + 1j,
    ],
)
def test_non_numeric_columns_are_refused(values):
    pdf = frame_with(c=values)
    with pytest.raises(ValueError, match="column 'c'.*encode it numerically"):
        PrivateDataLoader(pdf[["a", "c"]], pdf["y"], 2)
    with pytest.raises(ValueError, match="label_df column 'c'.*encode it numerically"):
        PrivateDataLoader(pdf[["a"]], pdf["c"], 2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_missing_and_infinite_values_are_refused(bad):
    a = np.arange(6, dtype=float)
    a[2] = bad
    y = np.arange(6, dtype=float)
    y[4] = bad
    pdf = frame_with(a=a, y=y)
    with pytest.raises(ValueError, match=r"\['a', 'y'\].*dropna=True"):
        PrivateDataLoader(pdf[["a", "b"]], pdf["y"], 2)
    with pytest.raises(ValueError, match=r"\['y'\]"):
        PrivateDataLoader(pdf[["b"]], pdf["y"], 2)


def test_nullable_missing_values_are_refused():
    pdf = frame_with(c=pd.array([1, None, 3, 4, 5, 6], dtype="Int64"))
    with pytest.raises(ValueError, match=r"\['c'\]"):
        PrivateDataLoader(pdf[["c"]], pdf["y"], 2)


def test_values_beyond_float32_are_refused():
    pdf = frame_with(a=np.array([1.0, 2, 3, 4, 5, 1e300]))
    with pytest.raises(ValueError, match=r"\['a'\].*float32"):
        PrivateDataLoader(pdf[["a"]], pdf["y"], 2)


def test_dropna_drops_exactly_the_rows_with_missing_or_infinite_values():
    n = 40
    ids = np.arange(n, dtype=float)
    a, y = np.ones(n), 2 * ids + 1
    a[[3, 10]] = np.nan
    a[17] = np.inf
    y[[10, 25]] = np.nan
    pdf = private(pd.DataFrame({"id": ids, "a": a, "y": y, "unused": np.nan}))
    loader = PrivateDataLoader(pdf[["id", "a"]], pdf["y"], 4, seed=0, dropna=True)
    dropped = {3, 10, 17, 25}
    assert loader.sample_size == n - len(dropped)
    assert loader.sampling_rate == 4 / (n - len(dropped))
    np.testing.assert_array_equal(loader._x[:, 0], [i for i in range(n) if i not in dropped])
    seen = set()
    for e in range(30):
        for x, y_batch in loader._epoch_batches(e):
            np.testing.assert_array_equal(y_batch, 2 * x[:, 0] + 1)
            seen.update(x[:, 0].astype(int).tolist())
    assert seen == set(range(n)) - dropped
    everything_missing = private(pd.DataFrame({"a": [np.nan, np.nan], "y": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="no rows left"):
        PrivateDataLoader(everything_missing[["a"]], everything_missing["y"], 1, dropna=True)


@pytest.mark.parametrize(
    ("batch_size", "error"), [(0, ValueError), (7, ValueError), (2.5, ValueError), ("2", TypeError)]
)
def test_bad_batch_size_is_refused(batch_size, error):
    pdf = frame_with()
    with pytest.raises(error, match="batch_size"):
        PrivateDataLoader(pdf[["a"]], pdf["y"], batch_size)


def test_batch_size_is_checked_against_rows_left_after_dropna():
    pdf = frame_with(a=np.array([np.nan, 1, 2, 3, 4, 5]))
    PrivateDataLoader(pdf[["a"]], pdf["y"], 5, dropna=True)
    with pytest.raises(ValueError, match="batch_size must be <= sample_size \\(5\\)"):
        PrivateDataLoader(pdf[["a"]], pdf["y"], 6, dropna=True)


@pytest.mark.parametrize(
    ("shape", "error"),
    [
        ((3,), ValueError),
        ((2, 2), ValueError),
        ((2, -1), ValueError),
        ((), ValueError),
        ("ab", TypeError),
        (4, TypeError),
    ],
)
def test_bad_feature_shape_is_refused(shape, error):
    pdf = frame_with()
    with pytest.raises(error, match="feature_shape"):
        PrivateDataLoader(pdf[["a", "b"]], pdf["y"], 2, feature_shape=shape)


def test_bad_seed_and_dropna_are_refused():
    pdf = frame_with()
    with pytest.raises(ValueError, match="seed"):
        PrivateDataLoader(pdf[["a"]], pdf["y"], 2, seed=-1)
    with pytest.raises(TypeError, match="dropna"):
        PrivateDataLoader(pdf[["a"]], pdf["y"], 2, dropna="yes")


def test_no_columns_is_refused():
    pdf = frame_with()
    with pytest.raises(ValueError, match="feature_df has no columns"):
        PrivateDataLoader(pdf[[]], pdf["y"], 2)
    with pytest.raises(ValueError, match="label_df has no columns"):
        PrivateDataLoader(pdf[["a"]], pdf[[]], 2)


# -- feature_shape -----------------------------------------------------------------------------


def test_feature_shape_reshapes_each_row_in_row_major_order():
    n, rows, cols = 30, 4, 3
    rng = np.random.default_rng(5)
    features = pd.DataFrame(rng.normal(size=(n, rows * cols)), columns=[f"f{i}" for i in range(rows * cols)])
    df = features.assign(id=np.arange(n, dtype=float))
    pdf = private(df)
    loader = PrivateDataLoader(pdf[list(features.columns)], pdf["id"], 5, seed=1, feature_shape=(rows, cols))
    assert loader.input_shape == (rows, cols)
    raw = _raw(pdf)
    for x, ids in loader._epoch_batches(0):
        assert x.shape == (ids.shape[0], rows, cols)
        expected = raw.iloc[ids.astype(int)][list(features.columns)].to_numpy(np.float32).reshape(-1, rows, cols)
        np.testing.assert_array_equal(x, expected)
        if ids.size:
            np.testing.assert_array_equal(x[0, 1], raw.iloc[int(ids[0])][["f3", "f4", "f5"]].to_numpy(np.float32))


# -- no rows reachable -------------------------------------------------------------------------


def test_no_rows_reachable_through_public_paths():
    secret = 987654.25
    pdf = private(pd.DataFrame({"a": [secret, 1.5, 2.5], "y": [31337.0, 0.0, 1.0]}))
    loader = PrivateDataLoader(pdf[["a"]], pdf["y"], 2)
    text = repr(loader) + str(loader)
    assert "987654" not in text and "31337" not in text
    for key in ("sample_size=3", "batch_size=2", "sampling_rate=0.666667", "['a']", "['y']"):
        assert key in text
    refused = {
        "pickling": lambda: pickle.dumps(loader),
        "copy.deepcopy": lambda: copy.deepcopy(loader),
        "copy.copy": lambda: copy.copy(loader),
        "iteration": lambda: iter(loader),
        "iteration ": lambda: list(loader),
        "len": lambda: len(loader),
        "indexing": lambda: loader[0],
        "np.asarray": lambda: np.asarray(loader),
    }
    for what, attempt in refused.items():
        with pytest.raises(PrivacyError, match=what.strip().split(".")[-1].replace("(", "")):
            attempt()
    public = [name for name in dir(loader) if not name.startswith("_")]
    assert sorted(public) == sorted(
        [
            "batch_size",
            "budget",
            "dp_event",
            "feature_columns",
            "from_arrays",
            "input_shape",
            "label_columns",
            "sample_size",
            "sampling_rate",
            "steps_in_epoch",
            "steps_per_epoch",
            "total_steps",
        ]
    )
    assert not hasattr(loader, "__dict__")  # vars(loader) shows nothing


# -- tf.data and Keras -------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:non-integer arguments to randrange:DeprecationWarning")  # Keras 2 seeding
def test_dataset_feeds_plain_keras_fit_including_empty_batches():
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n = 20
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "y": (rng.random(n) > 0.5).astype(float)})
    pdf = private(df)
    epochs = 2
    expected = all_batches(PrivateDataLoader(pdf[["a", "b"]], pdf["y"], 1, seed=3), epochs)
    assert expected[0][0].shape[0] == 0  # seed 3: the very first batch is empty
    assert sum(x.shape[0] == 0 for x, _ in expected) >= 5

    loader = PrivateDataLoader(pdf[["a", "b"]], pdf["y"], 1, seed=3)
    dataset = loader._dataset(epochs)
    assert dataset.element_spec[0].shape.as_list() == [None, 2] and dataset.element_spec[1].shape.as_list() == [None]
    assert int(dataset.cardinality()) == loader.total_steps(epochs) == len(expected)
    # The dataset yields the same batches, in order across epochs, as _epoch_batches with the same seed.
    assert same([(x.numpy(), y.numpy()) for x, y in dataset], expected)

    model = tf.keras.Sequential(
        [tf.keras.layers.Dense(4, activation="relu", input_shape=(2,)), tf.keras.layers.Dense(1, activation="sigmoid")]
    )
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="mse")
    empty_x, empty_y = expected[0]
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(empty_x, empty_y)  # an empty batch: zero loss, no update, no crash
    assert loss == 0.0
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))

    fresh = PrivateDataLoader(pdf[["a", "b"]], pdf["y"], 1, seed=3)
    history = model.fit(fresh._dataset(epochs), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert not all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_dataset_with_feature_shape_and_label_matrix():
    import tensorflow as tf

    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(50, 8)), columns=[f"f{i}" for i in range(8)])
    df["t1"], df["t2"] = rng.normal(size=50), rng.normal(size=50)
    pdf = private(df)
    loader = PrivateDataLoader(pdf[[f"f{i}" for i in range(6)]], pdf[["t1", "t2"]], 10, feature_shape=(3, 2))
    dataset = loader._dataset(1.5)
    assert dataset.element_spec == (
        tf.TensorSpec((None, 3, 2), tf.float32),
        tf.TensorSpec((None, 2), tf.float32),
    )
    batches = list(dataset)
    assert len(batches) == loader.total_steps(1.5) == 8
    assert all(x.shape[1:] == (3, 2) and y.shape[1:] == (2,) for x, y in batches)


# -- the graph-side sampler that PrivateKerasModel.fit uses ------------------------------------


def graph_row_ids(loader: PrivateDataLoader, steps: int) -> list[np.ndarray]:
    import tensorflow as tf

    sample = tf.function(loader._graph_sampler(), input_signature=[tf.TensorSpec([2], tf.int64)])
    seed = loader._sampling_seed()
    batches = []
    for step in range(steps):
        x, y = sample(tf.random.experimental.stateless_fold_in(seed, tf.constant(step, tf.int64)))
        np.testing.assert_array_equal(y.numpy(), 2 * x.numpy()[:, 0] + 1)
        batches.append(x.numpy()[:, 0].astype(np.int64))
    return batches


@pytest.mark.slow
@pytest.mark.parametrize("n,b", [(1000, 50), (100, 1), (10, 8)])
def test_graph_sampler_follows_poisson_sampling(n, b):
    q = b / n
    pdf = id_frame(n)
    loader = PrivateDataLoader(pdf[["id"]], pdf["y"], b, seed=3)
    steps = 2000
    batches = graph_row_ids(loader, steps)
    for rows in batches:
        assert np.unique(rows).size == rows.size and (rows >= 0).all() and (rows < n).all()
    sizes = np.array([rows.size for rows in batches], dtype=float)
    mean, var = n * q, n * q * (1 - q)
    assert abs(sizes.mean() - mean) < 4 * math.sqrt(var / steps)
    mu4 = var * (1 + 3 * (n - 2) * q * (1 - q))
    assert abs(sizes.var(ddof=1) - var) < 4 * math.sqrt((mu4 - var**2 * (steps - 3) / (steps - 1)) / steps)
    counts = np.bincount(np.concatenate(batches), minlength=n)
    z = (counts - steps * q) / math.sqrt(steps * q * (1 - q))
    assert np.abs(z).max() < 5.0
    if n == 100:  # P(empty batch) = (1 - q)^n
        p_empty = (1 - q) ** n
        assert abs((sizes == 0).mean() - p_empty) < 4 * math.sqrt(p_empty * (1 - p_empty) / steps)


def test_graph_sampler_is_reproducible_only_with_a_seed():
    pdf = id_frame(500)
    same = [graph_row_ids(PrivateDataLoader(pdf[["id"]], pdf["y"], 20, seed=5), 5) for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*same, strict=True))
    other = graph_row_ids(PrivateDataLoader(pdf[["id"]], pdf["y"], 20), 5)
    assert not all(np.array_equal(a, b) for a, b in zip(same[0], other, strict=True))
