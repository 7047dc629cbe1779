#' Wrap an R data.frame as private data
#'
#' Mirrors Python's `op_tensorflow.PrivateDataFrame(df, metadata=, budget=)`. The rows are
#' copied into Python once; from then on only the schema (column names and types, public
#' metadata, row count) and the budget are visible, and numbers come out only as
#' differentially private aggregates ([dp_count()], [dp_sum()], [dp_mean()],
#' [dp_describe()]) charged to the dataset's ledger, or by training a model on it.
#'
#' Select columns with `pdf[c("a", "b")]` (a private frame), `pdf[["a"]]` or `pdf$a` (a private
#' series); other names after `$` reach the Python object's attributes (e.g. `pdf$columns`).
#' `names()`, `dim()`, `nrow()` and `ncol()` give the public schema. Arithmetic and
#' comparisons of private series with each other or with numbers give private series
#' (bounds follow by interval arithmetic). Row selection, `as.data.frame()`, `as.matrix()`,
#' `as.vector()`, `as.list()`, `head()` and `tail()` are refused with a `PrivacyError`.
#'
#' @param df An R data.frame (or a pandas DataFrame).
#' @param metadata Public facts about columns: a named list whose elements are `c(lower, upper)`
#'   numeric bounds or character vectors of categories, e.g.
#'   `list(age = c(0, 100), sex = c("f", "m"))`. DP sums and means need bounds; they are never
#'   guessed from the data.
#' @param epsilon The dataset's privacy budget; `Inf` (the default) is unlimited, though every
#'   charge is still recorded.
#' @param delta The delta at which the ledger accounts everything. `NULL` means
#'   `1 / (10 * nrow(df))` when `epsilon` is `Inf` (Python's default); with a finite `epsilon`
#'   it must be given.
#' @param path Optional JSON file for a persistent ledger (`op_tensorflow.PrivacyBudget(path=)`):
#'   loaded if it exists (its epsilon, delta and accountant must match), created otherwise.
#'   Concurrent processes sharing the file never overspend.
#' @param accountant `"rdp"` or `"pld"`, the accountant composing the ledger's events.
#' @return A private data frame (the Python `PrivateDataFrame`).
#' @seealso [privacy_budget()], [train_test_split()], [private_data_loader()]
#' @examplesIf op_tensorflow_available()
#' df <- data.frame(x = runif(100, 0, 10), y = rbinom(100, 1, 0.5))
#' pdf <- private_data_frame(df, metadata = list(x = c(0, 10), y = c(0, 1)),
#'                           epsilon = 3, delta = 1e-4)
#' pdf
#' names(pdf); dim(pdf)
#' dp_mean(pdf$x, eps = 0.5)
#' privacy_budget(pdf)
#' @export
private_data_frame <- function(df, metadata = NULL, epsilon = Inf, delta = NULL, path = NULL,
                               accountant = "rdp") {
  if (is.data.frame(df)) {
    n <- nrow(df)
    if (is.null(names(df)) || any(!nzchar(names(df)))) py_stop("ValueError", "every column of df needs a name.")
    py_df <- reticulate::r_to_py(df)
  } else if (inherits(df, "pandas.core.frame.DataFrame")) {
    n <- py_attr(df, "shape")[[1]]
    py_df <- df
  } else {
    py_stop("TypeError", "df must be an R data.frame or a pandas DataFrame, got ", class(df)[1], ".")
  }
  if (!is.numeric(epsilon) || length(epsilon) != 1) py_stop("TypeError", "epsilon must be a number.")
  if (is.null(delta)) {
    if (!is.infinite(epsilon)) {
      py_stop("ValueError", "delta must be given with a finite epsilon, e.g. delta = 1e-5 (well below 1/nrow(df)).")
    }
    delta <- 1 / (10 * max(n, 1))
  }
  if (!is.null(path)) path <- normalizePath(path.expand(path), mustWork = FALSE)
  budget <- py_call(op$PrivacyBudget, epsilon, delta, path = path, accountant = accountant)
  py_call(op$PrivateDataFrame, py_df, metadata = as_py_metadata(metadata), budget = budget)
}

# metadata as Python wants it: bounds as (lower, upper) tuples, categories as lists.
as_py_metadata <- function(metadata) {
  if (is.null(metadata)) return(NULL)
  if (!is.list(metadata) || length(metadata) && (is.null(names(metadata)) || any(!nzchar(names(metadata))))) {
    py_stop("TypeError", "metadata must be a named list, e.g. list(age = c(0, 100), sex = c(\"f\", \"m\")).")
  }
  out <- lapply(names(metadata), function(name) {
    m <- metadata[[name]]
    if (is.list(m)) m <- unlist(m)
    if (is.factor(m)) m <- levels(m)
    if (is.character(m)) return(as.list(m))
    if (is.numeric(m) && length(m) == 2) return(reticulate::tuple(as.numeric(m[1]), as.numeric(m[2])))
    py_stop("ValueError", "metadata for '", name, "' must be c(lower, upper) numbers or a character vector ",
            "of categories.")
  })
  stats::setNames(out, names(metadata))
}

# ---------------------------------------------------------------------------------------
# Column selection and schema

frame_columns <- function(x) as.character(unlist(py_attr(x, "columns")))

# Column names from a character, numeric or logical index.
column_index <- function(x, i) {
  if (is.character(i)) return(i)
  if (inherits(i, "op_tensorflow.frame.PrivateSeries")) { # a private row filter: Python refuses it
    return(py_call(py_method(x, "__getitem__"), i))
  }
  cols <- frame_columns(x)
  if (is.numeric(i) || is.logical(i)) {
    picked <- cols[i]
    if (anyNA(picked)) py_stop("KeyError", "column index out of range; the frame has ", length(cols), " columns.")
    return(picked)
  }
  py_stop("TypeError", "columns must be selected by name, position or logical vector.")
}

refuse_rows <- function() {
  py_stop("PrivacyError", .call = sys.call(-1), "Selecting rows would release which rows are where in this private data. ",
          "Select columns only (pdf[c(\"a\", \"b\")], pdf[[\"a\"]], pdf$a), split with train_test_split(), ",
          "or use a DP aggregate.")
}

#' @export
`[.op_tensorflow.frame.PrivateDataFrame` <- function(x, i, j, ..., drop = FALSE) {
  n_args <- nargs() - (!missing(drop))
  if (n_args <= 2) { # x[i]: columns
    if (missing(i)) return(x)
    cols <- column_index(x, i)
  } else { # x[i, j]
    if (!missing(i)) refuse_rows()
    if (missing(j)) return(x)
    cols <- column_index(x, j)
  }
  py_call(py_method(x, "__getitem__"), as.list(cols))
}

#' @export
`[[.op_tensorflow.frame.PrivateDataFrame` <- function(x, i, ...) {
  name <- column_index(x, i)
  if (length(name) != 1) py_stop("ValueError", "[[ selects exactly one column; use [ for several.")
  py_call(py_method(x, "__getitem__"), name)
}

#' @export
`$.op_tensorflow.frame.PrivateDataFrame` <- function(x, name) {
  if (name %in% frame_columns(x)) return(py_call(py_method(x, "__getitem__"), name))
  call <- sys.call()
  tryCatch(NextMethod(), error = function(e) rethrow_py_error(e, call))
}

# Attribute access on series and loaders: reticulate's, with Python's refusals classed.
#' @export
`$.op_tensorflow.frame.PrivateSeries` <- function(x, name) {
  call <- sys.call()
  tryCatch(NextMethod(), error = function(e) rethrow_py_error(e, call))
}

#' @export
`$.op_tensorflow.loader.PrivateDataLoader` <- `$.op_tensorflow.frame.PrivateSeries`

#' @export
`[[<-.op_tensorflow.frame.PrivateDataFrame` <- function(x, i, value) {
  if (!is.character(i) || length(i) != 1) py_stop("TypeError", "columns are assigned by one name.")
  py_call(py_method(x, "__setitem__"), i, value)
  x
}

#' @export
`$<-.op_tensorflow.frame.PrivateDataFrame` <- function(x, name, value) {
  py_call(py_method(x, "__setitem__"), name, value)
  x
}

#' @export
`[.op_tensorflow.frame.PrivateSeries` <- function(x, ...) refuse_rows()

#' @export
names.op_tensorflow.frame.PrivateDataFrame <- function(x) frame_columns(x)

#' @export
dim.op_tensorflow.frame.PrivateDataFrame <- function(x) as.integer(unlist(py_attr(x, "shape")))

#' @importFrom utils .DollarNames
#' @export
.DollarNames.op_tensorflow.frame.PrivateDataFrame <- function(x, pattern = "") {
  cols <- frame_columns(x)
  c(grep(pattern, cols, value = TRUE), setdiff(NextMethod(), cols))
}

#' @export
Ops.op_tensorflow.frame._PrivateBase <- function(e1, e2) {
  ops <- c("+" = "add", "-" = "sub", "*" = "mul", "/" = "truediv", "==" = "eq", "!=" = "ne",
           "<" = "lt", "<=" = "le", ">" = "gt", ">=" = "ge")
  operator <- reticulate::import("operator", convert = FALSE)
  if (missing(e2)) {
    if (.Generic == "+") return(e1)
    if (.Generic == "-") return(py_call(operator$neg, e1))
    py_stop("TypeError", "unary ", .Generic, " is not supported on private data.")
  }
  if (!.Generic %in% names(ops)) py_stop("TypeError", "operator ", .Generic, " is not supported on private data.")
  for (e in list(e1, e2)) {
    if (!inherits(e, "python.builtin.object") && length(e) != 1) {
      py_stop("TypeError", "private data can be combined with private series of the same rows or with single ",
              "numbers, not with a vector of length ", length(e), ".")
    }
  }
  py_call(reticulate::py_get_attr(operator, ops[[.Generic]]), e1, e2)
}

#' Split private data into training and test parts
#'
#' Mirrors Python's `op_tensorflow.train_test_split()`: splits private frames and series of one
#' dataset row-consistently, like scikit-learn's. Every part keeps the original ledger. The split
#' is random but does not depend on the data values.
#'
#' @param ... Private data frames or series of the same dataset (row-aligned). If the arguments
#'   are named, the result is named `<name>_train`, `<name>_test`.
#' @param test_size Fraction of rows for the test part, in (0, 1).
#' @param random_state Seed making the split reproducible, or `NULL`.
#' @return A list `list(a_train, a_test, b_train, b_test, ...)`.
#' @examplesIf op_tensorflow_available()
#' pdf <- private_data_frame(data.frame(x = runif(20), y = rbinom(20, 1, 0.5)))
#' parts <- train_test_split(X = pdf["x"], y = pdf$y, test_size = 0.25, random_state = 1)
#' names(parts)
#' @export
train_test_split <- function(..., test_size = 0.25, random_state = NULL) {
  frames <- list(...)
  parts <- do.call(py_call, c(list(op$train_test_split), unname(frames),
                              list(test_size = test_size, random_state = as_py_count(random_state))))
  parts <- as.list(parts)
  if (!is.null(names(frames)) && all(nzchar(names(frames)))) {
    names(parts) <- as.vector(t(outer(names(frames), c("_train", "_test"), paste0)))
  }
  parts
}

# ---------------------------------------------------------------------------------------
# DP aggregates

dp_aggregate <- function(x, what, eps, mechanism) {
  check_private_data(x)
  res <- py_call(py_method(x, what), eps = eps, mechanism = mechanism, .convert = FALSE)
  if (inherits(res, "pandas.core.series.Series")) {
    values <- py_call(py_method(res, "to_dict"))
    return(vapply(values, as.numeric, numeric(1)))
  }
  reticulate::py_to_r(res)
}

#' Differentially private aggregates
#'
#' DP answers computed from private data and charged to its ledger before they are released:
#' a charge that does not fit the budget raises a `BudgetExceededError` and releases nothing.
#' Noise is Laplace (default) or Gaussian (calibrated at the ledger's delta), drawn from an
#' OS-seeded generator.
#'
#' * `dp_count()`: the number of rows of a frame, or of non-missing values of a series
#'   (sensitivity 1).
#' * `dp_sum()`: the sum of values clamped to the column's public bounds.
#' * `dp_mean()`: a noisy clamped sum over a noisy count (half of `eps` each), clamped to the bounds.
#' * `dp_describe()`: DP count and mean (half of `eps` each) with the public bounds.
#'
#' For a frame, `dp_sum()`, `dp_mean()` and `dp_describe()` work column by column and split
#' `eps` evenly across the columns. Sums and means need bounds (`metadata` of
#' [private_data_frame()]); they are never guessed from the data.
#'
#' @param x A private data frame or series.
#' @param eps The epsilon this answer spends, > 0.
#' @param mechanism `"laplace"` or `"gaussian"`.
#' @return A number; for a frame's `dp_sum()`/`dp_mean()` a numeric vector named by column;
#'   `dp_describe()` gives a named numeric vector (`count`, `mean`, `lower`, `upper`) for a series
#'   and a data.frame with those rows and one column per column of a frame.
#' @examplesIf op_tensorflow_available()
#' pdf <- private_data_frame(data.frame(x = runif(200, 0, 10)), metadata = list(x = c(0, 10)),
#'                           epsilon = 2, delta = 1e-5)
#' dp_count(pdf, eps = 0.1)
#' dp_sum(pdf$x, eps = 0.2)
#' dp_mean(pdf, eps = 0.5)
#' dp_describe(pdf$x, eps = 0.5)
#' privacy_budget(pdf)
#' @export
dp_count <- function(x, eps, mechanism = "laplace") dp_aggregate(x, "count", eps, mechanism)

#' @rdname dp_count
#' @export
dp_sum <- function(x, eps, mechanism = "laplace") dp_aggregate(x, "sum", eps, mechanism)

#' @rdname dp_count
#' @export
dp_mean <- function(x, eps, mechanism = "laplace") dp_aggregate(x, "mean", eps, mechanism)

#' @rdname dp_count
#' @export
dp_describe <- function(x, eps, mechanism = "laplace") {
  check_private_data(x)
  res <- py_call(py_method(x, "describe"), eps = eps, mechanism = mechanism, .convert = FALSE)
  values <- py_call(py_method(res, "to_dict"))
  stats <- c("count", "mean", "lower", "upper")
  if (inherits(res, "pandas.core.series.Series")) return(vapply(values[stats], as.numeric, numeric(1)))
  out <- as.data.frame(lapply(values, function(col) vapply(col[stats], as.numeric, numeric(1))),
                       check.names = FALSE)
  rownames(out) <- stats
  out
}

# ---------------------------------------------------------------------------------------
# The ledger

#' Report a privacy budget
#'
#' Reads the ledger's state: its epsilon and delta, the accountant, the epsilon spent (committed
#' and reserved charges, composed at the ledger's delta) and remaining. Nothing is printed until
#' the report is printed (auto-printing at the console, or `print()`).
#'
#' @param x A private data frame or series, a private data loader, a privacy budget (Python
#'   `PrivacyBudget`), or the path of a ledger file written with `private_data_frame(path = )`.
#' @return An object of class `optensorflow_privacy_budget`: a list with `epsilon` (the budget;
#'   `Inf` if unlimited), `delta`, `accountant` (`"rdp"` or `"pld"`), `spent`, `remaining`,
#'   `n_entries` (the ledger's charges) and `n_reserved` (those reserved by a running or
#'   crashed training run). `format()` gives its lines and `print()` shows them.
#' @examplesIf op_tensorflow_available()
#' pdf <- private_data_frame(data.frame(x = runif(50)), metadata = list(x = c(0, 1)),
#'                           epsilon = 1, delta = 1e-4)
#' dp_mean(pdf$x, eps = 0.25)
#' report <- privacy_budget(pdf)
#' report
#' report$remaining
#' @export
privacy_budget <- function(x) {
  budget <- as_privacy_budget(x)
  report <- py_call(py_method(budget, "report"))
  new_privacy_budget_report(report)
}

new_privacy_budget_report <- function(report) {
  fields <- c("epsilon", "delta", "accountant", "spent", "remaining", "n_entries", "n_reserved")
  out <- list(
    epsilon = as.numeric(report$epsilon),
    delta = as.numeric(report$delta),
    accountant = as.character(report$accountant),
    spent = as.numeric(report$spent),
    remaining = as.numeric(report$remaining),
    n_entries = as.integer(report$n_entries),
    n_reserved = as.integer(report$n_reserved)
  )
  structure(out[fields], class = "optensorflow_privacy_budget")
}

#' @export
format.optensorflow_privacy_budget <- function(x, ...) format_budget_report(x)

#' @export
print.optensorflow_privacy_budget <- function(x, ...) {
  cat(format(x, ...), sep = "\n")
  invisible(x)
}

as_privacy_budget <- function(x) {
  if (inherits(x, "op_tensorflow.budget.PrivacyBudget")) return(x)
  if (is_private(x)) return(py_attr(x, "budget"))
  if (is.character(x) && length(x) == 1) {
    return(py_call(py_method(op$PrivacyBudget, "load"), normalizePath(path.expand(x), mustWork = FALSE)))
  }
  py_stop("TypeError", "x must be a private data frame, series or loader, a PrivacyBudget or a ledger path, got ",
          class(x)[1], ".")
}

format_budget_report <- function(report) {
  num <- function(v) format(v, digits = 6)
  c(
    sprintf("Privacy budget (%s accountant, delta = %s)", report$accountant, num(report$delta)),
    sprintf("  epsilon:   %s", num(report$epsilon)),
    sprintf("  spent:     %s", num(report$spent)),
    sprintf("  remaining: %s", num(report$remaining)),
    sprintf("  entries:   %d (%d reserved)", as.integer(report$n_entries), as.integer(report$n_reserved))
  )
}
