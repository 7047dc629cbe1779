#' optensorflow: differentially private deep learning with TensorFlow/Keras from R
#'
#' The R interface to the Python package 'op_tensorflow', reached through 'reticulate' (the R
#' keras and tensorflow packages are not needed). Set `RETICULATE_PYTHON` to a Python with
#' op_tensorflow installed (see [install_optensorflow()]) before loading the package. It runs on
#' Keras 3 by default, or on Keras 2 with `options(optensorflow.keras = "tf_keras")` set before
#' loading it (see [optensorflow_stack()]).
#'
#' * Privacy accounting: [get_privacy_budget()], [compute_rdp()], [get_privacy_spent()],
#'   [compute_dp_sgd_privacy()], [noise_multiplier_for_epsilon()].
#' * Private data: [private_data_frame()], [train_test_split()], [dp_count()], [dp_sum()],
#'   [dp_mean()], [dp_describe()], [privacy_budget()], [private_data_loader()].
#' * Private training: [keras_module()], [private_keras_model()], [dp_compile()], [dp_fit()],
#'   [dp_predict()], [dp_evaluate()], [fix_model()], [validate_model()],
#'   [save_private_model()], [load_private_model()].
#' * TF Privacy's optimizers under the R blog's names (Keras 2 only):
#'   [dp_adam_gaussian_optimizer()], [dp_gradient_descent_gaussian_optimizer()].
#' * The stack: [optensorflow_stack()] (and how to choose Keras 3 or Keras 2 with
#'   `options(optensorflow.keras = )`), [install_optensorflow()].
#'
#' Python exceptions arrive as R errors classed by the exception's name, e.g.
#' `tryCatch(..., BudgetExceededError = function(e) ..., PrivacyError = function(e) ...)`;
#' Python warnings arrive as R warnings. Their messages are shown in R spelling: the Python API's
#' names and syntax in hints (`PrivateKerasModel(..., fix=True)`, `metrics=['accuracy']`, "(x, y)
#' tuple") read as R's (`private_keras_model(..., fix = TRUE)`, `metrics = "accuracy"`,
#' `list(x, y)`). TensorFlow's start-up messages (oneDNN, CUDA, CPU instructions) are kept out of
#' the session; see "TensorFlow's start-up messages" in [optensorflow_stack()] to see them.
#' @keywords internal
"_PACKAGE"

# The Python core, imported lazily so that library(optensorflow) works before Python is set up.
op <- NULL

# Session state: the Keras mode once checked (see ensure_keras_mode()).
.state <- new.env(parent = emptyenv())

.onLoad <- function(libname, pkgname) {
  keras_mode_on_load()           # TF_USE_LEGACY_KERAS, before reticulate starts Python
  tf_log_level_on_load()         # TF_CPP_MIN_LOG_LEVEL = 1 unless set (see import_tensorflow_quietly())
  tf_startup_filter_on_load()    # TensorFlow's start-up lines filtered at its first import, by anyone
  declare_requirements_on_load() # reticulate >= 1.41: py_require() for the ephemeral environment
  op <<- reticulate::import("op_tensorflow", delay_load = TRUE)
  tf_keras_aliases_on_load()     # R keras 2.15's methods for tf_keras's classes (keras_objects.R)
}

#' Is the op_tensorflow Python package reachable?
#'
#' @return TRUE when reticulate's Python can import op_tensorflow.
#' @examples
#' op_tensorflow_available()
#' @export
op_tensorflow_available <- function() {
  if (!reticulate::py_available(initialize = FALSE)) keras_mode_on_load()
  reticulate::py_module_available("op_tensorflow")
}
