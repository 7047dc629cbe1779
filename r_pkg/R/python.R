# Calls into Python and turns Python exceptions into R errors carrying the same message.
# The condition's class names the Python exception (e.g. "ValueError", "BudgetExceededError")
# so callers can tryCatch(..., ValueError = function(e) ...). Python warnings become R warnings.
py_call <- function(fun, ...) {
  dots <- list(...)
  named <- if (is.null(names(dots))) rep(FALSE, length(dots)) else nzchar(names(dots))
  bridge <- reticulate::import("op_tensorflow._rbridge", convert = FALSE)
  res <- bridge$call(fun, unname(dots[!named]), dots[named])
  ok <- reticulate::py_to_r(res$get("ok"))
  for (w in reticulate::py_to_r(res$get("warnings"))) warning(w, call. = FALSE)
  if (!ok) {
    stop(structure(
      class = c(reticulate::py_to_r(res$get("error_class")), "optensorflow_error", "error", "condition"),
      list(message = reticulate::py_to_r(res$get("message")), call = sys.call(-1))
    ))
  }
  reticulate::py_to_r(res$get("value"))
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
