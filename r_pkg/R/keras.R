# Which Keras the Python side runs: Keras 3 (TensorFlow >= 2.16's default tf.keras) or Keras 2
# (tf_keras, chosen by TF_USE_LEGACY_KERAS=1, or TensorFlow 2.15's own Keras). TensorFlow reads
# TF_USE_LEGACY_KERAS from Python's os.environ when it is first imported, so the mode must be
# settled before that: at .onLoad (the environment variable, before reticulate starts Python) and
# again at the first optensorflow call (os.environ, when Python runs but TensorFlow is not imported).

keras_mode_values <- c(keras3 = "keras3", tf_keras = "tf_keras", keras2 = "tf_keras")

legacy_keras_requested <- function(value) {
  tolower(trimws(value)) %in% c("1", "true", "yes")
}

# The requested mode and where it comes from: the option optensorflow.keras, else the environment
# variable OPTENSORFLOW_KERAS, else a TF_USE_LEGACY_KERAS the user set, else the default Keras 3.
keras_mode_setting <- function() {
  option <- getOption("optensorflow.keras")
  env <- Sys.getenv("OPTENSORFLOW_KERAS", "")
  if (!is.null(option)) {
    value <- option
    source <- "the option optensorflow.keras"
  } else if (nzchar(env)) {
    value <- env
    source <- "the environment variable OPTENSORFLOW_KERAS"
  } else if (nzchar(legacy <- Sys.getenv("TF_USE_LEGACY_KERAS", "")) && !isTRUE(.state$legacy_set_by_us)) {
    return(list(mode = if (legacy_keras_requested(legacy)) "tf_keras" else "keras3",
                source = "the environment variable TF_USE_LEGACY_KERAS", explicit = TRUE))
  } else {
    return(list(mode = "keras3", source = "the default", explicit = FALSE))
  }
  if (!is.character(value) || length(value) != 1 || !(tolower(value) %in% names(keras_mode_values))) {
    shown <- if (is.character(value) && length(value) == 1) deparse(value) else paste0("a ", class(value)[1])
    py_stop("ValueError", .call = NULL, source, " must be \"keras3\" or \"tf_keras\" (alias \"keras2\"), got ",
            shown, ".")
  }
  list(mode = unname(keras_mode_values[tolower(value)]), source = source, explicit = TRUE)
}

# Sets TF_USE_LEGACY_KERAS for the requested mode: an explicit optensorflow setting wins over a
# TF_USE_LEGACY_KERAS of the user's, which is left alone otherwise. With `python = TRUE` (Python
# runs, TensorFlow not imported yet) Python's os.environ is set too: TensorFlow reads that copy.
apply_keras_mode <- function(setting, python = FALSE) {
  if (setting$source == "the environment variable TF_USE_LEGACY_KERAS") return(invisible())
  if (!setting$explicit && !isTRUE(.state$legacy_set_by_us)) return(invisible())
  if (setting$mode == "tf_keras") {
    if (!legacy_keras_requested(Sys.getenv("TF_USE_LEGACY_KERAS", ""))) .state$legacy_set_by_us <- TRUE
    Sys.setenv(TF_USE_LEGACY_KERAS = "1")
    if (python) reticulate::py_run_string("import os; os.environ['TF_USE_LEGACY_KERAS'] = '1'")
  } else {
    Sys.unsetenv("TF_USE_LEGACY_KERAS")
    .state$legacy_set_by_us <- FALSE
    if (python) reticulate::py_run_string("import os; os.environ.pop('TF_USE_LEGACY_KERAS', None)")
  }
  invisible()
}

# Called in .onLoad: reads the setting before anything starts Python. An invalid value is reported
# at the first call instead, so that library(optensorflow) itself still works.
keras_mode_on_load <- function() {
  setting <- tryCatch(keras_mode_setting(), error = function(e) NULL)
  if (!is.null(setting) && !reticulate::py_available(initialize = FALSE)) apply_keras_mode(setting)
  invisible()
}

# The Keras Python actually runs (imports TensorFlow): a list of R values.
python_keras <- function() {
  seam <- tryCatch(reticulate::import("op_tensorflow.keras_seam"), error = function(e) e)
  if (inherits(seam, "error")) {
    msg <- conditionMessage(seam)
    if (grepl("TF_USE_LEGACY_KERAS=1 is set, but tf.keras is already Keras 3", msg, fixed = TRUE)) {
      return(list(keras3 = TRUE, description = "Keras 3 (tf.keras was used before TF_USE_LEGACY_KERAS was set)",
                  package = "keras"))
    }
    rethrow_py_error(seam)
  }
  list(keras3 = isTRUE(seam$KERAS3), description = seam$keras_description(), package = seam$KERAS_PACKAGE)
}

keras_mode_error <- function(setting, actual) {
  wanted <- if (setting$mode == "tf_keras") "Keras 2 (tf_keras)" else "Keras 3"
  value <- if (setting$mode == "tf_keras") "tf_keras" else "keras3"
  py_stop("KerasModeError", .call = NULL,
          "optensorflow is set to ", wanted, " by ", setting$source, ", but reticulate's Python already runs ",
          actual$description, ": TensorFlow fixes the Keras behind tf.keras when it is first imported, once per ",
          "R session. Restart R and set options(optensorflow.keras = \"", value, "\") (or the environment ",
          "variable OPTENSORFLOW_KERAS=", value, ") before library(optensorflow) and before anything else ",
          "starts Python or imports TensorFlow (e.g. library(keras3), library(tensorflow), reticulate::import()).",
          if (setting$mode == "keras3" && !actual$keras3 && grepl("TensorFlow 2.1[0-5]", actual$description)) {
            " TensorFlow <= 2.15 has no Keras 3: use a TensorFlow 2.21 environment (install_optensorflow())."
          })
}

# Settles the Keras mode before the first call into op_tensorflow, then checks that Python runs
# the requested Keras (an explicit request must be met; the default accepts TensorFlow 2.15's
# Keras 2). Runs once per session; returns the actual mode ("keras3" or "tf_keras").
ensure_keras_mode <- function() {
  if (!is.null(.state$mode)) return(.state$mode)
  setting <- keras_mode_setting()
  if (!reticulate::py_available(initialize = FALSE)) {
    apply_keras_mode(setting)
    reticulate::py_config() # starts Python
  } else if (!reticulate::py_eval("'tensorflow' in __import__('sys').modules")) {
    apply_keras_mode(setting, python = TRUE)
  }
  add_tf_privacy_path()
  import_tensorflow_quietly()
  actual <- python_keras()
  mode <- if (actual$keras3) "keras3" else "tf_keras"
  if (setting$explicit && mode != setting$mode) keras_mode_error(setting, actual)
  .state$mode <- mode
  .state$description <- actual$description
  .state$package <- actual$package
  mode
}

#' The Python stack optensorflow runs on, and how to choose Keras 3 or Keras 2
#'
#' Returns the versions of what reticulate's Python runs: Python, TensorFlow, the Keras behind
#' `tf.keras`, TF Privacy, dp-accounting and numpy, as R character strings.
#'
#' The Keras is chosen once per R session, before Python imports TensorFlow:
#' * `options(optensorflow.keras = "keras3")` (the default) runs Keras 3, TensorFlow >= 2.16's
#'   `tf.keras`;
#' * `options(optensorflow.keras = "tf_keras")` (alias `"keras2"`) runs Keras 2 from the
#'   `tf_keras` package: optensorflow sets the environment variable `TF_USE_LEGACY_KERAS=1`
#'   before reticulate starts Python. TF Privacy's optimizers ([dp_adam_gaussian_optimizer()])
#'   need Keras 2; [private_keras_model()] works with both.
#'
#' Set the option (or the environment variable `OPTENSORFLOW_KERAS`, e.g. in `.Renviron`)
#' before `library(optensorflow)`. Precedence: the option, then `OPTENSORFLOW_KERAS`, then a
#' `TF_USE_LEGACY_KERAS` you set yourself (`1`, `true` or `yes`: Keras 2; anything else:
#' Keras 3), then the default Keras 3. An explicit optensorflow setting overrides
#' `TF_USE_LEGACY_KERAS` (setting it to 1, or unsetting it for Keras 3). The setting is read
#' when the package loads and again at the first optensorflow call, so it may still change in
#' between, as long as nothing has imported TensorFlow. If Python already runs the other Keras
#' (e.g. another package imported TensorFlow first), the first optensorflow call stops with an
#' error of class `KerasModeError`: restart R and set the option before `library(optensorflow)`.
#' Without any setting, TensorFlow 2.15 (Keras 2 only) is accepted as it is.
#'
#' @section TensorFlow's start-up messages:
#' Importing TensorFlow writes lines such as "oneDNN custom operations are on", "Could not find
#' cuda drivers on your machine, GPU will not be used", "This TensorFlow binary is optimized to
#' use available CPU instructions ..." and, on TensorFlow 2.15 to 2.18, "Unable to register cuDNN
#' factory" (logged as errors, though nothing is wrong) to the R process's standard error, from
#' C++. optensorflow keeps them out of R sessions and knitted documents:
#' * when the package loads, it sets TensorFlow's documented switch `TF_CPP_MIN_LOG_LEVEL` to `1`
#'   (hide TensorFlow's C++ INFO logs; warnings and errors are still shown), unless you set it;
#' * TensorFlow >= 2.19 writes some of those lines before its logging reads
#'   `TF_CPP_MIN_LOG_LEVEL`, and the "Unable to register" lines are errors, so while TensorFlow is
#'   first imported (by optensorflow, or by keras3, tensorflow or `reticulate::import()` after
#'   `library(optensorflow)`: an import hook sees it) and looks for devices, standard error goes
#'   to a file and is copied back without exactly those start-up lines. Every other line, errors
#'   and warnings included, is passed on. (If R crashes in between, the lines are in
#'   `tempdir()/tf-startup-*.log`.)
#'
#' To see everything, set `options(optensorflow.tf_startup_log = TRUE)` or
#' `Sys.setenv(TF_CPP_MIN_LOG_LEVEL = "0")` before `library(optensorflow)`. Nothing is filtered
#' if TensorFlow was imported before optensorflow was loaded.
#'
#' @return A named list of character strings: `python`, `tensorflow`, `keras_version`, `keras`
#'   (`"keras3"` or `"tf_keras"`, meaning Keras 2: the `tf_keras` package, or TensorFlow 2.15's
#'   own Keras), `keras_package` (the Python package behind `tf.keras`: `"keras"` or
#'   `"tf_keras"`), `tf_privacy`, `dp_accounting`, `numpy` (`NA` for a package not installed).
#' @seealso [keras_module()], [install_optensorflow()]
#' @examplesIf op_tensorflow_available()
#' str(optensorflow_stack())
#' @export
optensorflow_stack <- function() {
  mode <- ensure_keras_mode()
  meta <- reticulate::import("importlib.metadata")
  version <- function(dist) {
    tryCatch(as.character(meta$version(dist)), error = function(e) NA_character_)
  }
  sys <- reticulate::import("sys")
  keras_version <- version(if (identical(.state$package, "tf_keras")) "tf-keras" else "keras")
  if (is.na(keras_version)) keras_version <- sub("^\\S+ (\\S+) on .*$", "\\1", .state$description)
  list(
    python = strsplit(as.character(sys$version), " ", fixed = TRUE)[[1]][1],
    tensorflow = as.character(reticulate::import("tensorflow")$`__version__`),
    keras_version = keras_version,
    keras = mode,
    keras_package = as.character(.state$package),
    tf_privacy = version("tensorflow-privacy"),
    dp_accounting = version("dp-accounting"),
    numpy = version("numpy")
  )
}

# -- TensorFlow's start-up noise -------------------------------------------------------------------
# Importing TensorFlow writes lines like "oneDNN custom operations are on", "Could not find cuda
# drivers on your machine", "This TensorFlow binary is optimized to use available CPU instructions",
# and, on TensorFlow 2.15 to 2.18, "Unable to register cuDNN factory" (error level, although nothing
# is wrong) straight to the process's stderr from C++. TF_CPP_MIN_LOG_LEVEL, TensorFlow's documented
# switch, hides its C++ INFO logs (level 1) but not those errors, and since TensorFlow 2.19 not the
# lines logged before absl::InitializeLog() either (tensorflow/tensorflow#100442). So:
# * TF_CPP_MIN_LOG_LEVEL = 1 (INFO hidden, warnings and errors shown) when the user has not set it,
#   before Python starts (.onLoad);
# * while TensorFlow is first imported (by anyone: an import hook on sys.meta_path, installed when
#   Python starts) and looks for devices, stderr goes to a file and is copied back afterwards
#   without the known start-up lines above; every other line (real errors and warnings) is passed on.
# options(optensorflow.tf_startup_log = TRUE) before the first call, or TF_CPP_MIN_LOG_LEVEL = 0,
# shows everything.

tf_log_level_on_load <- function() {
  if (!nzchar(Sys.getenv("TF_CPP_MIN_LOG_LEVEL")) && !isTRUE(getOption("optensorflow.tf_startup_log"))) {
    Sys.setenv(TF_CPP_MIN_LOG_LEVEL = "1")
    .state$tf_log_level_set_by_us <- TRUE
  }
  invisible()
}

# Regular expressions (Python re) of the start-up lines dropped; "failed call to cuInit" only after
# TensorFlow said it found no CUDA driver.
tf_startup_noise <- c(
  "^WARNING: All log messages before absl::InitializeLog\\(\\) is called are written to STDERR\\s*$",
  "\\] oneDNN custom operations are on\\. ",
  "\\] Could not find cuda drivers on your machine, GPU will not be used\\.\\s*$",
  "\\] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations\\.",
  "^To enable the following instructions: .* in other operations, rebuild TensorFlow with the appropriate compiler flags\\.\\s*$",
  "\\] Unable to register cu(DNN|FFT|BLAS) factory: Attempting to register factory for plugin cu(DNN|FFT|BLAS) when one has already been registered\\s*$",
  "\\] computation placer already registered\\. Please check linkage and avoid linking the same target more than once\\.\\s*$",
  "\\] TF-TRT Warning: Could not find TensorRT\\s*$"
)
tf_no_driver_noise <- "\\] failed call to cuInit: .*(UNKNOWN ERROR \\(303\\)|CUDA_ERROR_NO_DEVICE|no CUDA-capable device)"

tf_startup_filter_code <- '
def filter_tf_startup(text, patterns, no_driver):
    """The lines of text that are not TensorFlow start-up noise, as one string."""
    import re
    noise = [re.compile(p) for p in patterns]
    no_driver_re = re.compile(no_driver)
    no_driver_seen = "Could not find cuda drivers on your machine" in text
    kept = []
    for line in text.splitlines(keepends=True):
        if any(p.search(line) for p in noise):
            continue
        if no_driver_seen and no_driver_re.search(line):
            continue
        kept.append(line)
    return "".join(kept)


def quietly(fn, log_dir, patterns, no_driver):
    """Runs fn() with stderr (fd 2) sent to a file in log_dir, then writes the file back to stderr
    without the start-up noise (also when fn raises, which is re-raised)."""
    import os, sys, tempfile

    def flush():
        try:
            sys.stderr.flush()
        except Exception:
            pass

    flush()
    fd, log_path = tempfile.mkstemp(prefix="tf-startup-", suffix=".log", dir=log_dir)
    saved = os.dup(2)
    try:
        os.dup2(fd, 2)
        try:
            return fn()
        finally:
            flush()
            os.dup2(saved, 2)
    finally:
        os.close(fd)
        os.close(saved)
        with open(log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        os.remove(log_path)
        kept = filter_tf_startup(text, patterns, no_driver)
        if kept:
            os.write(2, kept.encode("utf-8", "replace"))


class QuietTensorFlowFinder:
    """A sys.meta_path finder for the first import of the tensorflow package, by anyone (this
    package, keras3, reticulate::import()): its loader runs the __init__ of TensorFlow (and the device
    lookup) through quietly(). It removes itself once TensorFlow is imported."""

    def __init__(self, log_dir, patterns, no_driver):
        self.args = (log_dir, patterns, no_driver)

    def find_spec(self, name, path=None, target=None):
        import sys
        if name != "tensorflow":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = QuietLoader(spec.loader, self)
        return spec

    def remove(self):
        import sys
        while self in sys.meta_path:
            sys.meta_path.remove(self)


class QuietLoader:
    def __init__(self, loader, finder):
        self.loader = loader
        self.finder = finder

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        def run():
            try:
                self.loader.exec_module(module)
            finally:
                module.__loader__ = self.loader  # the real loader, for importlib.resources etc.
                if getattr(module, "__spec__", None) is not None:
                    module.__spec__.loader = self.loader
            try:
                module.config.list_physical_devices()  # where TensorFlow logs the CUDA lookup
            except Exception:
                pass

        self.finder.remove()
        quietly(run, *self.finder.args)


def install(log_dir, patterns, no_driver):
    """Puts the finder first on sys.meta_path unless TensorFlow is imported (or it is there)."""
    import sys
    if "tensorflow" in sys.modules:
        return False
    if any(isinstance(f, QuietTensorFlowFinder) for f in sys.meta_path):
        return True
    sys.meta_path.insert(0, QuietTensorFlowFinder(log_dir, patterns, no_driver))
    return True
'

# The code above as a Python module (its functions find each other as module globals); its
# namespace dict, e.g. tf_startup_filter()[["install"]].
tf_startup_filter <- function() {
  if (is.null(.state$tf_filter)) {
    module <- reticulate::import("types", convert = FALSE)$ModuleType("optensorflow_tf_startup")
    namespace <- reticulate::py_get_attr(module, "__dict__")
    reticulate::import_builtins(convert = FALSE)$exec(tf_startup_filter_code, namespace)
    .state$tf_filter <- namespace
  }
  .state$tf_filter
}

tf_startup_log_wanted <- function() {
  isTRUE(getOption("optensorflow.tf_startup_log")) || identical(Sys.getenv("TF_CPP_MIN_LOG_LEVEL"), "0")
}

# Installs the import hook for TensorFlow's first import: from .onLoad through reticulate's
# "reticulate.onPyInit" hook (right after Python starts, whoever starts it: optensorflow, keras3,
# reticulate::import()), or at once if Python runs already, and again from ensure_keras_mode().
# Never fails: without it, TensorFlow's lines just show.
install_tf_startup_filter <- function() {
  if (tf_startup_log_wanted()) return(invisible(FALSE))
  done <- tryCatch({
    filter <- tf_startup_filter()
    reticulate::py_to_r(filter[["install"]](normalizePath(tempdir()), as.list(tf_startup_noise), tf_no_driver_noise))
  }, error = function(e) FALSE)
  invisible(isTRUE(done))
}

tf_startup_filter_on_load <- function() {
  if (reticulate::py_available(initialize = FALSE)) {
    install_tf_startup_filter()
  } else {
    setHook("reticulate.onPyInit", function() install_tf_startup_filter())
  }
  invisible()
}

# Called by ensure_keras_mode() once Python runs with the Keras mode settled: imports TensorFlow
# through the hook (a no-op if something imported it already). If R crashes while TensorFlow
# starts, its messages are in the file tempdir()/tf-startup-*.log.
import_tensorflow_quietly <- function() {
  if (!install_tf_startup_filter()) return(invisible(FALSE))
  if (reticulate::py_eval("__import__('importlib.util').util.find_spec('tensorflow') is None")) {
    return(invisible(FALSE)) # (reticulate::py_module_available() would import it)
  }
  done <- tryCatch({
    reticulate::import("tensorflow")
    TRUE
  }, error = function(e) FALSE) # the caller imports op_tensorflow next and reports the error
  invisible(done)
}
