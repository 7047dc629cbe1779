#' Poisson-sampled DP-SGD batches from private data
#'
#' Mirrors Python's `op_tensorflow.PrivateDataLoader`. At every step each row joins the batch
#' independently with probability `q = batch_size / n`, so batch sizes vary (and can be 0),
#' and `epochs` epochs take `ceiling(epochs * n / batch_size)` steps: training charges exactly
#' what [get_privacy_budget()] estimates. The loader never hands out rows: printing shows the
#' sample size, batch size, sampling rate, columns and input shape only.
#'
#' @param features The features: a private data frame, or a private series for one feature.
#'   Every column must be numeric (logical columns count as 0/1). Or the list returned by
#'   [private_arrays()] (then `labels` is its `y`).
#' @param labels The labels: a private series (labels of shape `(batch)`) or data frame, from
#'   the same private dataset as `features` and row-aligned with it (e.g. `pdf[c("x1", "x2")]`
#'   and `pdf$y`, or parts of one [train_test_split()] call).
#' @param batch_size The expected batch size, a whole number in `[1, n]`.
#' @param seed `NULL` draws the sampling from OS entropy (use this for real training); a whole
#'   number makes the batches reproducible (for tests).
#' @param feature_shape Optional per-example shape of the features as an integer vector, e.g.
#'   `c(12, 6)` to feed 72 columns to a 1-D convnet; its product must equal the number of
#'   feature columns. Columns are reshaped in row-major (C) order. Not needed for features from
#'   [private_arrays()]: they remember their per-example shape.
#' @param dropna If `FALSE` (default), missing or infinite values raise a `ValueError`; if
#'   `TRUE`, such rows are dropped (which makes the public sample size depend on the data).
#' @return A private data loader (the Python `PrivateDataLoader`), for [dp_fit()].
#' @examplesIf op_tensorflow_available()
#' df <- data.frame(matrix(runif(720), ncol = 72), y = runif(10))
#' pdf <- private_data_frame(df)
#' loader <- private_data_loader(pdf[paste0("X", 1:72)], pdf$y, batch_size = 2,
#'                               feature_shape = c(12, 6))
#' loader
#'
#' # sequences from an R array: no feature_shape needed
#' d <- private_arrays(array(runif(10 * 12 * 6), c(10, 12, 6)), runif(10),
#'                     feature_bounds = c(0, 1), label_bounds = c(0, 1))
#' private_data_loader(d, batch_size = 2)
#' @export
private_data_loader <- function(features, labels, batch_size, seed = NULL, feature_shape = NULL,
                                dropna = FALSE) {
  if (missing(labels) && is.list(features) && !inherits(features, "python.builtin.object") &&
      all(c("x", "y") %in% names(features))) {
    labels <- features$y
    features <- features$x
  }
  py_call(op$PrivateDataLoader, features, labels, as_py_count(batch_size),
          seed = as_py_count(seed), feature_shape = as_py_shape(feature_shape), dropna = dropna)
}
