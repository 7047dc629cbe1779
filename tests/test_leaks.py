"""The leak catalog: every way we know to try to get a raw value out of private data.

What this protects against is *accidental* release: a user (or a library they pass the
object to: pandas, numpy, TensorFlow, Keras, scikit-learn, json, pickle, R) reaching for
rows through the usual doors. Python cannot stop a determined user of the same process
from reading private attributes (``obj._data``, ``loader._x``, ``gc.get_referents``), and
this catalog does not try those.

Every path is one row of ``PATHS``: ``(name, attempt, outcome)``, applied to every kind of
private object in ``private_objects`` (frames, selections, series, derived and compared
series, derived frames, train/test parts, predictions on private data) and, with its own
outcome, to ``PrivateDataLoader``. Outcomes:

* ``REFUSED``: must raise ``PrivacyError``;
* ``PUBLIC``: output is allowed (repr, schema, a new private object) and must not contain
  the secret values;
* ``NO_SUCH``: not offered at all; ``PrivacyError`` or a plain ``AttributeError``,
  ``TypeError``, ``KeyError`` or ``ValueError`` (from pandas, numpy, Keras ...) is fine.

In every case, an exception message must not contain the secret either. New paths are
added to ``PATHS``; nothing else needs to change. The ledger file and the saved model's
``privacy.json`` are checked byte for byte for the secrets at the end.
"""

import copy
import io
import json
import operator
import pickle
import sys
import warnings
import zipfile

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import op_tensorflow as ot
from op_tensorflow import r as otr

warnings.filterwarnings("ignore", category=ot.PrivacyWarning)

SECRET = 987654.321  # one value of column "x"
SECRET_STRING = "zebra-secret-city"  # one value of the string column "city" and a category of "cat"
NEEDLES = ("987654", "9.87654", "87654.3", SECRET_STRING, "zebra")
REFUSED, PUBLIC, NO_SUCH = "refused", "public", "no such"
ALLOWED_ERRORS = (AttributeError, TypeError, KeyError, ValueError, tf.errors.OpError)


def contains_secret(text) -> bool:
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return any(needle in str(text) for needle in NEEDLES)


def make_df(n=120, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "x": rng.uniform(0, 10, n),
            "x2": rng.normal(0, 1, n),
            "y": rng.integers(0, 2, n).astype(float),
            "city": rng.choice(["a", "b"], n).astype(object),
        }
    )
    df.loc[3, "x"] = SECRET
    df.loc[5, "city"] = SECRET_STRING
    df["cat"] = pd.Categorical(df["city"])  # categories inferred from the data: they are data too
    return df


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A private frame with a file ledger, aggregates run on it, a trained model and its file."""
    tmp = tmp_path_factory.mktemp("leaks")
    budget = ot.PrivacyBudget(1000.0, 1e-6, path=tmp / "ledger.json")
    pdf = ot.PrivateDataFrame(make_df(), metadata={"x": (0, 10), "x2": (-3, 3), "y": (0, 1)}, budget=budget)
    X, y = pdf[["x", "x2"]], pdf["y"]
    X_train, X_test, y_train, y_test = ot.train_test_split(X, y, test_size=0.25, random_state=0)
    # aggregates of every kind, on the secret's column and rows
    pdf.count(eps=1.0)
    pdf["x"].mean(eps=1.0)
    pdf["x"].sum(eps=1.0, mechanism="gaussian")
    pdf["city"].count(eps=1.0)
    pdf[["x", "x2"]].describe(eps=1.0)
    (pdf["city"] == SECRET_STRING).sum(eps=1.0)
    loader = ot.PrivateDataLoader(X_train, y_train, batch_size=10, seed=0)
    keras_model = tf.keras.Sequential([tf.keras.layers.Dense(1, activation="sigmoid", input_shape=(2,))])
    dp_model = ot.PrivateKerasModel(keras_model, l2_norm_clip=1.0, noise_multiplier=1.1, seed=0)
    dp_model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    dp_model.fit(loader, epochs=1, verbose=0)
    predictions = dp_model.predict(X_test, label_columns=["p"])
    dp_model.evaluate(X_test, y_test, eps=1.0)
    dp_model.save(tmp / "model.optf")
    # The catalog's objects: the same data on an in-memory ledger with one charge (every repr
    # composes the ledger, and the file ledger's DP-SGD entry makes that slow).
    same = ot.PrivateDataFrame(make_df(), metadata=dict(pdf.metadata), budget=ot.PrivacyBudget(1000.0, 1e-6))
    same.count(eps=0.5)
    X, y = same[["x", "x2"]], same["y"]
    X_train, X_test, y_train, y_test = ot.train_test_split(X, y, test_size=0.25, random_state=1)
    objects = {
        "frame": same,
        "selection": X,
        "series": same["x"],
        "string series": same["city"],
        "categorical series": same["cat"],
        "derived series": same["x"] * 2 + 1,
        "compared series": same["x"] > 5,
        "derived frame": X * 3,
        "train part": X_train,
        "test part": y_test,
        "predictions on private data": dp_model.predict(X_test, label_columns=["p"]),
        "predictions of the fitted split": predictions,
    }
    # private arrays (sequences) with the secret inside, and a frame wide enough for the multi-line repr
    features, labels = ot.private_arrays(
        *make_arrays(), feature_bounds=(0, 10), label_bounds=(0, 1), budget=ot.PrivacyBudget(1000.0, 1e-6)
    )
    a_train, a_test, b_train, b_test = ot.train_test_split(features, labels, test_size=0.25, random_state=2)
    wide = make_df()
    for j in range(30):
        wide[f"w{j}"] = wide["x"]
    objects.update(
        {
            "array features": features,
            "array labels": labels,
            "array train part": a_train,
            "array test labels": b_test,
            "wide frame": ot.PrivateDataFrame(wide, metadata={"x": (0, 10)}, budget=ot.PrivacyBudget(1000.0, 1e-6)),
        }
    )
    loader = ot.PrivateDataLoader(X_train, y_train, batch_size=10, seed=0)
    array_loader = ot.PrivateDataLoader(a_train, b_train, batch_size=10, seed=0)
    return {
        "tmp": tmp,
        "pdf": pdf,
        "objects": objects,
        "loader": loader,
        "array_loader": array_loader,
        "dp_model": dp_model,
    }


def make_arrays(n=120):
    """Sequences (n, 4, 3) and labels with the secret in one feature slot of example 3."""
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 10, (n, 4, 3)), rng.integers(0, 2, n).astype(float)
    x[3, 1, 2] = SECRET
    return x, y


# (name, attempt, outcome for private data, outcome for PrivateDataLoader). One row per path.
PATHS = [
    # -- the pandas/numpy doors
    ("values", lambda o: o.values, REFUSED, NO_SUCH),
    ("to_numpy", lambda o: o.to_numpy(), REFUSED, NO_SUCH),
    ("np.asarray", lambda o: np.asarray(o), REFUSED, REFUSED),
    ("np.array", lambda o: np.array(o), REFUSED, REFUSED),
    ("np.array float", lambda o: np.array(o, dtype=float), REFUSED, REFUSED),
    ("np.max", lambda o: np.max(o), REFUSED, REFUSED),
    ("np.sort", lambda o: np.sort(o), REFUSED, REFUSED),
    ("np.unique", lambda o: np.unique(o), REFUSED, REFUSED),
    ("ufunc np.exp", lambda o: np.exp(o), REFUSED, REFUSED),
    ("ufunc np.add", lambda o: np.add(o, 1.0), REFUSED, REFUSED),
    ("ndarray + obj", lambda o: np.zeros(1) + o, REFUSED, REFUSED),
    ("np.sum", lambda o: np.sum(o), NO_SUCH, REFUSED),  # calls obj.sum(axis=...): eps is required
    ("np.mean", lambda o: np.mean(o), NO_SUCH, REFUSED),
    # -- iteration and containers
    ("list", lambda o: list(o), REFUSED, REFUSED),
    ("iter", lambda o: iter(o), REFUSED, REFUSED),
    ("next(iter)", lambda o: next(iter(o)), REFUSED, REFUSED),
    ("tuple", lambda o: tuple(o), REFUSED, REFUSED),
    ("sorted", lambda o: sorted(o), REFUSED, REFUSED),
    ("builtin sum", lambda o: sum(o), REFUSED, REFUSED),
    ("builtin max", lambda o: max(o), REFUSED, REFUSED),
    ("set", lambda o: set(o), REFUSED, REFUSED),
    ("dict", lambda o: dict(o), REFUSED, REFUSED),
    ("bytes", lambda o: bytes(o), REFUSED, REFUSED),
    ("enumerate", lambda o: list(enumerate(o)), REFUSED, REFUSED),
    ("zip", lambda o: list(zip(o, o, strict=False)), REFUSED, REFUSED),
    ("in", lambda o: SECRET in o, REFUSED, REFUSED),
    ("bool", lambda o: bool(o), REFUSED, REFUSED),
    ("len", lambda o: len(o), PUBLIC, REFUSED),  # row count: public for data, refused for the loader
    # -- positional and label access
    ("iloc", lambda o: o.iloc[0], REFUSED, NO_SUCH),
    ("iloc property", lambda o: o.iloc, REFUSED, NO_SUCH),
    ("loc", lambda o: o.loc[0], REFUSED, NO_SUCH),
    ("at", lambda o: o.at[0, "x"], REFUSED, NO_SUCH),
    ("iat", lambda o: o.iat[0, 0], REFUSED, NO_SUCH),
    ("index", lambda o: o.index, REFUSED, NO_SUCH),
    ("slice [0:3]", lambda o: o[0:3], REFUSED, REFUSED),
    ("[0]", lambda o: o[0], NO_SUCH, REFUSED),  # a frame looks up column 0 (KeyError); a series refuses
    ("[unknown]", lambda o: o["no such column"], NO_SUCH, REFUSED),
    ("head", lambda o: o.head(), REFUSED, NO_SUCH),
    ("tail", lambda o: o.tail(), REFUSED, NO_SUCH),
    ("sample", lambda o: o.sample(1), REFUSED, NO_SUCH),
    # -- export
    ("to_pandas", lambda o: o.to_pandas(), REFUSED, NO_SUCH),
    ("to_csv", lambda o: o.to_csv(io.StringIO()), REFUSED, NO_SUCH),
    ("to_dict", lambda o: o.to_dict(), REFUSED, NO_SUCH),
    ("to_json", lambda o: o.to_json(), REFUSED, NO_SUCH),
    ("to_list", lambda o: o.to_list(), REFUSED, NO_SUCH),
    ("tolist", lambda o: o.tolist(), REFUSED, NO_SUCH),
    ("to_string", lambda o: o.to_string(), NO_SUCH, NO_SUCH),
    ("to_records", lambda o: o.to_records(), NO_SUCH, NO_SUCH),
    ("to_markdown", lambda o: o.to_markdown(), NO_SUCH, NO_SUCH),
    ("to_parquet", lambda o: o.to_parquet(io.BytesIO()), NO_SUCH, NO_SUCH),
    ("items", lambda o: list(o.items()), NO_SUCH, NO_SUCH),
    ("iterrows", lambda o: list(o.iterrows()), NO_SUCH, NO_SUCH),
    ("itertuples", lambda o: list(o.itertuples()), NO_SUCH, NO_SUCH),
    ("unique", lambda o: o.unique(), NO_SUCH, NO_SUCH),
    ("value_counts", lambda o: o.value_counts(), NO_SUCH, NO_SUCH),
    ("max()", lambda o: o.max(), NO_SUCH, NO_SUCH),
    ("quantile", lambda o: o.quantile(0.5), NO_SUCH, NO_SUCH),
    ("sort_values", lambda o: o.sort_values(), NO_SUCH, NO_SUCH),
    ("mean() without eps", lambda o: o.mean(), NO_SUCH, NO_SUCH),
    ("describe() without eps", lambda o: o.describe(), NO_SUCH, NO_SUCH),
    ("float", lambda o: float(o), NO_SUCH, NO_SUCH),
    ("int", lambda o: int(o), NO_SUCH, NO_SUCH),
    ("operator.index", lambda o: operator.index(o), NO_SUCH, NO_SUCH),
    ("memoryview", lambda o: memoryview(o), NO_SUCH, NO_SUCH),
    # -- serialization and copies
    ("pickle", lambda o: pickle.dumps(o), REFUSED, REFUSED),
    ("pickle protocol 0", lambda o: pickle.dumps(o, protocol=0), REFUSED, REFUSED),
    ("__reduce_ex__", lambda o: o.__reduce_ex__(2), REFUSED, REFUSED),
    ("__getstate__", lambda o: o.__getstate__(), REFUSED, REFUSED),
    ("copy.deepcopy", lambda o: copy.deepcopy(o), REFUSED, REFUSED),
    ("copy.copy", lambda o: copy.copy(o), PUBLIC, REFUSED),  # a new private object on the same ledger
    ("json.dumps", lambda o: json.dumps(o), NO_SUCH, NO_SUCH),
    ("json.dumps default=str", lambda o: json.dumps(o, default=str), PUBLIC, PUBLIC),
    # -- text
    ("str", lambda o: str(o), PUBLIC, PUBLIC),
    ("repr", lambda o: repr(o), PUBLIC, PUBLIC),
    ("_repr_html_", lambda o: o._repr_html_(), PUBLIC, NO_SUCH),
    ("format", lambda o: format(o), PUBLIC, PUBLIC),
    ("f-string !s !r !a", lambda o: f"{o!s} {o!r} {o!a}", PUBLIC, PUBLIC),
    ("format spec", lambda o: format(o, ".3f"), NO_SUCH, NO_SUCH),
    ("print", lambda o: print(o, file=io.StringIO()), PUBLIC, PUBLIC),
    # -- introspection
    ("dir", lambda o: dir(o), PUBLIC, PUBLIC),
    ("vars", lambda o: vars(o), NO_SUCH, NO_SUCH),
    ("__dict__", lambda o: o.__dict__, NO_SUCH, NO_SUCH),
    ("dtypes/dtype", lambda o: o.dtypes if hasattr(o, "dtypes") else o.dtype, PUBLIC, NO_SUCH),
    ("repr of dtypes", lambda o: repr(dict(o.dtypes)) if hasattr(o, "dtypes") else repr(o.dtype), PUBLIC, NO_SUCH),
    ("metadata", lambda o: o.metadata, PUBLIC, NO_SUCH),
    ("shape", lambda o: o.shape, PUBLIC, NO_SUCH),
    ("budget", lambda o: o.budget, PUBLIC, PUBLIC),
    ("sys.getsizeof", lambda o: sys.getsizeof(o), PUBLIC, PUBLIC),
    ("setattr", lambda o: setattr(o, "_data", None), NO_SUCH, NO_SUCH),
    # -- other libraries
    ("pd.DataFrame", lambda o: pd.DataFrame(o), REFUSED, REFUSED),
    ("pd.Series", lambda o: pd.Series(o), REFUSED, REFUSED),
    ("pd.DataFrame dict", lambda o: pd.DataFrame({"a": o}), REFUSED, NO_SUCH),
    ("pd.concat", lambda o: pd.concat([o]), NO_SUCH, NO_SUCH),
    ("df.assign", lambda o: pd.DataFrame(index=range(o.shape[0])).assign(b=o), REFUSED, NO_SUCH),
    ("tf.constant", lambda o: tf.constant(o), REFUSED, REFUSED),
    ("tf.convert_to_tensor", lambda o: tf.convert_to_tensor(o), REFUSED, REFUSED),
    ("tf.Variable", lambda o: tf.Variable(o), REFUSED, REFUSED),
    ("Dataset.from_tensor_slices", lambda o: tf.data.Dataset.from_tensor_slices(o), REFUSED, REFUSED),
    ("keras Model.predict", lambda o: tf.keras.Sequential([tf.keras.layers.Dense(1)]).predict(o), NO_SUCH, NO_SUCH),
    (
        "sklearn train_test_split",
        lambda o: __import__("sklearn.model_selection").model_selection.train_test_split(o),
        REFUSED,
        NO_SUCH,
    ),
    ("r.to_r", lambda o: (pytest.importorskip("rpy2"), otr.to_r(o)), REFUSED, REFUSED),
]


def check_path(obj, attempt, outcome):
    """Runs ``attempt(obj)`` and checks it against ``outcome``; returns the output or None."""
    try:
        out = attempt(obj)
    except ot.PrivacyError as e:
        assert not contains_secret(e), f"the refusal's message contains a secret: {e}"
        assert "private" in str(e).lower()
        return None
    except ALLOWED_ERRORS as e:
        assert outcome == NO_SUCH, f"expected {outcome}, got {type(e).__name__}: {e}"
        assert not contains_secret(e), f"the error message contains a secret: {e}"
        return None
    assert outcome == PUBLIC, f"expected {outcome}, but it returned {type(out).__name__}"
    assert_no_secret(out)
    return out


def assert_no_secret(out) -> None:
    if isinstance(out, np.ndarray | pd.DataFrame | pd.Series | pd.Index | tf.Tensor):
        shown = np.asarray(out).tolist()
        assert not contains_secret(shown), f"raw data came out: {out!r}"
    assert not contains_secret(repr(out)) and not contains_secret(str(out)), f"a secret came out: {out!r}"


@pytest.mark.parametrize("name,attempt,outcome,_", PATHS, ids=[p[0] for p in PATHS])
def test_private_data_does_not_leak(world, name, attempt, outcome, _):
    for kind, obj in world["objects"].items():
        try:
            out = check_path(obj, attempt, outcome)
        except AssertionError as e:
            raise AssertionError(f"{name} on the {kind}: {e}") from None
        if out is not None and name == "copy.copy":
            assert type(out) is type(obj) and out.budget is obj.budget


@pytest.mark.parametrize("name,attempt,_,outcome", PATHS, ids=[p[0] for p in PATHS])
def test_loader_does_not_leak(world, name, attempt, _, outcome):
    check_path(world["loader"], attempt, outcome)
    check_path(world["array_loader"], attempt, outcome)  # from private_arrays: a multi-line repr


def test_compact_reprs_show_only_schema_metadata_and_budget(world):
    """The multi-line reprs of wide frames, private arrays and their loader: no value, at most 20 lines."""
    objects = world["objects"]
    for kind in ("wide frame", "array features", "array train part"):
        text = repr(objects[kind])
        assert "\n" in text and len(text.splitlines()) <= 20, f"{kind}: {text}"
        assert not contains_secret(text) and not contains_secret(str(objects[kind]))
    assert "per-example shape: (4, 3)" in repr(objects["array features"])
    assert "... and 25 more columns" in repr(objects["wide frame"])
    loader_text = repr(world["array_loader"])
    assert "input_shape=(4, 3)" in loader_text and not contains_secret(loader_text)


def test_every_public_attribute_is_data_free(world):
    """A sweep over ``dir()``: every public attribute, and every public method callable without
    arguments, is refused or gives an answer without the secret (new attributes are covered too)."""
    targets = {**world["objects"], "loader": world["loader"], "array loader": world["array_loader"]}
    for kind, obj in targets.items():
        for name in dir(obj):
            if name.startswith("_"):
                continue
            try:
                value = getattr(obj, name)
                if callable(value):
                    value = value()
            except ot.PrivacyError as e:
                assert not contains_secret(e)
                continue
            except (TypeError, ValueError) as e:  # a method that needs arguments (eps=..., columns, ...)
                assert not contains_secret(e), f"{kind}.{name}: {e}"
                continue
            if isinstance(value, ot.PrivateDataFrame | ot.PrivateSeries | ot.PrivacyBudget):
                continue  # private results and the ledger are checked by the catalog and below
            try:
                assert_no_secret(value)
            except AssertionError as e:
                raise AssertionError(f"{kind}.{name}: {e}") from None


def test_categorical_dtype_does_not_show_the_data_categories(world):
    cat = world["objects"]["categorical series"]
    assert str(cat.dtype) == "category" and cat.dtype.categories is None
    assert world["pdf"].dtypes["cat"].categories is None
    assert world["pdf"].dtypes["x"] == np.float64  # other dtypes are as in pandas


def test_public_results_are_not_private_data(world):
    """What comes out on purpose: DP aggregates are plain numbers, and the ledger a summary."""
    pdf = world["pdf"]
    answer = pdf["x"].mean(eps=1.0)
    assert isinstance(answer, float) and 0 <= answer <= 10  # clamped to the public bounds
    described = pdf[["x", "x2"]].describe(eps=1.0)
    assert_no_secret(described)
    assert_no_secret(pdf.budget.report())
    assert_no_secret([e.to_dict() for e in pdf.budget.entries])


def test_the_model_refuses_private_data_on_its_public_paths(world):
    dp_model, objects, loader = world["dp_model"], world["objects"], world["loader"]
    for attempt in (
        lambda: dp_model.predict(loader),
        lambda: dp_model.evaluate(objects["selection"], objects["series"]),  # eps missing
        lambda: dp_model.fit(objects["selection"]),
        lambda: dp_model.fit(loader, validation_data=(objects["selection"], objects["series"])),
        lambda: dp_model.evaluate(np.zeros((2, 2)), objects["series"]),
    ):
        with pytest.raises((ot.PrivacyError, TypeError, ValueError)) as info:
            attempt()
        assert not contains_secret(info.value)


def test_files_hold_no_data_values(world):
    """The ledger JSON and the saved model's metadata never contain data values."""
    tmp = world["tmp"]
    ledger = (tmp / "ledger.json").read_bytes()
    assert not contains_secret(ledger), "the ledger file contains a data value"
    assert len(json.loads(ledger)["entries"]) >= 9  # the aggregates and the fit above were recorded
    with zipfile.ZipFile(tmp / "model.optf") as bundle:
        privacy = bundle.read("privacy.json")
        keras_file = bundle.read("model.keras")
    assert not contains_secret(privacy), "privacy.json contains a data value"
    assert set(json.loads(privacy)) == {
        "format",
        "version",
        "l2_norm_clip",
        "noise_multiplier",
        "epsilon",
        "delta",
        "sampling_rate",
        "steps",
    }
    with zipfile.ZipFile(io.BytesIO(keras_file)) as inner:
        for name in inner.namelist():
            if name.endswith(".json"):  # architecture and metadata; the weights are DP-trained
                assert not contains_secret(inner.read(name)), f"{name} in the model contains a data value"
