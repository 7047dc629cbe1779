"""op_tensorflow.r and the R package against the Python core, through real rpy2 and R.

The conversion tests run R embedded in this process with rpy2 (no reticulate involved).

The parity tests drive the R package ``optensorflow`` (installed from ``r_pkg/`` into a
temporary library) through rpy2 in a *subprocess*: this file run as a script. There,
reticulate 1.28 attaches to the subprocess's own Python interpreter (same pid, same
``op_tensorflow`` module object), so the R wrappers call the same Python core. It is not
done in this process because reticulate 1.28's finalizers call ``Py_DecRef`` without the
GIL (rpy2's cffi calls release it): an R garbage collection that frees a Python dict or
list, or R's exit finalizers, abort the process ("PyThreadState_Get: the function must be
called with the GIL held"). The subprocess runs the R code inside a ``reticulate::py_func``
callback, where the GIL is held, collects R's garbage there, prints its results as JSON
and leaves with ``os._exit`` (skipping R's exit finalizers).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings

import dp_accounting
import numpy as np
import pandas as pd
import pytest

# R must see these before rpy2 starts it (here and in the subprocess).
os.environ["RETICULATE_PYTHON"] = sys.executable
if os.path.isdir("/usr/lib/R/lib"):
    os.environ.setdefault("R_LD_LIBRARY_PATH", "/usr/lib/R/lib")

pytest.importorskip("rpy2", reason="rpy2 is not installed (pip install op-tensorflow[r])")
try:
    import rpy2.robjects as ro
except Exception as err:  # noqa: BLE001 - rpy2 is there but R is missing or broken
    pytest.skip(f"rpy2 cannot start R: {err}", allow_module_level=True)

import op_tensorflow as ot  # noqa: E402
from op_tensorflow import r as otr  # noqa: E402
from op_tensorflow.frame import _raw  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_MARKER = "@@op_tensorflow-r-parity@@"


def r_frame(code: str) -> ro.vectors.DataFrame:
    return ro.r(code)


MIXED = """data.frame(
  num = c(1.5, NA, NaN, 4),
  int = c(1L, NA, 3L, 4L),
  int_full = c(1L, 2L, 3L, -4L),
  lgl = c(TRUE, NA, FALSE, TRUE),
  lgl_full = c(TRUE, FALSE, FALSE, TRUE),
  chr = c("a", NA, "c", "NaN"),
  fct = factor(c("lo", NA, "hi", "lo"), levels = c("lo", "mid", "hi")),
  stringsAsFactors = FALSE, row.names = c("r1", "r2", "r3", "r4"))"""


# --- from_r -------------------------------------------------------------------------------


def test_from_r_numeric_na_and_nan_are_missing():
    pdf = otr.from_r(r_frame(MIXED))
    num = _raw(pdf)["num"]
    assert num.dtype == np.float64
    assert num.isna().tolist() == [False, True, True, False]
    assert num[0] == 1.5 and num[3] == 4.0


def test_from_r_integer_columns():
    data = _raw(otr.from_r(r_frame(MIXED)))
    assert data["int"].dtype == np.float64  # NA_integer_ forces float with NaN
    assert data["int"].isna().tolist() == [False, True, False, False]
    assert data["int"].dropna().tolist() == [1.0, 3.0, 4.0]
    assert data["int_full"].dtype == np.int64  # no NA: stays integer
    assert data["int_full"].tolist() == [1, 2, 3, -4]


def test_from_r_logical_columns():
    data = _raw(otr.from_r(r_frame(MIXED)))
    assert data["lgl"].dtype == np.float64
    assert data["lgl"].isna().tolist() == [False, True, False, False]
    assert data["lgl"].dropna().tolist() == [1.0, 0.0, 1.0]
    assert data["lgl_full"].dtype == bool
    assert data["lgl_full"].tolist() == [True, False, False, True]


def test_from_r_character_columns():
    chr_ = _raw(otr.from_r(r_frame(MIXED)))["chr"]
    assert chr_.dtype == object
    assert chr_.isna().tolist() == [False, True, False, False]
    assert chr_[1] is None
    assert [chr_[0], chr_[2], chr_[3]] == ["a", "c", "NaN"]  # the string "NaN" is data, not missing
    assert all(type(v) is str for v in chr_.dropna())  # plain str, not rpy2's NA-aware subclass


def test_from_r_factor_is_categorical_with_levels_as_metadata():
    pdf = otr.from_r(r_frame(MIXED))
    fct = _raw(pdf)["fct"]
    assert isinstance(fct.dtype, pd.CategoricalDtype)
    assert list(fct.cat.categories) == ["lo", "mid", "hi"]  # unused levels kept
    assert fct.isna().tolist() == [False, True, False, False]
    assert fct.astype(object).where(fct.notna(), None).tolist() == ["lo", None, "hi", "lo"]
    assert pdf.metadata == {"fct": ["lo", "mid", "hi"]}
    assert pdf["fct"].metadata == ["lo", "mid", "hi"]


def test_from_r_ordered_factor_and_explicit_metadata():
    df = r_frame('data.frame(g = factor(c("b", "a", NA), levels = c("a", "b"), ordered = TRUE), x = c(1, 2, 3))')
    data = _raw(otr.from_r(df))
    assert data["g"].cat.ordered and list(data["g"].cat.categories) == ["a", "b"]
    pdf = otr.from_r(df, metadata={"x": (0, 5)})  # given metadata is used as is
    assert pdf.metadata == {"x": (0.0, 5.0)}


def test_from_r_dates_and_datetimes():
    df = r_frame(
        'data.frame(d = as.Date(c("2024-02-29", NA)), t = as.POSIXct(c("2024-01-01 12:00:00", NA), tz = "UTC"))'
    )
    data = _raw(otr.from_r(df))
    assert data["d"].tolist()[0] == pd.Timestamp("2024-02-29") and data["d"].isna().tolist() == [False, True]
    assert data["t"].tolist()[0] == pd.Timestamp("2024-01-01 12:00:00", tz="UTC")
    assert data["t"].isna().tolist() == [False, True]


def test_from_r_gives_a_private_frame_with_budget_and_no_row_names():
    budget = ot.PrivacyBudget(2.0, 1e-6)
    pdf = otr.from_r(r_frame(MIXED), metadata={"num": (0, 10)}, budget=budget)
    assert isinstance(pdf, ot.PrivateDataFrame)
    assert pdf.budget is budget
    assert pdf.columns == ["num", "int", "int_full", "lgl", "lgl_full", "chr", "fct"]
    assert len(pdf) == 4
    assert isinstance(_raw(pdf).index, pd.RangeIndex)  # R row names dropped
    with pytest.raises(ot.PrivacyError):
        pdf.values  # noqa: B018
    pdf["num"].count(eps=0.5)  # NaN rows are missing for DP aggregates too
    assert budget.spent() > 0


def test_from_r_accepts_a_tibble_like_data_frame_and_refuses_others():
    tbl = ro.r('structure(list(a = c(1, NA)), class = c("tbl_df", "tbl", "data.frame"), row.names = c(NA, -2L))')
    assert _raw(otr.from_r(tbl))["a"].isna().tolist() == [False, True]
    with pytest.raises(TypeError, match="R data.frame"):
        otr.from_r(ro.r("c(1, 2, 3)"))
    with pytest.raises(TypeError, match="already a pandas DataFrame"):
        otr.from_r(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(TypeError, match="R data.frame"):
        otr.from_r([1, 2])
    with pytest.raises(ValueError, match="at least one row"):
        otr.from_r(r_frame("data.frame(a = numeric(0))"))


# --- read_rds -------------------------------------------------------------------------------


def test_read_rds_round_trip(tmp_path):
    path = tmp_path / "data.rds"
    ro.baseenv["saveRDS"](r_frame(MIXED), str(path))
    budget = ot.PrivacyBudget(1.0, 1e-6)
    from_file = otr.read_rds(path, budget=budget)
    direct = otr.from_r(r_frame(MIXED))
    pd.testing.assert_frame_equal(_raw(from_file), _raw(direct))
    assert from_file.metadata == {"fct": ["lo", "mid", "hi"]}
    assert from_file.budget is budget
    assert otr.read_rds(str(path), metadata={"num": (0, 5)}).metadata == {"num": (0.0, 5.0)}


def test_read_rds_refuses_what_is_not_a_data_frame(tmp_path):
    vector = tmp_path / "vector.rds"
    ro.baseenv["saveRDS"](ro.r("list(a = 1, b = 'x')"), str(vector))
    with pytest.raises(TypeError, match=str(vector)) as info:
        otr.read_rds(vector)
    assert "not a data.frame" in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing.rds"):
        otr.read_rds(tmp_path / "missing.rds")
    garbage = tmp_path / "garbage.rds"
    garbage.write_bytes(b"this is not an rds file")
    with pytest.raises(ValueError, match="garbage.rds"):
        otr.read_rds(garbage)


# --- to_r -----------------------------------------------------------------------------------


def r_str(value) -> str:
    ro.globalenv[".op_tensorflow_test_value"] = value
    return "\n".join(ro.r("capture.output(str(.op_tensorflow_test_value))"))


def column(frame, name) -> list:
    return list(frame.rx2(name))


def test_to_r_history():
    import tensorflow as tf

    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((8, 2), np.float32), np.zeros(8, np.float32)
    history = model.fit(x, y, epochs=3, validation_data=(x, y), verbose=0)
    frame = otr.to_r(history)
    assert isinstance(frame, ro.vectors.DataFrame)
    assert list(frame.names) == ["epoch", "loss", "val_loss"]
    assert list(ro.baseenv["class"](frame.rx2("epoch"))) == ["integer"]
    assert column(frame, "epoch") == [1, 2, 3]  # 1-based, as in R
    assert column(frame, "loss") == [float(v) for v in history.history["loss"]]
    assert column(frame, "val_loss") == [float(v) for v in history.history["val_loss"]]


def test_to_r_budget_report_and_entries():
    budget = ot.PrivacyBudget(3.0, 1e-6)
    pdf = ot.PrivateDataFrame(pd.DataFrame({"x": np.linspace(0, 1, 50)}), metadata={"x": (0, 1)}, budget=budget)
    pdf["x"].mean(eps=0.5)
    reservation = budget.reserve(dp_accounting.LaplaceDpEvent(4.0), "planned")
    report = otr.to_r(budget)
    assert report.nrow == 1
    expected = budget.report()
    assert list(report.names) == list(expected)
    for key, value in expected.items():
        assert column(report, key) == [value], key
    entries = otr.to_r(budget.entries)
    assert list(entries.names) == [
        "id",
        "status",
        "description",
        "timestamp",
        "committed_at",
        "event",
        "reserved_event",
    ]
    assert column(entries, "status") == ["committed", "reserved"]
    assert column(entries, "description") == ["mean('x', eps=0.5, laplace)", "planned"]
    assert column(entries, "timestamp") == [e.timestamp for e in budget.entries]
    assert json.loads(column(entries, "event")[1]) == {"type": "LaplaceDpEvent", "noise_multiplier": 4.0}
    assert list(ro.r("is.na")(entries.rx2("committed_at"))) == [False, True]  # None -> NA
    assert list(ro.r("is.na")(entries.rx2("reserved_event"))) == [True, True]
    reservation.cancel()
    empty = otr.to_r(ot.PrivacyBudget(1.0, 1e-6).entries)
    assert empty.nrow == 0 and "chr" in r_str(empty)
    assert column(otr.to_r({"epsilon": math.inf, "accountant": "rdp"}), "epsilon") == [math.inf]


def test_to_r_numpy_and_pandas():
    matrix = otr.to_r(np.array([[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]], dtype=np.float32))
    assert list(matrix.names) == ["V1", "V2"] and matrix.nrow == 3
    assert column(matrix, "V1") == [0.25, 0.5, 1.0]
    assert list(ro.r("row.names")(matrix)) == ["1", "2", "3"]  # R's automatic row names
    vector = otr.to_r(np.array([1.5, np.nan]))
    assert list(ro.r("is.na")(vector.rx2("V1"))) == [False, True]
    frame = otr.to_r(
        pd.DataFrame(
            {
                "p": [0.1, 0.9],
                "label": ["a", None],
                "k": pd.Categorical(["u", "v"]),
                "ok": [True, False],
                "big": [1, 2**40],
            }
        )
    )
    text = r_str(frame)
    assert "p    : num  0.1 0.9" in text
    assert 'label: chr  "a" NA' in text
    assert 'k    : Factor w/ 2 levels "u","v"' in text
    assert "ok   : logi  TRUE FALSE" in text
    assert "big  : num" in text  # beyond R's integer range: double
    assert column(otr.to_r(pd.Series([3.0, 4.0], name="pred")), "pred") == [3.0, 4.0]
    with pytest.raises(TypeError, match="to_r converts"):
        otr.to_r(object())
    with pytest.raises(ValueError, match="0-d"):
        otr.to_r(np.array(1.0))


def test_to_r_refuses_private_objects():
    df = pd.DataFrame({"x": [0.1, 0.2, 0.3, 0.4], "y": [0.0, 1.0, 0.0, 1.0]})
    pdf = ot.PrivateDataFrame(df, budget=(1.0, 1e-6))
    loader = ot.PrivateDataLoader(pdf[["x"]], pdf["y"], batch_size=2)
    for private in (pdf, pdf["x"], pdf[["x"]] * 2, loader):
        with pytest.raises(ot.PrivacyError, match="private rows"):
            otr.to_r(private)


def test_missing_rpy2_raises_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "rpy2.robjects", None)  # as if rpy2 were not installed
    with pytest.raises(ImportError, match=r"pip install op-tensorflow\[r\]"):
        otr.to_r(np.zeros(2))
    with pytest.raises(ImportError, match=r"pip install op-tensorflow\[r\]"):
        otr.from_r(None)
    pdf = ot.PrivateDataFrame(pd.DataFrame({"x": [1.0, 2.0]}))
    with pytest.raises(ot.PrivacyError):  # refused before rpy2 is even needed
        otr.to_r(pdf)


# --- parity with the R package -------------------------------------------------------------

# (sample_size, batch_size, num_epochs, noise_multiplier, target_delta, accountant). The PLD case
# converges by tolerance well within accounting's time cap, so its result does not depend on timing.
EPS_CASES = [
    (100000, 4, 20, 1.2, 1e-5, "rdp"),
    (3989, 32, 20, 1.1, 1e-6, "rdp"),
    (60000, 256, 2.5, 0.8, 1e-6, "rdp"),
    (3989, 32, 20, 1.1, 1e-6, "pld"),
]
PARAMS = {
    "ledger_epsilon": 5.0,
    "ledger_delta": 1e-6,
    "train_epsilon": 20.0,
    "train_delta": 1e-5,
    "tf_seed": 1234.0,
    "loader_seed": 7.0,
    "model_seed": 11.0,
    "batch_size": 32.0,
    "l2_norm_clip": 1.0,
    "noise_multiplier": 1.1,
    "learning_rate": 0.5,
}
METADATA = {"x1": (-4.0, 4.0), "x2": (-4.0, 4.0), "y": (0.0, 1.0)}

# Each DP aggregate the same on both sides: ("frame" | column, what, eps, mechanism).
AGGREGATES = [
    ("frame", "count", 0.1, "laplace"),
    ("x1", "mean", 0.2, "laplace"),
    ("y", "sum", 0.3, "gaussian"),
    (("x1", "x2"), "describe", 0.4, "laplace"),
    ("x2>0", "count", 0.05, "laplace"),
]

R_JOB = r"""
.op_job <- function() {
  .op_results <<- tryCatch(local({
    suppressPackageStartupMessages(library(optensorflow))
    cfg <- .op_cfg
    p <- cfg$params
    train <- readRDS(cfg$train)
    public <- readRDS(cfg$public)
    core <- reticulate::import("op_tensorflow", convert = FALSE)
    out <- list(
      r_pid = reticulate::py_eval("__import__('os').getpid()"),
      r_op_tensorflow_id = reticulate::py_id(core),
      reticulate_version = as.character(utils::packageVersion("reticulate")),
      optensorflow_path = find.package("optensorflow"),
      exports = getNamespaceExports("optensorflow")
    )

    out$epsilons <- vapply(cfg$eps_cases, function(case) {
      get_privacy_budget(case$sample_size, case$batch_size, case$num_epochs, case$noise_multiplier,
                         case$target_delta, accountant = case$accountant, verbose = FALSE)
    }, numeric(1))

    pdf <- private_data_frame(train, metadata = list(x1 = c(-4, 4), x2 = c(-4, 4), y = c(0, 1)),
                              epsilon = p$ledger_epsilon, delta = p$ledger_delta, path = cfg$ledger)
    dp_count(pdf, eps = 0.1)
    dp_mean(pdf$x1, eps = 0.2)
    dp_sum(pdf$y, eps = 0.3, mechanism = "gaussian")
    dp_describe(pdf[c("x1", "x2")], eps = 0.4)
    dp_count(pdf$x2 > 0, eps = 0.05)
    report <- privacy_budget(pdf)
    out$ledger_report <- report
    out$ledger_report_from_path <- privacy_budget(cfg$ledger)

    keras <- keras_module()
    keras$utils$set_random_seed(as.integer(p$tf_seed))
    model <- keras$Sequential(list(
      keras$layers$Dense(8L, activation = "relu", input_shape = list(2L)),
      keras$layers$Dense(1L, activation = "sigmoid")
    ))
    train_pdf <- private_data_frame(train, epsilon = p$train_epsilon, delta = p$train_delta)
    loader <- private_data_loader(train_pdf[c("x1", "x2")], train_pdf$y, batch_size = p$batch_size,
                                  seed = p$loader_seed)
    dp_model <- private_keras_model(model, l2_norm_clip = p$l2_norm_clip,
                                    noise_multiplier = p$noise_multiplier, seed = p$model_seed)
    before <- dp_predict(dp_model, public)
    dp_compile(dp_model, optimizer = keras$optimizers$SGD(learning_rate = p$learning_rate),
               loss = "binary_crossentropy")
    history <- dp_fit(dp_model, loader, epochs = 1, target_delta = p$train_delta)
    after <- dp_predict(dp_model, public)
    out$history <- as.list(as.data.frame(history, format = "wide"))  # epoch, epsilon
    out$predictions_before <- list(values = as.vector(t(before)), dim = dim(before))
    out$predictions <- list(values = as.vector(t(after)), dim = dim(after))
    out$train_report <- privacy_budget(train_pdf)
    out
  }), error = function(e) list(error = conditionMessage(e), error_class = class(e)))
  invisible(gc())  # frees the job's Python objects while the GIL is held
  NULL
}
.op_runner <- reticulate::py_func(.op_job)
"""


def _from_r(value):
    """A plain R value (named list, data.frame, atomic vector) as JSON-ready Python."""
    if isinstance(value, ro.vectors.DataFrame | ro.vectors.ListVector):
        names = value.names
        if names is ro.NULL or names is None:
            return [_from_r(v) for v in value]
        return {str(k): _from_r(v) for k, v in zip(names, value, strict=True)}
    if value is ro.NULL:
        return None
    out = []
    for v in value:
        if v is ro.NA_Real or v is ro.NA_Integer or v is ro.NA_Logical or v is ro.NA_Character:
            out.append(None)
        elif isinstance(v, bool | int | float):
            out.append(v)
        else:
            out.append(str(v))
    return out


def _r_worker(config_path: str) -> None:
    """Subprocess entry: runs R_JOB in embedded R via rpy2 and prints its results as JSON."""
    with open(config_path) as f:
        cfg = json.load(f)
    params = ro.ListVector({k: ro.FloatVector([v]) for k, v in cfg["params"].items()})
    cases = []
    for n, b, epochs, sigma, delta, accountant in cfg["eps_cases"]:
        case = {"sample_size": n, "batch_size": b, "num_epochs": epochs, "noise_multiplier": sigma}
        case = {k: ro.FloatVector([float(v)]) for k, v in case.items()}
        case.update(target_delta=ro.FloatVector([delta]), accountant=ro.StrVector([accountant]))
        cases.append(ro.ListVector(case))
    ro.globalenv[".op_cfg"] = ro.ListVector(
        {
            "params": params,
            "eps_cases": ro.r("list")(*cases),
            "train": ro.StrVector([cfg["train"]]),
            "public": ro.StrVector([cfg["public"]]),
            "ledger": ro.StrVector([cfg["ledger"]]),
        }
    )
    ro.r(R_JOB)
    ro.r(".op_runner()")  # reticulate calls back into R with the GIL held
    results = _from_r(ro.globalenv[".op_results"])
    results["python_pid"] = os.getpid()
    results["python_op_tensorflow_id"] = str(id(ot))
    sys.stdout.write("\n" + RESULT_MARKER + json.dumps(results) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # R's exit finalizers would release Python objects without the GIL


@pytest.fixture(scope="module")
def parity_data():
    rng = np.random.default_rng(2024)
    n = 512
    y = rng.integers(0, 2, n).astype(float)
    x = rng.normal(0, 1, (n, 2)) + (2 * y[:, None] - 1)
    train = pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "y": y})
    public = pd.DataFrame({"x1": np.linspace(-3, 3, 40), "x2": np.linspace(2, -2, 40)})
    return train, public


@pytest.fixture(scope="module")
def r_results(parity_data, tmp_path_factory):
    """Results of R_JOB: the R package, driven through rpy2 in a subprocess."""
    if not ro.r('nzchar(system.file(package = "reticulate"))')[0]:  # without loading it here
        pytest.skip("the R package reticulate is not installed")
    tmp = tmp_path_factory.mktemp("r_parity")
    lib = tmp / "rlib"
    lib.mkdir()
    r_bin = os.path.join(ro.r('R.home("bin")')[0], "R")
    install = subprocess.run(
        [r_bin, "CMD", "INSTALL", "--no-test-load", "-l", str(lib), os.path.join(REPO, "r_pkg")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert install.returncode == 0, f"R CMD INSTALL r_pkg failed:\n{install.stdout[-3000:]}\n{install.stderr[-3000:]}"
    train, public = parity_data
    paths = {name: str(tmp / f"{name}.rds") for name in ("train", "public")}
    ro.baseenv["saveRDS"](otr.to_r(train), paths["train"])
    ro.baseenv["saveRDS"](otr.to_r(public), paths["public"])
    cfg = {**paths, "ledger": str(tmp / "ledger_r.json"), "params": PARAMS, "eps_cases": EPS_CASES}
    config_path = tmp / "config.json"
    config_path.write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("R_SESSION_INITIALIZED", "PYTHON_SESSION_INITIALIZED")}
    env.update(
        RETICULATE_PYTHON=sys.executable,
        R_LIBS=os.pathsep.join(filter(None, [str(lib), os.environ.get("R_LIBS")])),
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONWARNINGS="ignore",
    )
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), str(config_path)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=str(tmp),
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    assert proc.returncode == 0 and lines, (
        f"R parity worker failed (exit {proc.returncode}):\n"
        f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    )
    results = json.loads(lines[-1][len(RESULT_MARKER) :])
    assert "error" not in results, f"the R job failed: {results.get('error')} ({results.get('error_class')})"
    results["ledger_path"] = cfg["ledger"]
    results["lib"] = str(lib)
    return results


def _scalar(value):
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _report(values: dict) -> dict:
    return {k: _scalar(v) for k, v in values.items()}


@pytest.mark.slow
def test_r_session_runs_the_repo_package_on_the_same_interpreter(r_results):
    assert _scalar(r_results["optensorflow_path"]).startswith(r_results["lib"])  # r_pkg/ as in the repo
    assert {"private_data_frame", "private_data_loader", "private_keras_model", "dp_fit", "dp_predict"} <= set(
        r_results["exports"]
    )
    # reticulate attached to the worker's running interpreter: same process, same module object.
    assert _scalar(r_results["r_pid"]) == r_results["python_pid"]
    assert _scalar(r_results["r_op_tensorflow_id"]) == r_results["python_op_tensorflow_id"]


@pytest.mark.slow
def test_parity_epsilon(r_results):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ot.PrivacyWarning)  # the seed case's delta = 1/n (the R side warns too)
        python = [ot.get_privacy_budget(n, b, e, s, d, accountant=a, verbose=False) for n, b, e, s, d, a in EPS_CASES]
    assert r_results["epsilons"] == python  # bit-identical
    # the README's seed case (computed with dp-accounting 0.4.3; 0.6.0 differs in the 11th digit)
    assert r_results["epsilons"][0] == pytest.approx(0.2778802396005823, rel=1e-9)


def python_ledger(train: pd.DataFrame, path) -> ot.PrivacyBudget:
    budget = ot.PrivacyBudget(PARAMS["ledger_epsilon"], PARAMS["ledger_delta"], path=path)
    pdf = ot.PrivateDataFrame(train, metadata=METADATA, budget=budget)
    for target, what, eps, mechanism in AGGREGATES:
        if target == "frame":
            obj = pdf
        elif target == "x2>0":
            obj = pdf["x2"] > 0
        elif isinstance(target, tuple):
            obj = pdf[list(target)]
        else:
            obj = pdf[target]
        getattr(obj, what)(eps=eps, mechanism=mechanism)
    return budget


@pytest.mark.slow
def test_parity_budget_states(r_results, parity_data, tmp_path):
    budget = python_ledger(parity_data[0], tmp_path / "ledger_py.json")
    expected = budget.report()
    assert _report(r_results["ledger_report"]) == expected
    assert _report(r_results["ledger_report_from_path"]) == expected
    r_ledger = ot.PrivacyBudget.load(r_results["ledger_path"])  # the file R wrote
    assert r_ledger.spent() == budget.spent()
    assert r_ledger.report() == expected

    def summary(entries):
        return [(e.status, e.description, e.event, e.reserved_event) for e in entries]

    assert summary(r_ledger.entries) == summary(budget.entries)
    assert len(budget.entries) == 8  # describe of two columns charges a count and a mean for each


@pytest.mark.slow
def test_parity_predictions(r_results, parity_data):
    import tensorflow as tf

    train, public = parity_data
    p = PARAMS
    tf.keras.utils.set_random_seed(int(p["tf_seed"]))
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Dense(8, activation="relu", input_shape=(2,)),
            tf.keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    train_pdf = ot.PrivateDataFrame(train, budget=ot.PrivacyBudget(p["train_epsilon"], p["train_delta"]))
    loader = ot.PrivateDataLoader(
        train_pdf[["x1", "x2"]], train_pdf["y"], int(p["batch_size"]), seed=int(p["loader_seed"])
    )
    dp_model = ot.PrivateKerasModel(model, p["l2_norm_clip"], p["noise_multiplier"], seed=int(p["model_seed"]))
    public_x = public.to_numpy(dtype=np.float32)
    before = dp_model.predict(public_x)
    dp_model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=p["learning_rate"]), loss="binary_crossentropy")
    history = dp_model.fit(loader, epochs=1, target_delta=p["train_delta"], verbose=0)
    after = dp_model.predict(public_x)

    def r_matrix(entry):
        return np.asarray(entry["values"], dtype=np.float64).reshape(entry["dim"])

    np.testing.assert_array_equal(r_matrix(r_results["predictions_before"]), before.astype(np.float64))
    assert not np.array_equal(before, after)  # training moved the weights
    np.testing.assert_array_equal(r_matrix(r_results["predictions"]), after.astype(np.float64))
    assert r_results["history"]["epoch"] == [1]
    assert r_results["history"]["epsilon"] == history.history["epsilon"]
    assert _report(r_results["train_report"]) == train_pdf.budget.report()


if __name__ == "__main__":
    _r_worker(sys.argv[1])
