#' optensorflow: differentially private deep learning with TensorFlow/Keras from R
#'
#' The R interface to the Python package 'op_tensorflow', reached through 'reticulate' (the R
#' keras and tensorflow packages are not needed). Set `RETICULATE_PYTHON` to a Python with
#' op_tensorflow installed (see [install_optensorflow()]) before loading the package.
#'
#' * Privacy accounting: [get_privacy_budget()], [compute_rdp()], [get_privacy_spent()],
#'   [compute_dp_sgd_privacy()], [noise_multiplier_for_epsilon()].
#' * Private data: [private_data_frame()], [train_test_split()], [dp_count()], [dp_sum()],
#'   [dp_mean()], [dp_describe()], [privacy_budget()], [private_data_loader()].
#' * Private training: [keras_module()], [private_keras_model()], [dp_compile()], [dp_fit()],
#'   [dp_predict()], [dp_evaluate()], [fix_model()], [validate_model()],
#'   [save_private_model()], [load_private_model()].
#' * TF Privacy's optimizers under the R blog's names: [dp_adam_gaussian_optimizer()],
#'   [dp_gradient_descent_gaussian_optimizer()].
#'
#' Python exceptions arrive as R errors classed by the exception's name, e.g.
#' `tryCatch(..., BudgetExceededError = function(e) ..., PrivacyError = function(e) ...)`;
#' Python warnings arrive as R warnings.
#' @keywords internal
"_PACKAGE"

# The Python core, imported lazily so that library(optensorflow) works before Python is set up.
op <- NULL

.onLoad <- function(libname, pkgname) {
  op <<- reticulate::import("op_tensorflow", delay_load = TRUE)
}

#' Is the op_tensorflow Python package reachable?
#'
#' @return TRUE when reticulate's Python can import op_tensorflow.
#' @examples
#' op_tensorflow_available()
#' @export
op_tensorflow_available <- function() {
  reticulate::py_module_available("op_tensorflow")
}
