# The blog's workflow with the real R keras 2.15 package (the blog's), on Keras 2 (tf_keras).
# Run by run.R with R_LIBS=.r-clients/keras and OPTENSORFLOW_KERAS=tf_keras (make
# test-r-clients); skipped where keras is not installed.
skip_if_not_installed("keras")
options(optensorflow.keras = "tf_keras") # before anything starts Python
suppressPackageStartupMessages({
  library(optensorflow)
  library(keras)
})
skip_if_not(op_tensorflow_available(), "op_tensorflow Python package not available to reticulate")
skip_if_not(optensorflow_stack()$keras == "tf_keras", "R keras 2.15 needs optensorflow's Keras 2 (tf_keras) mode")

run_blog_workflow()
check_custom_metric(custom_metric("mae_r", function(y_true, y_pred) k_mean(k_abs(y_true - y_pred))))
check_evaluate_masking("keras")
check_tfdatasets()
