#' The Keras module of the Python TensorFlow
#'
#' Returns `tensorflow.keras` from reticulate's Python, so models are built as in the R blog
#' without the R keras package: `k <- keras_module(); k$Sequential(list(k$layers$Dense(16L), ...))`.
#' Give integer arguments of Keras as R integers (`16L`) and shapes as lists
#' (`input_shape = list(12L, 6L)`).
#'
#' Which Keras that is depends on the mode chosen before Python starts (see
#' [optensorflow_stack()]): Keras 3 by default, Keras 2 (the `tf_keras` package) with
#' `options(optensorflow.keras = "tf_keras")` set before `library(optensorflow)`, and Keras 2
#' on TensorFlow 2.15. Build models with this module rather than with another Keras (e.g. the R
#' keras3 package's): private models accept only `tf.keras` models of the Keras in use. The
#' model code above works with both; Keras 3 prefers `k$Input(shape = list(2L))` as a first layer
#' to `input_shape =` (which it still accepts, with a warning).
#'
#' @return The Python module `tensorflow.keras`: Keras 3, or Keras 2 in the `"tf_keras"` mode.
#' @examplesIf op_tensorflow_available()
#' \donttest{
#' k <- keras_module()
#' model <- k$Sequential(list(
#'   k$layers$Dense(16L, activation = "relu", input_shape = list(2L)),
#'   k$layers$Dense(1L, activation = "sigmoid")
#' ))
#' }
#' @export
keras_module <- function() {
  ensure_keras_mode()
  tryCatch(reticulate::import("tensorflow")$keras, error = function(e) rethrow_py_error(e))
}

#' Wrap a Keras model for differentially private training
#'
#' Mirrors Python's `op_tensorflow.PrivateKerasModel`: DP-SGD with per-example clipping to
#' `l2_norm_clip` and Gaussian noise of standard deviation `l2_norm_clip * noise_multiplier`.
#' Layers that let one example affect other examples' gradients (BatchNormalization, stateful
#' RNNs) are refused with a `ValueError`, unless `fix = TRUE` replaces them (see [fix_model()]).
#'
#' @param model A Keras model (Sequential or functional), e.g. built with [keras_module()].
#' @param l2_norm_clip Bound on each example's gradient norm, > 0.
#' @param noise_multiplier Noise standard deviation divided by `l2_norm_clip`, > 0.
#' @param fix Replace BatchNormalization layers by GroupNormalization instead of refusing.
#' @param seed `NULL` (OS entropy, for real training) or a whole number making the noise
#'   reproducible (for tests).
#' @param embedding_noise `"dense"` (noise on every coordinate) or `"sparse"`: for a model with one
#'   embedding layer, only privately selected rows of its table get a noisy update (DP-AdaFEST), at the
#'   same noise multiplier and epsilon.
#' @return A private Keras model (the Python `PrivateKerasModel`).
#' @seealso [dp_compile()], [dp_fit()], [dp_predict()], [dp_evaluate()]
#' @examplesIf op_tensorflow_available()
#' \donttest{
#' df <- data.frame(x1 = runif(300), x2 = runif(300))
#' df$y <- as.numeric(df$x1 + df$x2 > 1)
#' pdf <- private_data_frame(df, metadata = list(x1 = c(0, 1), x2 = c(0, 1), y = c(0, 1)),
#'                           epsilon = 5, delta = 1e-4)
#' parts <- train_test_split(X = pdf[c("x1", "x2")], y = pdf$y, random_state = 1)
#' k <- keras_module()
#' model <- private_keras_model(k$Sequential(list(
#'   k$layers$Dense(8L, activation = "relu", input_shape = list(2L)),
#'   k$layers$Dense(1L, activation = "sigmoid"))), noise_multiplier = 1.1)
#' dp_compile(model, optimizer = "adam", loss = "binary_crossentropy", metrics = "accuracy")
#' history <- dp_fit(model, private_data_loader(parts$X_train, parts$y_train, batch_size = 16),
#'                   epochs = 2)
#' history
#' dp_evaluate(model, parts$X_test, parts$y_test, eps = 0.5)
#' }
#' @export
private_keras_model <- function(model, l2_norm_clip = 1, noise_multiplier = 1.1, fix = FALSE, seed = NULL,
                                embedding_noise = "dense") {
  py_call(op$PrivateKerasModel, model, l2_norm_clip, noise_multiplier, seed = as_py_count(seed), fix = fix,
          embedding_noise = embedding_noise)
}

#' Configure a private model for training
#'
#' Like Keras' `compile()` (and the [compile()] verb, which calls it): any standard Keras
#' optimizer and loss, given as objects or names. Do not give a DP optimizer nor set a loss
#' reduction: the private model clips per example and adds the noise itself.
#'
#' Optimizers, losses and metrics are accepted in the forms R keras users write them: names
#' (`"adam"`, `"mse"`, `"mae"`), Keras objects (`optimizer_adam(learning_rate = 1e-3)`,
#' `metric_mean_absolute_error()` of the keras or keras3 package, or objects built with
#' [keras_module()]) and the R keras wrapper functions themselves (`metrics =
#' metric_mean_absolute_error`, `loss = loss_binary_crossentropy`, `optimizer = optimizer_adam`),
#' which are called without arguments to get their Keras object, as the keras packages do. A plain
#' R function is refused with an error of class `TypeError`: the training graph runs in Python.
#'
#' @param model A private Keras model from [private_keras_model()].
#' @param optimizer A Keras optimizer name (e.g. `"adam"`, `"sgd"`) or object
#'   (e.g. `optimizer_adam(learning_rate = 1e-3)` of the keras/keras3 package, or
#'   `keras_module()$optimizers$SGD(learning_rate = 0.01)`).
#' @param loss A Keras loss name (e.g. `"mse"`) or object.
#' @param metrics Metric names (e.g. `"accuracy"`, `c("mae", "mse")`) or objects, or a list of
#'   them, or `NULL`. They are computed on public `validation_data` in [dp_fit()] and on public
#'   data in [dp_evaluate()].
#' @param ... Further arguments for Keras' `compile()`.
#' @return `model`, invisibly.
#' @seealso [compile()]
#' @export
dp_compile <- function(model, optimizer = "adam", loss, metrics = NULL, ...) {
  check_private_model(model)
  optimizer <- as_keras_object(optimizer, "optimizer")
  loss <- if (missing(loss)) NULL else as_keras_loss(loss)
  metrics <- as_keras_list(metrics, "metrics")
  do.call(py_call, c(
    list(py_method(model, "compile"), optimizer = optimizer, loss = loss, metrics = metrics),
    as_py_args(...)
  ))
  invisible(model)
}

#' Train a private model with DP-SGD
#'
#' Before the first step the epsilon of the whole run is computed (as [get_privacy_budget()]
#' does) and reserved on the dataset's ledger: if it does not fit, a `BudgetExceededError` is
#' raised and no weight changes. Everything that can be checked is checked before the
#' reservation (the loss, the metrics on the validation data, shapes, callbacks), so a refused
#' run spends no budget. Training metrics are not reported, since they would be computed from
#' private rows; give public `validation_data` for Keras metrics or use [dp_evaluate()] with
#' `eps` for DP metrics on private data. The [fit()] verb calls this function.
#'
#' @param model A compiled private Keras model.
#' @param loader A private data loader from [private_data_loader()].
#' @param epochs Number of epochs, a whole number.
#' @param target_delta The delta at which epsilon is reported; `NULL` (the default) is the delta
#'   of the data's ledger, so the history reports the epsilon the ledger is charged.
#' @param verbose 0 (silent), 1 (progress bar showing epsilon), 2 (one line per epoch) or `"auto"` (1).
#' @param validation_data Optional public data `list(x, y)` (matrices, arrays, vectors or
#'   data.frames) for Keras metrics after each epoch.
#' @param callbacks Keras callbacks: one or a list, e.g. `callback_early_stopping()` of the
#'   keras or keras3 package. When a callback stops training early only the steps run are charged.
#' @param ... Further arguments for Python's `PrivateKerasModel.fit()`: `steps_per_execution`,
#'   `accountant`.
#' @return The training history (see [training_history]): a list with `params` and `metrics`
#'   (`epsilon` after each epoch and `val_*` metrics when `validation_data` is given), of class
#'   `c("optensorflow_training_history", "keras_training_history")`, with `plot()`, `print()`
#'   and `as.data.frame()` methods.
#' @seealso [fit()], [training_history]
#' @export
dp_fit <- function(model, loader, epochs = 1, target_delta = NULL, verbose = 0, validation_data = NULL,
                   callbacks = NULL, ...) {
  check_private_model(model)
  validation_data <- as_validation_data(validation_data)
  callbacks <- as_keras_list(callbacks, "callbacks")
  params <- list(epochs = as_py_count(epochs), verbose = as_py_count(verbose))
  if (inherits(loader, "op_tensorflow.loader.PrivateDataLoader")) {
    params$ledger_delta <- py_attr(py_attr(loader, "budget"), "delta")
    params$samples <- py_attr(loader, "sample_size")
    params$batch_size <- py_attr(loader, "batch_size")
    if (is.null(target_delta)) target_delta <- params$ledger_delta
  }
  params$target_delta <- target_delta
  params$l2_norm_clip <- py_attr(model, "l2_norm_clip")
  params$noise_multiplier <- py_attr(model, "noise_multiplier")
  args <- list(py_method(model, "fit"), x = loader, epochs = params$epochs, verbose = params$verbose,
               validation_data = validation_data, callbacks = callbacks)
  if (!is.null(target_delta)) args$target_delta <- target_delta
  history <- do.call(py_call, c(args, as_py_args(...), list(.convert = FALSE)))
  new_training_history(history, params)
}

# Public validation data list(x, y) as a Python tuple of float32 arrays (Python objects pass).
as_validation_data <- function(validation_data) {
  if (is.null(validation_data) || is_py_object(validation_data)) return(validation_data)
  if (!is.list(validation_data) || is.data.frame(validation_data) || length(validation_data) != 2) {
    py_stop("TypeError", .call = sys.call(-1), "validation_data must be a list(x, y) of public data.")
  }
  reticulate::tuple(as_public_array(validation_data[[1]], "validation_data x"),
                    as_public_array(validation_data[[2]], "validation_data y"))
}

check_private_model <- function(model, arg = "model") {
  if (!inherits(model, "op_tensorflow.model.PrivateKerasModel")) {
    py_stop("TypeError", .call = sys.call(-1), arg, " must be a private model (see private_keras_model()), got ",
            class(model)[1], ".")
  }
  invisible(model)
}

#' Predict with a private model
#'
#' @param model A private Keras model.
#' @param x Private features (a private data frame or series, e.g. a test split) or public data
#'   (an R matrix, array, vector or data.frame, or a numpy array).
#' @param label_columns Names of the output columns of the private result (default `0`, `1`, ...).
#' @param batch_size Batch size for prediction.
#' @return For private `x`, a private data frame on `x`'s ledger, row-aligned with it (use it in
#'   DP aggregates, e.g. with the labels of the same split); for public `x`, an R matrix.
#' @export
dp_predict <- function(model, x, label_columns = NULL, batch_size = 1024) {
  if (is_private(x)) {
    return(py_call(py_method(model, "predict"), x = x, label_columns = as_py_list(label_columns),
                   batch_size = as_py_count(batch_size)))
  }
  out <- py_call(py_method(model, "predict"), x = as_public_array(x), batch_size = as_py_count(batch_size))
  if (is.null(dim(out))) out <- matrix(out, ncol = 1)
  out
}

#' Evaluate a private model
#'
#' On private data each metric is a DP mean of per-example values charged to the ledger:
#' accuracy (compile with `metrics = "accuracy"`), the loss when `loss_bound` gives public
#' bounds `[0, loss_bound]` to clamp it, and for regression the mean absolute and squared errors
#' when `error_bound` gives a public bound of the absolute error; `eps` is split evenly across
#' them. On public data these are Keras' plain metrics. The [evaluate()] verb calls this function.
#'
#' @param model A compiled private Keras model.
#' @param x,y Private features and labels of the same rows, or public data.
#' @param eps The epsilon to spend on private data (required there; ignored for public data).
#' @param loss_bound Optional public upper bound of the per-example loss, for a DP mean loss.
#' @param error_bound Optional public bound of the per-example absolute error, for a DP mean
#'   absolute error and mean squared error of a regression (private data only).
#' @param batch_size Batch size for evaluation.
#' @return A named list of metrics.
#' @seealso [evaluate()]
#' @export
dp_evaluate <- function(model, x, y, eps = NULL, loss_bound = NULL, error_bound = NULL, batch_size = 1024) {
  check_private_model(model)
  if (is_private(x) || is_private(y)) {
    args <- list(py_method(model, "evaluate"), x, y, eps = eps, loss_bound = loss_bound,
                 batch_size = as_py_count(batch_size))
    if (!is.null(error_bound)) args$error_bound <- error_bound
    res <- do.call(py_call, args)
  } else {
    res <- py_call(py_method(model, "evaluate"), as_public_array(x), as_public_array(y, "y"),
                   batch_size = as_py_count(batch_size))
  }
  lapply(res, as.numeric)
}

#' Replace BatchNormalization for DP training
#'
#' Returns a copy of a Keras model with every BatchNormalization replaced by a per-example
#' normalization (GroupNormalization; LayerNormalization with `norm = "layer"`). Batch
#' statistics let one example change every other example's gradient and store un-noised data,
#' so [private_keras_model()] refuses them. The input model is untouched; the copy is not compiled.
#'
#' @param model A Sequential or functional Keras model.
#' @param norm `"group"` or `"layer"`.
#' @return A new Keras model.
#' @examplesIf op_tensorflow_available()
#' \donttest{
#' k <- keras_module()
#' model <- k$Sequential(list(
#'   k$layers$Conv1D(8L, 3L, activation = "relu", input_shape = list(12L, 6L)),
#'   k$layers$BatchNormalization(),
#'   k$layers$GlobalAveragePooling1D(),
#'   k$layers$Dense(1L)))
#' fixed <- fix_model(model)
#' validate_model(fixed)
#' }
#' @export
fix_model <- function(model, norm = "group") {
  py_call(op$fix_model, keras_model_of(model), norm = norm)
}

#' Check a Keras model for DP training
#'
#' Raises a `ValueError` naming every layer that breaks per-example differential privacy
#' (e.g. BatchNormalization), why, and how to fix it.
#'
#' @param model A Keras model or a private Keras model.
#' @return `TRUE`, invisibly, when the model can be trained privately.
#' @export
validate_model <- function(model) {
  py_call(op$validate_model, keras_model_of(model))
  invisible(TRUE)
}

#' Save and load private models
#'
#' `save_private_model()` writes the architecture, weights and privacy metadata (epsilon spent,
#' delta, clipping norm, noise multiplier) to one file, atomically. `load_private_model()` reads
#' it back as a private model, compiled if it was compiled when saved.
#'
#' @param model A private Keras model.
#' @param path The file.
#' @param seed For `load_private_model()`: `NULL` or a whole number making the noise of further
#'   training reproducible.
#' @return `save_private_model()`: `path`, invisibly. `load_private_model()`: a private Keras model.
#' @export
save_private_model <- function(model, path) {
  py_call(py_method(model, "save"), normalizePath(path.expand(path), mustWork = FALSE))
  invisible(path)
}

#' @rdname save_private_model
#' @export
load_private_model <- function(path, seed = NULL) {
  py_call(op$load_private_model, normalizePath(path.expand(path), mustWork = FALSE), seed = as_py_count(seed))
}
