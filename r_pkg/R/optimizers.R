#' The R blog's DP optimizers for plain Keras models
#'
#' `dp_adam_gaussian_optimizer()` and `dp_gradient_descent_gaussian_optimizer()` are the names
#' the RStudio blog "Differential Privacy with TensorFlow" uses (`priv$DPAdamGaussianOptimizer`).
#' They return TF Privacy's Keras optimizers (`DPKerasAdamOptimizer`, `DPKerasSGDOptimizer`),
#' which work with an eager TF 2 `model$fit()`, unlike TF Privacy's TF1 classes of those names.
#'
#' Compile the plain Keras model with a per-example loss, e.g.
#' `k$losses$MeanSquaredError(reduction = k$losses$Reduction$NONE)` with `k <- keras_module()`.
#' Each batch is split into `num_microbatches` microbatches (the batch size must be a multiple
#' of it) whose mean-loss gradients are clipped to `l2_norm_clip`; Gaussian noise of standard
#' deviation `l2_norm_clip * noise_multiplier` is added to their sum. [private_keras_model()]
#' reaches the same guarantee faster, with a budget-checked ledger.
#'
#' These optimizers need Keras 2: restart R and set `options(optensorflow.keras = "tf_keras")`
#' before `library(optensorflow)` (see [optensorflow_stack()]). On Keras 3 they stop with an
#' error of class `RuntimeError`: a Keras 3 optimizer never sees per-example losses (Keras 3
#' reduces the loss first), so no optimizer can clip per example there; use
#' [private_keras_model()], which clips and adds the noise itself, with a standard optimizer.
#'
#' @param l2_norm_clip Maximum L2 norm of each microbatch's gradient.
#' @param noise_multiplier Standard deviation of the noise as a multiple of `l2_norm_clip`.
#' @param num_microbatches Microbatches per batch; `NULL` means one per example. Whole numbers
#'   given as doubles are passed as integers.
#' @param learning_rate The learning rate.
#' @param ... Further arguments for the Keras optimizer (e.g. `beta_1`, `momentum`) or for TF
#'   Privacy (`gradient_accumulation_steps`).
#' @return A Keras optimizer (Python object) for `model$compile(optimizer = ...)`, with the R
#'   class `optensorflow_dp_optimizer` in front of its Python classes: it prints its
#'   configuration (TF Privacy's class, `l2_norm_clip`, `noise_multiplier`, `num_microbatches`,
#'   the learning rate), and `format()` gives those lines.
#' @examplesIf op_tensorflow_available() && optensorflow_stack()$keras == "tf_keras"
#' \donttest{
#' k <- keras_module()
#' model <- k$Sequential(list(k$Input(shape = list(3L)), k$layers$Dense(1L)))
#' opt <- dp_adam_gaussian_optimizer(l2_norm_clip = 1, noise_multiplier = 1.1,
#'                                   num_microbatches = 16, learning_rate = 0.01)
#' model$compile(optimizer = opt,
#'               loss = k$losses$MeanSquaredError(reduction = k$losses$Reduction$NONE))
#' }
#' @export
dp_adam_gaussian_optimizer <- function(l2_norm_clip, noise_multiplier, num_microbatches = NULL,
                                       learning_rate = 0.001, ...) {
  require_keras2("dp_adam_gaussian_optimizer()")
  as_dp_optimizer(do.call(py_call, c(
    list(op$DPAdamGaussianOptimizer, l2_norm_clip, noise_multiplier,
         num_microbatches = as_py_count(num_microbatches), learning_rate = learning_rate),
    as_py_args(...)
  )))
}

#' @rdname dp_adam_gaussian_optimizer
#' @export
dp_gradient_descent_gaussian_optimizer <- function(l2_norm_clip, noise_multiplier, num_microbatches = NULL,
                                                   learning_rate = 0.01, ...) {
  require_keras2("dp_gradient_descent_gaussian_optimizer()")
  as_dp_optimizer(do.call(py_call, c(
    list(op$DPGradientDescentGaussianOptimizer, l2_norm_clip, noise_multiplier,
         num_microbatches = as_py_count(num_microbatches), learning_rate = learning_rate),
    as_py_args(...)
  )))
}

# The R class in front of the Python classes: print()/format() show the DP configuration instead
# of the Python object's address. reticulate passes the object to Python unchanged.
as_dp_optimizer <- function(opt) {
  class(opt) <- unique(c("optensorflow_dp_optimizer", class(opt)))
  opt
}

dp_optimizer_config <- function(x) {
  config <- py_call(py_method(x, "get_config"))
  state <- config$global_state
  clip <- as.numeric(state$l2_norm_clip)
  base <- sub("^.*\\.", "", setdiff(class(x), "optensorflow_dp_optimizer")[2]) # e.g. "Adam", "SGD"
  lr <- config$learning_rate
  list(
    class = paste0("DPKeras", base, "Optimizer"),
    l2_norm_clip = clip,
    noise_multiplier = as.numeric(state$stddev) / clip,
    num_microbatches = if (is.null(config$num_microbatches)) NULL else as.integer(config$num_microbatches),
    learning_rate = if (is.numeric(lr)) lr else if (is.list(lr) && !is.null(lr$class_name)) lr$class_name else "a schedule"
  )
}

#' @export
format.optensorflow_dp_optimizer <- function(x, ...) {
  cfg <- tryCatch(dp_optimizer_config(x), error = function(e) NULL)
  if (is.null(cfg)) return(reticulate::py_repr(x))
  num <- function(v) format(v, digits = 6)
  c(
    sprintf("<%s> TF Privacy's DP optimizer (Keras 2)", cfg$class),
    sprintf("  l2_norm_clip:     %s", num(cfg$l2_norm_clip)),
    sprintf("  noise_multiplier: %s", num(cfg$noise_multiplier)),
    sprintf("  num_microbatches: %s", if (is.null(cfg$num_microbatches)) "NULL (one per example)" else cfg$num_microbatches),
    sprintf("  learning_rate:    %s", if (is.numeric(cfg$learning_rate)) num(cfg$learning_rate) else cfg$learning_rate)
  )
}

#' @export
print.optensorflow_dp_optimizer <- function(x, ...) {
  cat(format(x, ...), sep = "\n")
  invisible(x)
}

# TF Privacy's optimizers are Keras 2 optimizers: refused on Keras 3, in R's terms.
require_keras2 <- function(what) {
  if (ensure_keras_mode() == "keras3") {
    py_stop("RuntimeError", .call = sys.call(-1),
            what, " needs Keras 2, but optensorflow runs on ", .state$description, ". A Keras 3 optimizer never ",
            "sees per-example losses (Keras 3 reduces the loss before the optimizer is called), so no DP optimizer ",
            "can clip per example there. Use private_keras_model(model, l2_norm_clip = , noise_multiplier = ) with ",
            "dp_compile(model, optimizer = \"adam\", ...), which clips and adds the noise itself; or, for TF ",
            "Privacy's optimizer, restart R and set options(optensorflow.keras = \"tf_keras\") before ",
            "library(optensorflow) to run Keras 2.")
  }
  invisible()
}
