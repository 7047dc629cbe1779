#' Wrap R arrays (sequences, images) and their labels as private data
#'
#' Mirrors Python's `op_tensorflow.private_arrays()`. `x` holds one example per entry of its
#' first index: a matrix `n x features`, sequences `n x timesteps x features` or images
#' `n x height x width x channels`. R's index order is kept: `x[i, j, k]` is example `i`,
#' timestep `j`, feature `k` in Python too (column `"x[j-1,k-1]"` of the private features, as
#' Python counts from 0). The features remember their per-example shape (`dim(x)[-1]`), so
#' [private_data_loader()] and [train_test_split()] need no `feature_shape`, and a Keras model
#' with that input shape can train on them, predict and evaluate.
#'
#' The bounds are public metadata given by the data owner and never computed from the data;
#' values outside them are clamped where they are used (the loader clamps features, DP
#' aggregates clamp to the bounds), as for [private_data_frame()]. Printing shows the shape,
#' the first columns with their bounds and the budget, never values.
#'
#' @param x A numeric (or logical) matrix or array with the examples along the first index.
#' @param y The labels, one per example: a numeric vector, a factor (used as integer codes
#'   `0, 1, ...`; its codes are the categories unless `label_categories` is given) or a matrix
#'   `n x k` (e.g. one-hot labels).
#' @param feature_bounds Public bounds of the feature values: `c(lower, upper)` for every value,
#'   or one pair per feature (the last index: a feature of a sequence, a channel of an image) as
#'   a matrix with one row `c(lower, upper)` per feature or a list of pairs. Required.
#' @param label_bounds Public `c(lower, upper)` of the labels (e.g. for regression targets).
#' @param label_categories Public numeric class codes of the labels, e.g. `c(0, 1)`. Give
#'   exactly one of `label_bounds` and `label_categories` (a factor `y` gives its own codes).
#' @inheritParams private_data_frame
#' @return A list: `x`, the private features (a private data frame of the flattened examples),
#'   and `y`, the private labels (a private series, or a private data frame for matrix labels),
#'   sharing one ledger and row-aligned.
#' @seealso [private_data_loader()], [train_test_split()], [private_data_frame()]
#' @examplesIf op_tensorflow_available()
#' x <- array(runif(100 * 12 * 6), c(100, 12, 6))   # 100 sequences, 12 timesteps, 6 features
#' y <- runif(100)
#' d <- private_arrays(x, y, feature_bounds = c(0, 1), label_bounds = c(0, 1),
#'                     epsilon = 3, delta = 1e-4)
#' d$x
#' unlist(d$x$example_shape)
#' loader <- private_data_loader(d$x, d$y, batch_size = 10)   # input shape c(12, 6)
#' @export
private_arrays <- function(x, y, feature_bounds, label_bounds = NULL, label_categories = NULL,
                           epsilon = Inf, delta = NULL, path = NULL, accountant = "rdp") {
  if (missing(feature_bounds)) {
    py_stop("ValueError", "feature_bounds must be given: c(lower, upper) for every value, or one pair per ",
            "feature; bounds are public and never guessed from the data.")
  }
  if (is.factor(y)) {
    if (is.null(label_bounds) && is.null(label_categories)) label_categories <- seq_along(levels(y)) - 1
    y <- as.integer(y) - 1L
  }
  x_py <- as_py_examples(x, "x")
  y_py <- as_py_examples(y, "y", vector_ok = TRUE)
  n <- if (inherits(x, "python.builtin.object")) py_attr(x_py, "shape")[[1]] else NROW(x)
  budget <- as_py_budget(epsilon, delta, path, accountant, n)
  res <- py_call(op$private_arrays, x_py, y_py,
                 feature_bounds = as_py_bounds(feature_bounds, "feature_bounds"),
                 label_bounds = as_py_bounds(label_bounds, "label_bounds", pairs = FALSE),
                 label_categories = if (is.null(label_categories)) NULL else as.list(as.numeric(label_categories)),
                 budget = budget)
  list(x = res[[1]], y = res[[2]])
}

# An R matrix/array (or vector, for labels) as a numpy array in R's index order; Python
# objects pass as they are.
as_py_examples <- function(x, arg, vector_ok = FALSE) {
  if (inherits(x, "python.builtin.object")) return(x)
  if (is.data.frame(x)) x <- as.matrix(x)
  if (!(is.numeric(x) || is.logical(x))) {
    py_stop("TypeError", arg, " must be a numeric or logical ", if (vector_ok) "vector, " else "",
            "matrix or array, got ", class(x)[1], ".")
  }
  if (is.null(dim(x)) && !vector_ok) {
    py_stop("ValueError", arg, " must be a matrix or array with one example per row (its first index), ",
            "got a vector; for one feature per example use matrix(", arg, ", ncol = 1).")
  }
  reticulate::np_array(x)
}

# c(lower, upper) as a Python tuple; with pairs = TRUE also a matrix (one row per feature) or a
# list of pairs, as a list of tuples. NULL stays NULL.
as_py_bounds <- function(bounds, arg, pairs = TRUE) {
  if (is.null(bounds)) return(NULL)
  pair <- function(b) {
    if (!is.numeric(b) || length(b) != 2) {
      py_stop("ValueError", arg, " must be c(lower, upper)", if (pairs) " or one such pair per feature" else "",
              ", got ", paste(format(b), collapse = ", "), ".")
    }
    reticulate::tuple(as.numeric(b[1]), as.numeric(b[2]))
  }
  if (pairs && is.matrix(bounds)) {
    if (ncol(bounds) != 2) py_stop("ValueError", arg, " as a matrix needs 2 columns (lower, upper), one row per feature.")
    return(lapply(seq_len(nrow(bounds)), function(i) pair(bounds[i, ])))
  }
  if (pairs && is.list(bounds)) return(lapply(bounds, pair))
  pair(bounds)
}

# The ledger as private_data_frame() makes it: delta defaults to 1 / (10 n) for an unlimited
# budget and is required for a finite one.
as_py_budget <- function(epsilon, delta, path, accountant, n) {
  if (!is.numeric(epsilon) || length(epsilon) != 1) py_stop("TypeError", "epsilon must be a number.")
  if (is.null(delta)) {
    if (!is.infinite(epsilon)) {
      py_stop("ValueError", "delta must be given with a finite epsilon, e.g. delta = 1e-5 (well below 1/n).")
    }
    delta <- 1 / (10 * max(n, 1))
  }
  if (!is.null(path)) path <- normalizePath(path.expand(path), mustWork = FALSE)
  py_call(op$PrivacyBudget, epsilon, delta, path = path, accountant = accountant)
}
