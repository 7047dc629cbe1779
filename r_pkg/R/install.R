#' Install the Python side of optensorflow
#'
#' Creates a Python virtual environment with a pinned stack and the `op_tensorflow` package,
#' then tells you to point `RETICULATE_PYTHON` at it. Two stacks:
#'
#' * the primary stack (the default): TensorFlow 2.21.0 with `tf-keras` 2.21.0, so that the
#'   same environment runs Keras 3 (the default) and Keras 2 (`options(optensorflow.keras =
#'   "tf_keras")`, see [optensorflow_stack()]); Python 3.11 (or 3.12). `keras = "tf_keras"`
#'   installs the same stack and reminds you of the option;
#' * `tensorflow = "2.15.1"`: TensorFlow 2.15.1 with its own Keras 2 and dp-accounting 0.4.3
#'   (Python 3.11), the previous pinned stack.
#'
#' Both get `numpy < 2`, since reticulate before 1.35 (Debian's 1.28, for one) cannot exchange
#' numpy 2 arrays with R. TF Privacy 0.9.0 and tensorflow-empirical-privacy 0.1.0 are installed
#' afterwards with `pip install --no-deps` (on Python 3.12 also `--ignore-requires-python`):
#' their declared pins (tensorflow-estimator, dp-accounting 0.4.3, Python < 3.12, ...) would
#' downgrade TensorFlow, and the modules op_tensorflow uses need none of them. On Python 3.12,
#' `python -m op_tensorflow.stack --install-imp-shim` adds the small `imp` module reticulate
#' 1.28's configuration script needs (Python 3.12 removed `imp`).
#'
#' With reticulate >= 1.41, `method = "py_require"` (the default there) declares the
#' requirements with `reticulate::py_require()` instead, as the keras3 R package does, for
#' reticulate's ephemeral uv environment (used when `RETICULATE_PYTHON` and the other ways of
#' choosing a Python are not set), with Python 3.11. optensorflow declares them when it loads, too, with
#' `package` taken from `getOption("optensorflow.python_package", "op-tensorflow")` (a name
#' uv finds on an index or in `UV_FIND_LINKS`, e.g. a directory of wheels: with a source directory,
#' uv builds a throw-away environment that reticulate 1.41 cannot keep). Since
#' `py_require()` cannot install a package without its dependencies, TF Privacy is installed
#' with `pip install --no-deps --target` into optensorflow's user cache directory
#' (`tools::R_user_dir("optensorflow", "cache")`) the first time the ephemeral environment
#' lacks it, and that directory is put on Python's `sys.path` before op_tensorflow is imported.
#' This is keras3's convention: its `.onLoad()` declares the Python packages with
#' `py_require()`, and its `install_keras()` still creates a persistent virtualenv on request;
#' here `method = "virtualenv"` does that, with any reticulate (the default before 1.41).
#'
#' @param envname Path of the virtual environment to create (`method = "virtualenv"`).
#' @param package pip requirement for op_tensorflow: a path to a source checkout or a package
#'   name.
#' @param keras `"keras3"` or `"tf_keras"` (alias `"keras2"`); `NULL` means `"keras3"` on
#'   TensorFlow 2.21 and `"tf_keras"` on TensorFlow 2.15.1 (which has no Keras 3).
#' @param tensorflow `"2.21.0"` (the primary stack) or `"2.15.1"` (Keras 2 only).
#' @param python The interpreter that creates the environment, Python 3.11 (or 3.12 for
#'   TensorFlow 2.21); `NULL` means `python3.11` on the `PATH`, else `python3.12`, else (with
#'   reticulate >= 1.34) one that `reticulate::virtualenv_starter()` finds.
#' @param method `"virtualenv"`, `"py_require"` (reticulate >= 1.41), or `"auto"`:
#'   `"py_require"` when reticulate is recent enough, `"virtualenv"` otherwise.
#' @return The path of the environment's python (`"virtualenv"`), or the declared
#'   requirements (`"py_require"`), invisibly.
#' @seealso [optensorflow_stack()] for the stack in use.
#' @examples
#' \dontrun{
#' install_optensorflow(package = "/path/to/op-tensorflow")
#' install_optensorflow(package = "/path/to/op-tensorflow", tensorflow = "2.15.1",
#'                      envname = "~/.virtualenvs/optensorflow-tf215")
#' }
#' @export
install_optensorflow <- function(envname = "~/.virtualenvs/optensorflow", package = "op-tensorflow",
                                 keras = NULL, tensorflow = c("2.21.0", "2.15.1"), python = NULL,
                                 method = c("auto", "virtualenv", "py_require")) {
  tensorflow <- match.arg(tensorflow)
  method <- match.arg(method)
  if (method == "auto") method <- if (has_py_require()) "py_require" else "virtualenv"
  if (method == "py_require") {
    if (!has_py_require()) {
      stop("method = \"py_require\" needs reticulate >= 1.41 (installed: ", utils::packageVersion("reticulate"),
           "); use method = \"virtualenv\".", call. = FALSE)
    }
    reqs <- optensorflow_requirements(keras, tensorflow, package, python_version = NULL)
    declare_requirements(reqs)
    message("Declared the Python requirements with reticulate::py_require(); reticulate's ephemeral ",
            "environment gets them when Python starts (leave RETICULATE_PYTHON unset). ",
            "TF Privacy is added there with pip --no-deps at the first optensorflow call.",
            keras_reminder(reqs))
    return(invisible(reqs))
  }
  if (is.null(python)) python <- find_python(if (tensorflow == "2.21.0") c("3.11", "3.12") else "3.11")
  if (length(python) != 1 || is.na(python) || !nzchar(python)) {
    stop("python must be a Python 3.11 interpreter (or 3.12 for TensorFlow 2.21); none was found on PATH.",
         call. = FALSE)
  }
  version <- python_minor_version(python)
  reqs <- optensorflow_requirements(keras, tensorflow, package, python_version = version)
  reticulate::virtualenv_create(envname, python = python, packages = NULL)
  py <- reticulate::virtualenv_python(envname)
  for (step in reqs$steps) run_python(py, step)
  run_python(py, c("-m", "op_tensorflow.stack", "--expect-tensorflow", reqs$tensorflow))
  message("Installed. Before library(optensorflow), set Sys.setenv(RETICULATE_PYTHON = \"", py, "\").",
          keras_reminder(reqs))
  invisible(py)
}

has_py_require <- function() utils::packageVersion("reticulate") >= "1.41"

# A Python of one of `versions`: pythonX.Y on the PATH, else (reticulate >= 1.34) one that
# reticulate::virtualenv_starter() finds (pyenv, python.org installers, ...), as keras3's
# install_keras() does through virtualenv_create(version = ).
find_python <- function(versions) {
  for (v in versions) {
    python <- Sys.which(paste0("python", v))
    if (nzchar(python)) return(unname(python))
  }
  if (exists("virtualenv_starter", envir = asNamespace("reticulate"))) {
    starter <- getExportedValue("reticulate", "virtualenv_starter")
    for (v in versions) {
      python <- tryCatch(starter(v), error = function(e) NULL)
      if (is.character(python) && length(python) == 1 && !is.na(python) && nzchar(python)) return(python)
    }
  }
  ""
}

keras_reminder <- function(reqs) {
  if (reqs$keras == "tf_keras" && reqs$tensorflow != "2.15.1") {
    " For Keras 2, also set options(optensorflow.keras = \"tf_keras\") before library(optensorflow)."
  } else {
    ""
  }
}

tf_privacy_requirements <- c("tensorflow-privacy==0.9.0", "tensorflow-empirical-privacy==0.1.0")

# What each stack installs, without installing anything: a list with `keras`, `tensorflow`,
# `python_version` (a py_require() constraint), `packages` (the resolvable requirements, numpy
# < 2 for reticulate), `no_deps` (TF Privacy, installed with `no_deps_flags`), `imp_shim` (Python
# >= 3.12) and `steps` (the pip argument vectors of the virtualenv method, in order).
optensorflow_requirements <- function(keras = NULL, tensorflow = "2.21.0", package = "op-tensorflow",
                                      python_version = "3.11") {
  if (!is.character(tensorflow) || length(tensorflow) != 1 || !(tensorflow %in% c("2.21.0", "2.15.1"))) {
    stop("tensorflow must be \"2.21.0\" or \"2.15.1\".", call. = FALSE)
  }
  if (is.null(keras)) keras <- if (tensorflow == "2.15.1") "tf_keras" else "keras3"
  if (!is.character(keras) || length(keras) != 1 || !(tolower(keras) %in% names(keras_mode_values))) {
    stop("keras must be \"keras3\" or \"tf_keras\" (alias \"keras2\").", call. = FALSE)
  }
  keras <- unname(keras_mode_values[tolower(keras)])
  if (tensorflow == "2.15.1" && keras == "keras3") {
    stop("TensorFlow 2.15.1 has no Keras 3: use tensorflow = \"2.21.0\", or keras = \"tf_keras\".", call. = FALSE)
  }
  if (!is.character(package) || length(package) != 1 || !nzchar(package)) {
    stop("package must be a pip requirement for op-tensorflow: a path or a package name.", call. = FALSE)
  }
  if (file.exists(path.expand(package))) package <- normalizePath(path.expand(package))
  if (!is.null(python_version)) {
    if (!(python_version %in% c("3.11", "3.12"))) {
      stop("op_tensorflow needs Python 3.11 or 3.12, got Python ", python_version, ".", call. = FALSE)
    }
    if (python_version == "3.12" && tensorflow == "2.15.1") {
      stop("TensorFlow 2.15.1 needs Python 3.11 (it has no wheels for Python ", python_version, ").", call. = FALSE)
    }
  }
  stack <- if (tensorflow == "2.21.0") {
    c("tensorflow==2.21.0", "tf-keras==2.21.0", "numpy<2")
  } else {
    c("tensorflow==2.15.1", "dp-accounting==0.4.3", "numpy<2")
  }
  py312 <- identical(python_version, "3.12")
  no_deps_flags <- c("--no-deps", if (py312) "--ignore-requires-python")
  packages <- c(stack, package)
  list(
    keras = keras,
    tensorflow = tensorflow,
    python_version = if (is.null(python_version)) "3.11" else python_version, # py_require(): the primary stack's
    packages = packages,
    no_deps = tf_privacy_requirements,
    no_deps_flags = no_deps_flags,
    imp_shim = py312,
    steps = c(
      list(c("-m", "pip", "install", "--upgrade", "pip>=24")),
      list(c("-m", "pip", "install", packages)),
      list(c("-m", "pip", "install", no_deps_flags, tf_privacy_requirements)),
      if (py312) list(c("-m", "op_tensorflow.stack", "--install-imp-shim"))
    )
  )
}

python_minor_version <- function(python) {
  out <- suppressWarnings(system2(python, c("-c", shQuote("import sys; print('%d.%d' % sys.version_info[:2])")),
                                  stdout = TRUE, stderr = TRUE))
  if (!is.null(attr(out, "status")) || !length(out)) {
    stop("could not run ", python, ": ", paste(out, collapse = "\n"), call. = FALSE)
  }
  out[length(out)]
}

run_python <- function(python, args) {
  message("+ ", python, " ", paste(args, collapse = " "))
  status <- system2(python, shQuote(args))
  if (!identical(status, 0L)) {
    stop("`", python, " ", paste(args, collapse = " "), "` failed (exit status ", status, ").", call. = FALSE)
  }
  invisible()
}

# -- reticulate >= 1.41: py_require() --------------------------------------------------------------

# Declares the requirements for reticulate's ephemeral environment (pip is declared too: TF Privacy
# is installed with it, see add_tf_privacy_path()).
declare_requirements <- function(reqs) {
  py_require <- getExportedValue("reticulate", "py_require")
  py_require(c(reqs$packages, "pip"), python_version = reqs$python_version)
  invisible(reqs)
}

# In .onLoad, with reticulate >= 1.41: the primary stack, op-tensorflow by the option's name.
declare_requirements_on_load <- function() {
  if (!has_py_require()) return(invisible())
  package <- getOption("optensorflow.python_package", "op-tensorflow")
  tryCatch(declare_requirements(optensorflow_requirements(package = package, python_version = NULL)),
           error = function(e) NULL)
  invisible()
}

tf_privacy_dir <- function(python_version) {
  file.path(tools::R_user_dir("optensorflow", "cache"), paste0("tf-privacy-0.9.0-py", python_version))
}

# In reticulate's ephemeral (py_require) environment, TF Privacy lives in a --no-deps --target
# directory of optensorflow's cache, installed the first time; put it on sys.path before
# op_tensorflow is imported. Other Pythons are left alone (op_tensorflow's own error explains a
# missing TF Privacy).
add_tf_privacy_path <- function() {
  if (!isTRUE(reticulate::py_config()$ephemeral)) return(invisible())
  if (reticulate::py_eval("__import__('importlib.util').util.find_spec('tensorflow_privacy') is not None")) {
    return(invisible())
  }
  sys <- reticulate::import("sys", convert = TRUE)
  version <- paste(sys$version_info$major, sys$version_info$minor, sep = ".")
  dir <- tf_privacy_dir(version)
  if (!dir.exists(file.path(dir, "tensorflow_privacy"))) {
    message("optensorflow: installing TF Privacy (pip install --no-deps) into ", dir)
    run_python(sys$executable, c("-m", "pip", "install", "--quiet", "--no-deps", "--ignore-requires-python",
                                 "--target", dir, tf_privacy_requirements))
  }
  reticulate::import("sys", convert = FALSE)$path$append(dir)
  invisible(dir)
}
