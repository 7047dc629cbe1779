# The Keras mode (options(optensorflow.keras = ), OPTENSORFLOW_KERAS) and the install requirements.

# The mode this test session asked for, as the Makefile's test-r / test-r-tf-keras targets set it.
requested_mode <- function() {
  value <- getOption("optensorflow.keras", Sys.getenv("OPTENSORFLOW_KERAS", ""))
  if (tolower(value) %in% c("tf_keras", "keras2")) "tf_keras" else "keras3"
}

# Runs R code in a fresh R process (its own Python) with this session's library paths.
run_r <- function(code, env = character()) {
  script <- tempfile(fileext = ".R")
  on.exit(unlink(script))
  writeLines(c(sprintf(".libPaths(%s)", deparse(.libPaths(), width.cutoff = 500L)), code), script)
  out <- suppressWarnings(system2(file.path(R.home("bin"), "Rscript"), shQuote(script), stdout = TRUE,
                                  stderr = FALSE, env = env))
  out[startsWith(out, "RESULT ")]
}

test_that("optensorflow_stack returns R strings, and the mode asked for is the Keras in use", {
  skip_if_no_op_tensorflow()
  stack <- optensorflow_stack()
  expect_type(stack, "list")
  expect_named(stack, c("python", "tensorflow", "keras_version", "keras", "keras_package", "tf_privacy",
                        "dp_accounting", "numpy"))
  for (field in stack) {
    expect_type(field, "character")
    expect_length(field, 1)
  }
  expect_match(stack$python, "^3\\.1[12]\\.")
  expect_match(stack$tensorflow, "^2\\.(15|21)\\.")
  expect_true(stack$keras %in% c("keras3", "tf_keras"))
  if (startsWith(stack$tensorflow, "2.15")) {
    expect_identical(stack$keras, "tf_keras") # TensorFlow 2.15 has Keras 2 only
  } else {
    expect_identical(stack$keras, requested_mode())
  }
  expect_identical(stack$keras_package == "tf_keras", stack$keras == "tf_keras" && !startsWith(stack$tensorflow, "2.15"))
  expect_match(stack$keras_version, if (stack$keras == "keras3") "^3\\." else "^2\\.")
  expect_true(startsWith(stack$numpy, "1.")) # numpy < 2 for reticulate
  # the Python side agrees
  seam <- reticulate::import("op_tensorflow.keras_seam")
  expect_identical(isTRUE(seam$KERAS3), stack$keras == "keras3")
  expect_match(seam$keras_description(), stack$keras_version, fixed = TRUE)
})

test_that("the option selects the other Keras in a new session, and overrides TF_USE_LEGACY_KERAS", {
  skip_if_no_op_tensorflow()
  stack <- optensorflow_stack()
  other <- if (stack$keras == "keras3") "tf_keras" else "keras3"
  out <- run_r(c(
    sprintf("options(optensorflow.keras = %s)", deparse(other)),
    "library(optensorflow)",
    "res <- tryCatch(optensorflow_stack()$keras, KerasModeError = function(e) 'KerasModeError')",
    "cat('RESULT', res, Sys.getenv('TF_USE_LEGACY_KERAS', 'unset'), '\\n')"
  ), env = c("OPTENSORFLOW_KERAS=", if (other == "keras3") "TF_USE_LEGACY_KERAS=1"))
  if (startsWith(stack$tensorflow, "2.15")) {
    expect_identical(out, "RESULT KerasModeError unset ") # no Keras 3 on TF 2.15
  } else {
    expect_identical(out, paste("RESULT", other, if (other == "keras3") "unset" else "1", ""))
  }
})

test_that("a Python already running the other Keras gives a KerasModeError saying how to fix it", {
  skip_if_no_op_tensorflow()
  stack <- optensorflow_stack()
  if (startsWith(stack$tensorflow, "2.15")) {
    other <- "keras3"
    start <- "invisible(reticulate::import('tensorflow')$keras$Model)"
  } else {
    other <- if (stack$keras == "keras3") "tf_keras" else "keras3"
    # TensorFlow imported (and tf.keras resolved) in the current mode before optensorflow is asked for the other
    start <- c(sprintf("Sys.setenv(TF_USE_LEGACY_KERAS = %s)", if (other == "keras3") "'1'" else "''"),
               "invisible(reticulate::import('tensorflow')$keras$Model)")
  }
  out <- run_r(c(
    start,
    "library(optensorflow)",
    sprintf("options(optensorflow.keras = %s)", deparse(other)),
    "e <- tryCatch(get_privacy_budget(1000, 10, 1, 1.1, verbose = FALSE), error = function(e) e)",
    "cat('RESULT', class(e)[1], '\\n')",
    "cat('RESULT', gsub('\\n', ' ', conditionMessage(e)), '\\n')",
    "e2 <- tryCatch(keras_module(), error = function(e) e)", # still refused, not half-initialized
    "cat('RESULT', class(e2)[1], '\\n')"
  ), env = "OPTENSORFLOW_KERAS=")
  expect_length(out, 3)
  expect_identical(out[1], "RESULT KerasModeError ")
  expect_match(out[2], "by the option optensorflow.keras, but reticulate's Python already runs", fixed = TRUE)
  expect_match(out[2], sprintf("Restart R and set options(optensorflow.keras = \"%s\")", other), fixed = TRUE)
  expect_match(out[2], "before library(optensorflow)", fixed = TRUE)
  expect_identical(out[3], "RESULT KerasModeError ")
})

test_that("the mode setting's precedence: option, OPTENSORFLOW_KERAS, TF_USE_LEGACY_KERAS, default", {
  old_opt <- options(optensorflow.keras = NULL)
  old_env <- Sys.getenv(c("OPTENSORFLOW_KERAS", "TF_USE_LEGACY_KERAS"), unset = NA)
  old_flag <- .state$legacy_set_by_us
  on.exit({
    options(old_opt)
    for (name in names(old_env)) {
      if (is.na(old_env[[name]])) Sys.unsetenv(name) else do.call(Sys.setenv, as.list(old_env[name]))
    }
    .state$legacy_set_by_us <- old_flag
  })
  .state$legacy_set_by_us <- FALSE
  Sys.unsetenv(c("OPTENSORFLOW_KERAS", "TF_USE_LEGACY_KERAS"))
  expect_identical(keras_mode_setting()[c("mode", "explicit")], list(mode = "keras3", explicit = FALSE))
  Sys.setenv(TF_USE_LEGACY_KERAS = "true")
  expect_identical(keras_mode_setting()$mode, "tf_keras")
  expect_match(keras_mode_setting()$source, "TF_USE_LEGACY_KERAS")
  Sys.setenv(TF_USE_LEGACY_KERAS = "0")
  expect_identical(keras_mode_setting()$mode, "keras3")
  Sys.setenv(OPTENSORFLOW_KERAS = "keras2", TF_USE_LEGACY_KERAS = "0")
  expect_identical(keras_mode_setting()$mode, "tf_keras") # the alias
  expect_match(keras_mode_setting()$source, "OPTENSORFLOW_KERAS")
  options(optensorflow.keras = "KERAS3")
  expect_identical(keras_mode_setting()[c("mode", "explicit")], list(mode = "keras3", explicit = TRUE))
  options(optensorflow.keras = "keras4")
  expect_error(keras_mode_setting(), "the option optensorflow.keras must be \"keras3\" or \"tf_keras\"",
               fixed = TRUE, class = "ValueError")
  options(optensorflow.keras = c("keras3", "tf_keras"))
  expect_error(keras_mode_setting(), "got a character", class = "ValueError")
})

test_that("optensorflow_requirements: the primary stack, Keras 2 on TF 2.21 or 2.15.1, Python 3.12", {
  primary <- optensorflow_requirements()
  expect_identical(primary$keras, "keras3")
  expect_identical(primary$packages, c("tensorflow==2.21.0", "tf-keras==2.21.0", "numpy<2", "op-tensorflow"))
  expect_identical(primary$no_deps, c("tensorflow-privacy==0.9.0", "tensorflow-empirical-privacy==0.1.0"))
  expect_identical(primary$no_deps_flags, "--no-deps")
  expect_false(primary$imp_shim)
  expect_identical(primary$python_version, "3.11")
  expect_identical(primary$steps, list(
    c("-m", "pip", "install", "--upgrade", "pip>=24"),
    c("-m", "pip", "install", "tensorflow==2.21.0", "tf-keras==2.21.0", "numpy<2", "op-tensorflow"),
    c("-m", "pip", "install", "--no-deps", "tensorflow-privacy==0.9.0", "tensorflow-empirical-privacy==0.1.0")
  ))
  # Keras 2 on TF 2.21: the same environment (the mode is chosen when R starts Python)
  tf_keras <- optensorflow_requirements(keras = "tf_keras")
  expect_identical(tf_keras$keras, "tf_keras")
  expect_identical(tf_keras$steps, primary$steps)
  expect_identical(optensorflow_requirements(keras = "keras2")$keras, "tf_keras")
  # TF 2.15.1: Keras 2 only, dp-accounting 0.4.3
  tf215 <- optensorflow_requirements(tensorflow = "2.15.1", package = "op-tensorflow==0.1.0")
  expect_identical(tf215$keras, "tf_keras")
  expect_identical(tf215$packages, c("tensorflow==2.15.1", "dp-accounting==0.4.3", "numpy<2", "op-tensorflow==0.1.0"))
  expect_identical(tf215$no_deps_flags, "--no-deps")
  # Python 3.12: TF Privacy needs --ignore-requires-python, and reticulate 1.28 the imp shim
  py312 <- optensorflow_requirements(python_version = "3.12")
  expect_identical(py312$no_deps_flags, c("--no-deps", "--ignore-requires-python"))
  expect_true(py312$imp_shim)
  expect_identical(py312$steps[[3]], c("-m", "pip", "install", "--no-deps", "--ignore-requires-python",
                                       "tensorflow-privacy==0.9.0", "tensorflow-empirical-privacy==0.1.0"))
  expect_identical(py312$steps[[4]], c("-m", "op_tensorflow.stack", "--install-imp-shim"))
  # py_require(): no Python chosen yet, the primary stack's Python
  expect_identical(optensorflow_requirements(python_version = NULL)$python_version, "3.11")
  # a local checkout is passed to pip as an absolute path
  dir <- tempfile("op-tensorflow")
  dir.create(dir)
  on.exit(unlink(dir, recursive = TRUE))
  expect_identical(optensorflow_requirements(package = dir)$packages[4], normalizePath(dir))
})

test_that("install_optensorflow checks its arguments before installing anything", {
  expect_error(optensorflow_requirements(tensorflow = "2.15.1", keras = "keras3"), "TensorFlow 2.15.1 has no Keras 3")
  expect_error(optensorflow_requirements(tensorflow = "2.16.0"), "tensorflow must be \"2.21.0\" or \"2.15.1\"")
  expect_error(optensorflow_requirements(keras = "keras4"), "keras must be \"keras3\" or \"tf_keras\"")
  expect_error(optensorflow_requirements(python_version = "3.10"), "Python 3.11 or 3.12, got Python 3.10")
  expect_error(optensorflow_requirements(tensorflow = "2.15.1", python_version = "3.12"), "needs Python 3.11")
  expect_error(optensorflow_requirements(package = ""), "package must be a pip requirement")
  expect_error(install_optensorflow(python = "", method = "virtualenv"), "Python 3.11")
  expect_error(install_optensorflow(tensorflow = "2.16.0"), "should be one of")
  expect_error(install_optensorflow(python = "", keras = "keras3", tensorflow = "2.15.1", method = "virtualenv"),
               "Python 3.11")
  if (utils::packageVersion("reticulate") < "1.41") {
    expect_error(install_optensorflow(method = "py_require"), "needs reticulate >= 1.41")
  }
})

test_that("TensorFlow's start-up noise stays out of a fresh R session's stderr; other lines pass", {
  skip_if_no_op_tensorflow()
  script <- tempfile(fileext = ".R")
  err <- tempfile(fileext = ".txt")
  on.exit(unlink(c(script, err)))
  writeLines(c(
    sprintf(".libPaths(%s)", deparse(.libPaths(), width.cutoff = 500L)),
    "library(optensorflow)",
    "s <- optensorflow_stack()",
    "k <- keras_module()",
    "net <- k$Sequential(list(k$Input(shape = list(2L)), k$layers$Dense(1L)))",
    "invisible(net$predict(matrix(0, 1, 2), verbose = 0L))",
    "cat('TF_CPP_MIN_LOG_LEVEL', Sys.getenv('TF_CPP_MIN_LOG_LEVEL'), '\\n')",
    "cat('a real error line\\n', file = stderr())"
  ), script)
  # as a user has it: TF_CPP_MIN_LOG_LEVEL not set
  out <- suppressWarnings(system2(file.path(R.home("bin"), "Rscript"), shQuote(script), stdout = TRUE,
                                  stderr = err, env = "TF_CPP_MIN_LOG_LEVEL="))
  lines <- readLines(err)
  noise <- c("Unable to register", "oneDNN custom operations", "This TensorFlow binary is optimized",
             "Could not find cuda drivers", "absl::InitializeLog", "To enable the following instructions",
             "failed call to cuInit", "Could not find TensorRT")
  for (n in noise) expect_false(any(grepl(n, lines, fixed = TRUE)), label = paste("stderr has", n))
  expect_true("a real error line" %in% lines)
  expect_true("TF_CPP_MIN_LOG_LEVEL 1 " %in% out) # set because the user had not set it
})

test_that("TensorFlow's start-up noise is filtered when something else imports TensorFlow first", {
  skip_if_no_op_tensorflow()
  script <- tempfile(fileext = ".R")
  err <- tempfile(fileext = ".txt")
  on.exit(unlink(c(script, err)))
  writeLines(c(
    sprintf(".libPaths(%s)", deparse(.libPaths(), width.cutoff = 500L)),
    "library(optensorflow)",
    "tf <- reticulate::import('tensorflow')  # as keras3 or the tensorflow package would",
    "invisible(tf$constant(1))",
    "sys <- reticulate::import('sys')",
    "cat('LOADER', class(tf$`__spec__`$loader)[1], '\n')",   # the real loader is back
    "cat('HOOKS', sum(grepl('Quiet', vapply(sys$meta_path, function(f) class(f)[1], ''))), '\n')",
    "cat('STACK', optensorflow_stack()$keras, '\n')"
  ), script)
  out <- suppressWarnings(system2(file.path(R.home("bin"), "Rscript"), shQuote(script), stdout = TRUE,
                                  stderr = err, env = "TF_CPP_MIN_LOG_LEVEL="))
  lines <- readLines(err)
  for (n in c("oneDNN custom operations", "Could not find cuda drivers", "absl::InitializeLog",
              "Unable to register", "failed call to cuInit")) {
    expect_false(any(grepl(n, lines, fixed = TRUE)), label = paste("stderr has", n))
  }
  expect_true(any(grepl("^LOADER .*SourceFileLoader", out)))
  expect_true("HOOKS 0 " %in% out)
  expect_true(any(startsWith(out, "STACK ")))
})

test_that("the start-up filter drops only the known TensorFlow lines", {
  skip_if_no_op_tensorflow()
  filter <- tf_startup_filter()[["filter_tf_startup"]]
  text <- paste0(c(
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1.2 31840 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results.",
    "I0000 00:00:1.2 31840 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
    "2026-12-01 13:05:20.492009: E external/local_xla/xla/stream_executor/cuda/cuda_dnn.cc:9261] Unable to register cuDNN factory: Attempting to register factory for plugin cuDNN when one has already been registered",
    "E0000 00:00:1.3 32040 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1.3 32040 some_op.cc:1] a real error",
    "Traceback (most recent call last):"
  ), "\n", collapse = "")
  kept <- reticulate::py_to_r(filter(text, as.list(tf_startup_noise), tf_no_driver_noise))
  expect_identical(kept, "E0000 00:00:1.3 32040 some_op.cc:1] a real error\nTraceback (most recent call last):\n")
  # without the no-driver line, a cuInit failure is a real error and shown
  cuinit <- "E0000 00:00:1.3 32040 cuda_platform.cc:52] failed call to cuInit: CUDA_ERROR_NO_DEVICE\n"
  expect_identical(reticulate::py_to_r(filter(cuinit, as.list(tf_startup_noise), tf_no_driver_noise)), cuinit)
})

test_that("install_optensorflow(method = \"virtualenv\") creates the environment and runs the pip steps in order", {
  # Creates a real virtualenv (reticulate fetches pip from PyPI), with the pip steps recorded instead
  # of run (they would download TensorFlow): set OPTENSORFLOW_TEST_VIRTUALENV=1 to run it.
  skip_if_not(identical(Sys.getenv("OPTENSORFLOW_TEST_VIRTUALENV"), "1"), "OPTENSORFLOW_TEST_VIRTUALENV=1 not set")
  python <- find_python("3.11")
  skip_if_not(nzchar(python), "no Python 3.11")
  env <- file.path(tempfile("optensorflow venv"))
  steps <- list()
  original <- run_python
  utils::assignInNamespace("run_python", function(python, args) {
    steps[[length(steps) + 1]] <<- list(python = python, args = args)
    invisible()
  }, "optensorflow")
  on.exit({
    utils::assignInNamespace("run_python", original, "optensorflow")
    unlink(env, recursive = TRUE)
  })
  expect_message(py <- install_optensorflow(envname = env, package = "op-tensorflow==0.1.0", python = python,
                                            method = "virtualenv"),
                 "set Sys.setenv(RETICULATE_PYTHON = ", fixed = TRUE)
  expect_true(file.exists(py))
  expect_identical(unique(vapply(steps, `[[`, "", "python")), py)
  reqs <- optensorflow_requirements(package = "op-tensorflow==0.1.0", python_version = "3.11")
  expect_identical(lapply(steps, `[[`, "args"),
                   c(reqs$steps, list(c("-m", "op_tensorflow.stack", "--expect-tensorflow", "2.21.0"))))
})

test_that("find_python finds an interpreter of the version asked for, or gives \"\"", {
  python <- find_python(c("3.11", "3.12"))
  if (nzchar(python)) expect_match(python_minor_version(python), "^3\\.1[12]$")
  expect_identical(find_python("2.1"), "")
})
