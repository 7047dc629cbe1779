# R keras's verbs on private models: compile(), fit(), predict(), evaluate(), summary(), plot(),
# format(). compile() and fit() are the generics package's generics, which the keras and keras3
# packages import and re-export too, so the methods below serve them whichever is attached.
# evaluate() is different: keras and keras3 export the R tensorflow package's evaluate generic.
# The method is registered (delayed) for that generic and for generics::evaluate, and this package
# exports its own evaluate(), which dispatches private models here and hands every other object
# to tensorflow's (or generics') evaluate: so evaluate(dp, x, y) works with only optensorflow
# attached, and evaluate() keeps working on ordinary keras models when optensorflow is attached
# after keras (masking keras's evaluate) as well as before it. keras, keras3 and tensorflow are not in
# DESCRIPTION's Suggests: no code needs them (they are reached by name, once loaded), and R CMD check
# notes suggested packages it cannot find (the clients live in private libraries, see tests/r_clients).

#' @importFrom generics compile
#' @export
generics::compile

#' @importFrom generics fit
#' @export
generics::fit

#' R keras verbs on private models
#'
#' The verbs R keras users write work on private models from [private_keras_model()], with or
#' without the keras or keras3 package attached, and with pipes:
#' ```
#' dp %>% compile(optimizer = optimizer_adam(1e-3), loss = "mse", metrics = metric_mean_absolute_error)
#' history <- dp %>% fit(loader, epochs = 20, validation_data = list(x_val, y_val))
#' plot(history)
#' predict(dp, x_new)
#' evaluate(dp, x_test, y_test)
#' ```
#' * `compile()` calls [dp_compile()]: optimizers, losses and metrics as names, Keras objects or R
#'   keras wrapper functions.
#' * `fit()` calls [dp_fit()] and returns a [training_history]. `x` is a private data loader
#'   (its batch size sets the sampling rate, and its labels are the `y`), so `y`, `batch_size`,
#'   `validation_split`, `sample_weight`, `class_weight`, `initial_epoch` and `steps_per_epoch`
#'   are refused when given; `shuffle` is ignored (DP-SGD samples batches at random).
#' * `predict()` calls [dp_predict()]: an R matrix for public data, a private data frame for
#'   private data.
#' * `evaluate()` calls [dp_evaluate()]: Keras metrics on public data, DP metrics on private data
#'   (with `eps`, and `error_bound` for a regression's DP mean absolute and squared errors). The
#'   keras and keras3 packages export the tensorflow package's `evaluate()`; attached after them,
#'   optensorflow's `evaluate()` masks it and hands every other object (e.g. an ordinary keras
#'   model) on to it, and attached before them, theirs reaches private models through the method
#'   registered for it: either way `evaluate()` works on both.
#' * `summary()` prints the Keras layer summary with the DP-SGD configuration and the epsilon
#'   spent; `format()` gives the one-line description; `plot()` draws the layer stack.
#'
#' @param object,x A private Keras model (for `fit()`, `x` is the private data loader).
#' @param optimizer,loss,metrics See [dp_compile()].
#' @param y Not used by `fit()` (the loader holds the labels); the labels for `evaluate()`.
#' @param batch_size For `predict()` and `evaluate()`; refused by `fit()` (set it in [private_data_loader()]).
#' @param epochs Number of epochs (default 10, as in keras).
#' @param verbose 0, 1, 2 or `"auto"` (the default, option `keras.fit_verbose`): 2 when knitting
#'   or not interactive, else 1.
#' @param callbacks Keras callbacks, e.g. `list(callback_early_stopping(patience = 2))`.
#' @param view_metrics Ignored (keras's RStudio viewer).
#' @param validation_split,shuffle,class_weight,sample_weight,initial_epoch,steps_per_epoch,validation_steps
#'   keras arguments that do not apply to DP-SGD on a private loader (refused unless left as default).
#' @param validation_data Public `list(x, y)` for Keras metrics after each epoch.
#' @param target_delta See [dp_fit()].
#' @param label_columns See [dp_predict()].
#' @param steps Ignored by `predict()`/`evaluate()` (keras's argument for datasets).
#' @param eps,loss_bound,error_bound See [dp_evaluate()].
#' @param ... Further arguments for [dp_compile()], [dp_fit()], or ignored.
#' @return `compile()`: the model, invisibly. `fit()`: a [training_history]. `predict()`: see
#'   [dp_predict()]. `evaluate()`: a named list of metrics. `summary()`: the summary lines,
#'   invisibly. `format()`: a string. `plot()`: `NULL`, invisibly.
#' @name keras_verbs
#' @examplesIf op_tensorflow_available()
#' \donttest{
#' df <- data.frame(x1 = runif(300), x2 = runif(300))
#' df$y <- df$x1 + df$x2
#' pdf <- private_data_frame(df, metadata = list(x1 = c(0, 1), x2 = c(0, 1), y = c(0, 2)),
#'                           epsilon = 5, delta = 1e-5)
#' loader <- private_data_loader(pdf[c("x1", "x2")], pdf$y, batch_size = 30)
#' k <- keras_module()
#' dp <- private_keras_model(k$Sequential(list(k$Input(shape = list(2L)), k$layers$Dense(1L))))
#' compile(dp, optimizer = "adam", loss = "mse", metrics = "mae")
#' history <- fit(dp, loader, epochs = 2, verbose = 0,
#'                validation_data = list(as.matrix(df[1:50, 1:2]), df$y[1:50]))
#' history
#' summary(dp)
#' predict(dp, as.matrix(df[1:3, 1:2]))
#' evaluate(dp, as.matrix(df[1:50, 1:2]), df$y[1:50])
#' }
NULL

#' @rdname keras_verbs
#' @export
compile.op_tensorflow.model.PrivateKerasModel <- function(object, optimizer = "rmsprop", loss = NULL, metrics = NULL,
                                                          ...) {
  dp_compile(object, optimizer = optimizer, loss = loss, metrics = metrics, ...)
}

#' @rdname keras_verbs
#' @export
fit.op_tensorflow.model.PrivateKerasModel <- function(object, x = NULL, y = NULL, batch_size = NULL, epochs = 10,
                                                      verbose = getOption("keras.fit_verbose", default = "auto"),
                                                      callbacks = NULL, view_metrics = NULL, validation_split = 0,
                                                      validation_data = NULL, shuffle = TRUE, class_weight = NULL,
                                                      sample_weight = NULL, initial_epoch = 0, steps_per_epoch = NULL,
                                                      validation_steps = NULL, target_delta = NULL, ...) {
  refuse <- function(arg, why) {
    py_stop("ValueError", .call = sys.call(-1), arg, " does not apply to a private model's fit(): ", why)
  }
  if (!is.null(y)) refuse("y", "the private data loader x holds the labels (private_data_loader(features, labels)).")
  if (!is.null(batch_size)) {
    refuse("batch_size", "set it in private_data_loader(..., batch_size = ): it sets the sampling rate the privacy accounting uses.")
  }
  if (!identical(validation_split, 0)) {
    refuse("validation_split", "it would validate on private rows without noise; split with train_test_split() and give public validation_data = list(x, y).")
  }
  if (!is.null(class_weight) || !is.null(sample_weight)) refuse("class_weight/sample_weight", "weights are not supported by DP-SGD here.")
  if (!identical(initial_epoch, 0)) refuse("initial_epoch", "each fit() is one accounted run; call fit() again to train further.")
  if (!is.null(steps_per_epoch) || !is.null(validation_steps)) {
    refuse("steps_per_epoch/validation_steps", "the loader's sample size and batch size fix the steps of each epoch.")
  }
  dp_fit(object, x, epochs = epochs, target_delta = target_delta, verbose = keras_verbose(verbose),
         validation_data = validation_data, callbacks = callbacks, ...)
}

# keras's "auto" verbosity: a progress bar in an interactive session, one line per epoch otherwise.
keras_verbose <- function(verbose) {
  if (!identical(verbose, "auto")) return(verbose)
  if (interactive() && !isTRUE(getOption("knitr.in.progress"))) 1L else 2L
}

#' @rdname keras_verbs
#' @importFrom stats predict
#' @export
predict.op_tensorflow.model.PrivateKerasModel <- function(object, x, batch_size = NULL, verbose = 0, steps = NULL,
                                                          callbacks = NULL, label_columns = NULL, ...) {
  dp_predict(object, x, label_columns = label_columns, batch_size = if (is.null(batch_size)) 1024 else batch_size)
}

#' @rdname keras_verbs
#' @export
evaluate <- function(object, ...) UseMethod("evaluate")

# Registered as the default method of this package's evaluate() (not named evaluate.default, so that
# the generics called here do not find it again): hands the object to tensorflow's evaluate generic
# (keras and keras3 models' methods are registered there) or to generics::evaluate.
evaluate_other <- function(object, ...) {
  classes <- class(object)
  for (pkg in c("tensorflow", "generics")) {
    if (!isNamespaceLoaded(pkg)) next
    ns <- asNamespace(pkg)
    has_method <- any(vapply(c(classes, "default"), function(cl) {
      !is.null(utils::getS3method("evaluate", cl, optional = TRUE, envir = ns))
    }, logical(1)))
    if (has_method) return(getExportedValue(pkg, "evaluate")(object, ...))
  }
  stop("no applicable method for 'evaluate' applied to an object of class \"", classes[1], "\"", call. = FALSE)
}

#' @rdname keras_verbs
#' @rawNamespace S3method(evaluate, default, evaluate_other)
#' @rawNamespace S3method(tensorflow::evaluate, op_tensorflow.model.PrivateKerasModel)
#' @rawNamespace S3method(generics::evaluate, op_tensorflow.model.PrivateKerasModel)
#' @export
evaluate.op_tensorflow.model.PrivateKerasModel <- function(object, x = NULL, y = NULL, batch_size = NULL, verbose = 0,
                                                           sample_weight = NULL, steps = NULL, callbacks = NULL,
                                                           eps = NULL, loss_bound = NULL, error_bound = NULL, ...) {
  if (!is.null(sample_weight)) py_stop("ValueError", "sample_weight is not supported by evaluate() of a private model.")
  dp_evaluate(object, x, y, eps = eps, loss_bound = loss_bound, error_bound = error_bound,
              batch_size = if (is.null(batch_size)) 1024 else batch_size)
}

#' @rdname keras_verbs
#' @export
format.op_tensorflow.model.PrivateKerasModel <- function(x, ...) {
  reticulate::py_repr(x)
}

#' @rdname keras_verbs
#' @export
summary.op_tensorflow.model.PrivateKerasModel <- function(object, ...) {
  lines <- c(format(object), "", keras_summary_lines(keras_model_of(object)), "", dp_config_lines(object))
  writeLines(lines)
  invisible(lines)
}

# Keras's layer summary as lines of text (Keras 2 calls print_fn per line, Keras 3 once).
keras_summary_lines <- function(model) {
  code <- paste(
    "def summary_text(model):",
    "    lines = []",
    "    try:",
    "        model.summary(print_fn=lambda line, *args, **kwargs: lines.append(str(line)))",
    "    except ValueError as err:",
    "        return '(no layer summary yet: ' + str(err).split('. ')[0] + ')'",
    "    return '\\n'.join(lines)",
    sep = "\n"
  )
  if (is.null(.state$summary_text)) {
    .state$summary_text <- reticulate::py_run_string(code, local = TRUE, convert = FALSE)$summary_text
  }
  text <- py_call(.state$summary_text, model)
  text <- gsub("\u001b\\[[0-9;]*m", "", text) # rich's colour codes, if any
  sub("\n+$", "", strsplit(text, "\n", fixed = TRUE)[[1]])
}

dp_config_lines <- function(model) {
  p <- py_attr(model, "privacy")
  steps <- if (is.null(p$steps)) 0 else p$steps
  c(paste0("DP-SGD: per-example clipping to l2_norm_clip = ", format(p$l2_norm_clip), ", Gaussian noise with ",
           "noise_multiplier = ", format(p$noise_multiplier)),
    if (steps > 0) {
      paste0("Privacy: epsilon spent = ", format(signif(p$epsilon, 4)), " at delta = ", format(p$delta), " over ",
             steps, " DP-SGD steps (sampling rate ", format(signif(p$sampling_rate, 4)), ")")
    } else {
      "Privacy: not trained yet (epsilon spent = 0)"
    })
}

#' @rdname keras_verbs
#' @export
plot.op_tensorflow.model.PrivateKerasModel <- function(x, y, ...) {
  layers <- model_layer_table(keras_model_of(x))
  n <- nrow(layers)
  graphics::plot.new()
  old <- graphics::par(mar = c(0.5, 0.5, 2.5, 0.5))
  on.exit(graphics::par(old), add = TRUE)
  graphics::plot.window(xlim = c(0, 1), ylim = c(0.5, n + 0.5))
  p <- py_attr(x, "privacy")
  graphics::title(main = paste0("Private model: l2_norm_clip = ", format(p$l2_norm_clip), ", noise_multiplier = ",
                                format(p$noise_multiplier), ", epsilon spent = ", format(signif(p$epsilon, 3))),
                  cex.main = 0.9)
  for (i in seq_len(n)) {
    yy <- n + 1 - i
    graphics::rect(0.15, yy - 0.32, 0.85, yy + 0.32, col = "grey95", border = "grey40")
    graphics::text(0.5, yy + 0.1, paste0(layers$name[i], " (", layers$type[i], ")"), cex = 0.85)
    graphics::text(0.5, yy - 0.15, paste0("output ", layers$shape[i]), cex = 0.75, col = "grey30")
    if (i < n) graphics::arrows(0.5, yy - 0.32, 0.5, yy - 0.68, length = 0.06)
  }
  invisible(NULL)
}

model_layer_table <- function(model) {
  layers <- reticulate::py_to_r(reticulate::py_get_attr(model, "layers"))
  shape_of <- function(layer) {
    s <- tryCatch(reticulate::py_str(reticulate::py_get_attr(layer, "output")$shape), error = function(e) NULL)
    if (is.null(s)) s <- tryCatch(reticulate::py_str(reticulate::py_get_attr(layer, "output_shape")),
                                  error = function(e) "not built")
    s
  }
  data.frame(
    name = vapply(layers, function(l) reticulate::py_to_r(reticulate::py_get_attr(l, "name")), ""),
    type = vapply(layers, function(l) reticulate::py_to_r(reticulate::py_get_attr(
      reticulate::py_get_attr(l, "__class__"), "__name__")), ""),
    shape = vapply(layers, shape_of, ""),
    stringsAsFactors = FALSE
  )
}
