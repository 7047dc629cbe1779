# The Python core, imported lazily so that library(optensorflow) works before Python is set up.
op <- NULL

.onLoad <- function(libname, pkgname) {
  op <<- reticulate::import("op_tensorflow", delay_load = TRUE)
}

#' Is the op_tensorflow Python package reachable?
#'
#' @return TRUE when reticulate's Python can import op_tensorflow.
op_tensorflow_available <- function() {
  reticulate::py_module_available("op_tensorflow")
}
