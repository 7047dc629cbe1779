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
  for (w in reticulate::py_to_r(res$get("warnings"))) warning(r_phrased(w), call. = FALSE)
  if (!ok) {
    stop(py_condition(
      reticulate::py_to_r(res$get("error_class")),
      r_phrased(reticulate::py_to_r(res$get("message"))),
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
  stop(py_condition(m[3], r_phrased(trimws(substring(msg, nchar(m[1]) + 1))), call))
}

# -- Python messages in R spelling ----------------------------------------------------------------
# op_tensorflow's messages name the Python API (`PrivateKerasModel(..., fix=True)`,
# `metrics=['accuracy']`, "(x, y) tuple"); R users are shown the R spelling. The Python messages
# stay as they are: py_call() and rethrow_py_error() rewrite every error and warning message they
# relay with r_phrased(): first the exact phrases of r_phrases (Python API -> R API), then a few
# regular expressions for Python's argument syntax (`name=value` -> `name = value`, True/False/None,
# 'strings' and [lists] as R values).

# Exact rewrites, applied in order (longer phrases before the shorter ones they contain).
r_phrases <- c(
  "`op_tensorflow.fix_model(model)` or `PrivateKerasModel(..., fix=True)`" =
    "`fix_model(model)` or `private_keras_model(..., fix = TRUE)`",
  "`fix_model(model, norm='layer')`" = "`fix_model(model, norm = \"layer\")`",
  "PrivateDataLoader(feature_df=X, label_df=y, batch_size=...)" = "private_data_loader(X, y, batch_size = ...)",
  "PrivateDataLoader(..., feature_shape=...)" = "private_data_loader(..., feature_shape = ...)",
  "op_tensorflow.PrivateKerasModel(model, l2_norm_clip=..., noise_multiplier=...)" =
    "private_keras_model(model, l2_norm_clip = ..., noise_multiplier = ...)",
  "PrivateKerasModel(model, l2_norm_clip=..., noise_multiplier=...)" =
    "private_keras_model(model, l2_norm_clip = ..., noise_multiplier = ...)",
  "with a standard optimizer such as tf.keras.optimizers.Adam" =
    "with a standard optimizer such as optimizer = \"adam\"",
  "; or set TF_USE_LEGACY_KERAS=1 before importing tensorflow to use Keras 2 (tf_keras)" =
    "; or restart R and set options(optensorflow.keras = \"tf_keras\") before library(optensorflow) to use Keras 2",
  "op_tensorflow.fix_model(model)" = "fix_model(model)",
  "PrivateKerasModel(..., " = "private_keras_model(..., ",
  "PrivateDataLoader(features, labels, " = "private_data_loader(features, labels, ",
  "tf.keras.layers.GroupNormalization" = "layer_group_normalization()",
  "(e.g. tf.keras.optimizers.Adam)" = "(e.g. optimizer_adam())",
  "tf.keras.metrics.MeanAbsoluteError()" = "metric_mean_absolute_error()",
  "numeric arrays (x, y)" = "numeric arrays list(x, y)",
  "PrivateDataLoader(..., " = "private_data_loader(..., ",
  "PrivateDataFrame(df, metadata=..., budget=...)" = "private_data_frame(df, metadata = ..., epsilon = ..., delta = ...)",
  "PrivateDataFrame(df, budget=...)" = "private_data_frame(df, epsilon = ..., delta = ...)",
  "loss='mse' or tf.keras.losses.BinaryCrossentropy()" = "loss = \"mse\" or loss = \"binary_crossentropy\"",
  "(count, sum, mean, describe with eps=...)" = "(dp_count(), dp_sum(), dp_mean(), dp_describe() with eps = ...)",
  "(e.g. (pdf['x'] > 0).sum(eps=...))" = "(e.g. dp_sum(pdf$x > 0, eps = ...))",
  "a public (x, y) tuple of arrays" = "a list(x, y) of public data",
  "(x, y) tuple" = "list(x, y)",
  "(x, y) pair" = "list(x, y)",
  "``(x, y)``" = "list(x, y)",
  "x must be a PrivateDataLoader" = "x must be a private data loader (private_data_loader())",
  "must be a tuple of positive integers" = "must be a vector of positive whole numbers, e.g. c(12, 6)",
  "tf.keras.callbacks." = "",
  "dp_model.compile(" = "compile(dp_model, ",
  "model.compile(" = "compile(model, ",
  "call compile(" = "call compile(dp, "
)

r_phrased <- function(msg) {
  if (!is.character(msg) || length(msg) != 1 || is.na(msg)) return(msg)
  for (i in seq_along(r_phrases)) msg <- gsub(names(r_phrases)[i], r_phrases[[i]], msg, fixed = TRUE)
  sub_all <- function(pattern, replacement, x) gsub(pattern, replacement, x, perl = TRUE)
  # keyword arguments: `name=value` -> `name = value` (not ==, <=, >=, !=)
  msg <- sub_all("(?<![=!<>\\w.])([a-z_][a-z0-9_]*)=(?!=)", "\\1 = ", msg)
  # Python values after `=` and after "be"/"or": True/False/None -> TRUE/FALSE/NULL
  msg <- sub_all("(= |\\bbe |\\bor |, )True\\b", "\\1TRUE", msg)
  msg <- sub_all("(= |\\bbe |\\bor |, )False\\b", "\\1FALSE", msg)
  msg <- sub_all("(= |\\bbe |\\bor |, |\\(|`)None\\b", "\\1NULL", msg)
  # one-element lists of strings: `= ['accuracy']` -> `= "accuracy"`; longer ones -> c("a", "b")
  msg <- sub_all("= \\[\\s*'([^'\\]]*)'\\s*\\]", "= \"\\1\"", msg)
  msg <- sub_all("= \\[((?:\\s*'[^'\\]]*'\\s*,)+\\s*'[^'\\]]*'\\s*)\\]", "= c(\\1)", msg)
  msg <- sub_all("= \\[\\.\\.\\.\\]", "= c(...)", msg)
  # single-quoted strings as argument values: `= 'mse'` -> `= "mse"` (also inside c(...))
  while (grepl("(= |c\\((?:\"[^\"]*\", )*)'([^'\\s]*)'", msg, perl = TRUE)) {
    msg <- sub_all("(= |c\\((?:\"[^\"]*\", )*)'([^'\\s]*)'", "\\1\"\\2\"", msg)
  }
  # other single-quoted names (Python's repr of a string): 'mae' -> "mae"
  msg <- sub_all("(?<![\\w'])'([A-Za-z_][\\w.]*)'(?![\\w'])", "\"\\1\"", msg)
  # shapes: "shape (12, 6)" / "feature_shape (73,)" -> c(12, 6) / c(73)
  msg <- sub_all("(shape |input |labels |got )\\((\\d+(?:, \\d+)*),?\\)", "\\1c(\\2)", msg)
  # Python type names in "got <type>": the R types they come from
  types <- c(str = "a character string", dict = "a named list", NoneType = "NULL", float = "a number",
             int = "a whole number", bool = "a logical")
  for (t in names(types)) msg <- sub_all(paste0("\\bgot ", t, "\\b(?![(\\w]|\\.\\w)"), paste("got", types[[t]]), msg)
  msg
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
