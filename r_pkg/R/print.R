# Printing private objects shows their schema and budget, never values: the Python reprs of
# op_tensorflow's objects are data-independent (row counts, columns, dtypes, budget state).
# Conversions that would hand out rows are refused with a PrivacyError condition.

print_python_repr <- function(x, ...) {
  cat(reticulate::py_repr(x), "\n", sep = "")
  invisible(x)
}

#' Printing and conversion of private objects
#'
#' Private data frames, series and loaders, privacy budgets and private models print their
#' schema and budget state only, never values. Converting private data to R values
#' (`as.data.frame()`, `as.matrix()`, `as.vector()`, `as.list()`, `as.numeric()`, `head()`,
#' `tail()`) is refused with an error of class `PrivacyError`: use the DP aggregates
#' ([dp_mean()] etc.) or train a model instead.
#'
#' @name private_objects
#' @aliases PrivateDataFrame PrivateSeries PrivateDataLoader PrivacyBudget PrivateKerasModel
#' @examplesIf op_tensorflow_available()
#' pdf <- private_data_frame(data.frame(x = 1:5))
#' print(pdf)
#' tryCatch(as.data.frame(pdf), PrivacyError = function(e) conditionMessage(e))
NULL

#' @export
print.op_tensorflow.frame.PrivateDataFrame <- function(x, ...) print_python_repr(x)

#' @export
print.op_tensorflow.frame.PrivateSeries <- function(x, ...) print_python_repr(x)

#' @export
print.op_tensorflow.loader.PrivateDataLoader <- function(x, ...) print_python_repr(x)

#' @export
print.op_tensorflow.budget.PrivacyBudget <- function(x, ...) print_python_repr(x)

#' @export
print.op_tensorflow.model.PrivateKerasModel <- function(x, ...) print_python_repr(x)

refuse_conversion <- function(what, x) {
  py_stop("PrivacyError", .call = sys.call(-1), what, " would release raw private rows of this ", private_kind(x), ". ",
          "Use a DP aggregate (dp_count(), dp_sum(), dp_mean(), dp_describe() with eps = ...) ",
          "or train a model on it instead.")
}

private_kind <- function(x) {
  if (inherits(x, "op_tensorflow.frame.PrivateDataFrame")) return("PrivateDataFrame")
  if (inherits(x, "op_tensorflow.frame.PrivateSeries")) return("PrivateSeries")
  "PrivateDataLoader"
}

#' @export
as.data.frame.op_tensorflow.frame._PrivateBase <- function(x, row.names = NULL, optional = FALSE, ...) {
  refuse_conversion("as.data.frame()", x)
}
#' @export
as.data.frame.op_tensorflow.loader.PrivateDataLoader <- as.data.frame.op_tensorflow.frame._PrivateBase

#' @export
as.matrix.op_tensorflow.frame._PrivateBase <- function(x, ...) refuse_conversion("as.matrix()", x)
#' @export
as.matrix.op_tensorflow.loader.PrivateDataLoader <- as.matrix.op_tensorflow.frame._PrivateBase

#' @export
as.array.op_tensorflow.frame._PrivateBase <- function(x, ...) refuse_conversion("as.array()", x)

#' @export
as.vector.op_tensorflow.frame._PrivateBase <- function(x, mode = "any") refuse_conversion("as.vector()", x)
#' @export
as.vector.op_tensorflow.loader.PrivateDataLoader <- as.vector.op_tensorflow.frame._PrivateBase

#' @export
as.list.op_tensorflow.frame._PrivateBase <- function(x, ...) refuse_conversion("as.list()", x)
#' @export
as.list.op_tensorflow.loader.PrivateDataLoader <- as.list.op_tensorflow.frame._PrivateBase

#' @export
as.double.op_tensorflow.frame._PrivateBase <- function(x, ...) refuse_conversion("as.numeric()", x)
#' @export
as.integer.op_tensorflow.frame._PrivateBase <- function(x, ...) refuse_conversion("as.integer()", x)
#' @export
as.logical.op_tensorflow.frame._PrivateBase <- function(x, ...) refuse_conversion("as.logical()", x)

#' @importFrom utils head
#' @export
head.op_tensorflow.frame._PrivateBase <- function(x, ...) refuse_conversion("head()", x)
#' @export
head.op_tensorflow.loader.PrivateDataLoader <- head.op_tensorflow.frame._PrivateBase

#' @importFrom utils tail
#' @export
tail.op_tensorflow.frame._PrivateBase <- function(x, ...) refuse_conversion("tail()", x)
#' @export
tail.op_tensorflow.loader.PrivateDataLoader <- tail.op_tensorflow.frame._PrivateBase

# Python refuses len() of a loader (it has no row sequence); R calls length() on objects for
# printing and inspection, so a loader counts as one opaque object. Its row count is
# loader$sample_size.
#' @export
length.op_tensorflow.loader.PrivateDataLoader <- function(x) 1L
