skip_if_no_op_tensorflow <- function() {
  if (!optensorflow::op_tensorflow_available()) {
    skip("op_tensorflow Python package not available to reticulate (set RETICULATE_PYTHON)")
  }
}
