# The blog's workflow with the real keras3 R package (Keras 3). Run by run.R with
# R_LIBS=.r-clients/keras3 (make test-r-clients); skipped where keras3 is not installed.
skip_if_not_installed("keras3")
suppressPackageStartupMessages({
  library(optensorflow)
  library(keras3)
})
skip_if_not(op_tensorflow_available(), "op_tensorflow Python package not available to reticulate")
skip_if_not(optensorflow_stack()$keras == "keras3", "keras3 needs optensorflow's Keras 3 mode")

run_blog_workflow()
check_custom_metric(custom_metric("mae_r", function(y_true, y_pred) op_mean(op_abs(y_true - y_pred))))
check_evaluate_masking("keras3")
check_tfdatasets()
