# The bridge to Python: every call into op_tensorflow goes through py_call(), so Python
# exceptions arrive as classed R conditions and Python warnings as R warnings.

# Calls into Python and turns Python exceptions into R errors carrying the same message.
# The condition's class names the Python exception (e.g. "ValueError", "BudgetExceededError")
# so callers can tryCatch(..., ValueError = function(e) ...). Python warnings become R warnings.
# `.convert = FALSE` returns the raw Python object (no conversion to R), e.g. to take a pandas
# result apart in R without reticulate's pandas converters.
py_call <- function(fun, ..., .convert = TRUE) {
  ensure_keras_mode() # before `fun` and the arguments, which may import TensorFlow, are evaluated
  dots <- list(...)
  named <- if (is.null(names(dots))) rep(FALSE, length(dots)) else nzchar(names(dots))
  bridge <- reticulate::import("op_tensorflow._rbridge", convert = FALSE)
  res <- bridge$call(fun, unname(dots[!named]), dots[named])
  ok <- reticulate::py_to_r(res$get("ok"))
  for (w in reticulate::py_to_r(res$get("warnings"))) warning(w, call. = FALSE)
  if (!ok) {
    stop(py_condition(
      reticulate::py_to_r(res$get("error_class")),
      reticulate::py_to_r(res$get("message")),
      sys.call(sys.parent()) # the R function that called py_call, also through do.call()
    ))
  }
  value <- res$get("value")
  if (.convert) reticulate::py_to_r(value) else value
}

# An R error condition classed like the Python exception it stands for.
py_condition <- function(class, message, call = NULL) {
  structure(
    class = unique(c(class, "optensorflow_error", "error", "condition")),
    list(message = message, call = call)
  )
}

# Signals an error of a Python exception class raised on the R side (same classes as py_call's).
py_stop <- function(class, ..., .call = sys.call(-1)) {
  stop(py_condition(class, paste0(...), .call))
}

# reticulate's own errors (e.g. from `$` on a Python object) carry the Python exception name
# only in their message ("op_tensorflow.errors.PrivacyError: ..."); re-signal them classed.
rethrow_py_error <- function(e, call = NULL) {
  msg <- conditionMessage(e)
  m <- regmatches(msg, regexec("^([A-Za-z_][A-Za-z0-9_.]*\\.)?([A-Za-z_][A-Za-z0-9_]*(Error|Exception)): ", msg))[[1]]
  if (length(m) == 0) stop(e)
  stop(py_condition(m[3], trimws(substring(msg, nchar(m[1]) + 1)), call))
}

# Whole numbers from R arrive as doubles; pass them as integers so that printed values and
# argument errors read naturally.
as_py_count <- function(x) {
  if (is.numeric(x) && length(x) == 1 && is.finite(x) && x == round(x) && abs(x) < .Machine$integer.max) {
    as.integer(x)
  } else {
    x
  }
}

# Extra arguments passed on to Python (`...`), with whole numbers as integers.
as_py_args <- function(...) lapply(list(...), as_py_count)

# A shape (e.g. c(12, 6)) as a Python tuple of ints; NULL stays NULL.
as_py_shape <- function(x) {
  if (is.null(x) || inherits(x, "python.builtin.object")) return(x)
  if (!is.numeric(x) || length(x) == 0) {
    py_stop("TypeError", "feature_shape must be a vector of positive whole numbers, e.g. c(12, 6).")
  }
  do.call(reticulate::tuple, lapply(as.vector(x), as_py_count))
}

# An R vector of names or objects as a Python list (a length-1 character vector would
# otherwise become a Python str); NULL stays NULL, a single Python object becomes [object].
as_py_list <- function(x) {
  if (is.null(x)) return(NULL)
  if (is.function(x)) return(list(x))  # as.list() of a function would give its formals and body
  if (inherits(x, "python.builtin.object")) {
    if (inherits(x, c("python.builtin.list", "python.builtin.tuple"))) return(x)
    return(list(x))
  }
  as.list(x)
}

# Public data for Keras: an R matrix, array, vector or data.frame as a float32 numpy array;
# Python objects (numpy arrays, pandas frames; private objects are refused by Python) pass.
as_public_array <- function(x, arg = "x") {
  if (is.null(x) || inherits(x, "python.builtin.object")) return(x)
  if (is.data.frame(x)) {
    if (!all(vapply(x, function(col) is.numeric(col) || is.logical(col), logical(1)))) {
      py_stop("ValueError", arg, " must have numeric columns only.")
    }
    x <- as.matrix(x)
  }
  if (!is.numeric(x) && !is.logical(x)) {
    py_stop("TypeError", arg, " must be a numeric matrix, array, vector or data.frame, got ", class(x)[1], ".")
  }
  storage.mode(x) <- "double"
  reticulate::np_array(x, dtype = "float32")
}

# Attribute of a Python object, read through py_call (classed errors, converted to R).
py_attr <- function(x, name, .convert = TRUE) {
  py_call(reticulate::import_builtins(convert = FALSE)$getattr, x, name, .convert = .convert)
}

# A bound method of a Python object, bypassing the S3 `$` methods of this package (a column
# named like a method must not shadow it).
py_method <- function(x, name) {
  reticulate::py_get_attr(x, name)
}

is_private <- function(x) {
  inherits(x, c("op_tensorflow.frame._PrivateBase", "op_tensorflow.loader.PrivateDataLoader"))
}

is_private_frame <- function(x) inherits(x, "op_tensorflow.frame.PrivateDataFrame")

check_private_data <- function(x, arg = "x") {
  if (!inherits(x, "op_tensorflow.frame._PrivateBase")) {
    py_stop("TypeError", arg, " must be a private data frame or series (see private_data_frame()), got ",
            class(x)[1], ".")
  }
  invisible(x)
}

# The model inside a PrivateKerasModel, or the Keras model itself.
keras_model_of <- function(model) {
  if (inherits(model, "op_tensorflow.model.PrivateKerasModel")) py_attr(model, "model") else model
}
