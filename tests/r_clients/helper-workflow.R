# The R blog's workflow on a private model, written with the verbs of a real R keras client
# (`library(keras)` on Keras 2, `library(keras3)` on Keras 3). Sourced by test-keras.R and
# test-keras3.R, which attach their client; run by run.R (see the Makefile's test-r-clients).
# Tiny data and 1-2 epochs: these tests check the wiring, not the learning.

spent <- function(x) {
  utils::capture.output(report <- privacy_budget(x))
  report$spent
}

# Sequences of 12 steps x 6 features in [0, 1] and a heart-rate-like target, as R arrays n x 12 x 6.
make_sequences <- function(n, seed) {
  set.seed(seed)
  x <- array(runif(n * 12 * 6), dim = c(n, 12, 6))
  y <- 60 + 40 * apply(x[, , 1, drop = FALSE], 1, mean)
  list(x = x, y = y)
}

# The same as private data (private_arrays(): the loader keeps the per-example shape c(12, 6)).
# `pdf` is the private features, whose ledger the loader charges.
private_sequences <- function(n = 96, epsilon = 20, delta = 1e-6) {
  s <- make_sequences(n, seed = 1)
  d <- private_arrays(s$x, s$y, feature_bounds = c(0, 1), label_bounds = c(60, 100), epsilon = epsilon,
                      delta = delta)
  loader <- private_data_loader(d$x, d$y, batch_size = 16, seed = 1)
  list(pdf = d$x, loader = loader)
}

# The blog's convnet with the client's layer functions (BatchNormalization included, as in the blog).
blog_model <- function() {
  keras_model_sequential(input_shape = c(12, 6)) %>%
    layer_conv_1d(filters = 4, kernel_size = 3, activation = "relu") %>%
    layer_batch_normalization() %>%
    layer_global_average_pooling_1d() %>%
    layer_dense(units = 1)
}

run_blog_workflow <- function() {
  test_that("the blog's workflow runs with R keras verbs on a private model", {
    data <- private_sequences()
    public <- make_sequences(24, seed = 2)
    model <- blog_model()
    expect_error(private_keras_model(model), "BatchNormalization", class = "ValueError")
    dp <- private_keras_model(model, l2_norm_clip = 1, noise_multiplier = 1.1, fix = TRUE, seed = 1)
    dp %>% compile(optimizer = optimizer_adam(learning_rate = 1e-3), loss = "mse",
                   metrics = metric_mean_absolute_error)
    history <- dp %>% fit(data$loader, epochs = 2, verbose = 0, validation_data = list(public$x, public$y))
    expect_s3_class(history, "keras_training_history")
    expect_identical(class(history)[1], "optensorflow_training_history")
    expect_identical(names(history$metrics), c("epsilon", "val_loss", "val_mean_absolute_error"))
    expect_equal(history$params$target_delta, 1e-6)
    expected <- get_privacy_budget(96, 16, 2, 1.1, 1e-6, verbose = FALSE)
    expect_equal(history$metrics$epsilon[2], expected, tolerance = 1e-9)
    expect_equal(spent(data$pdf), expected, tolerance = 1e-9)
    # plot(history) is optensorflow's (not the client's plot.keras_training_history), epsilon included
    file <- tempfile(fileext = ".pdf")
    grDevices::pdf(file)
    if (requireNamespace("ggplot2", quietly = TRUE)) {
      p <- plot(history)
      expect_s3_class(p, "ggplot")
      expect_identical(levels(p$data$metric), c("loss", "mean_absolute_error", "epsilon (delta = 1e-06)"))
      print(p)
    }
    expect_null(plot(history, method = "base"))
    grDevices::dev.off()
    expect_gt(file.size(file), 1000)
    unlink(file)
    expect_output(print(history), "epsilon at delta = 1e-06")
    df <- as.data.frame(history)
    expect_identical(names(df), c("epoch", "value", "metric", "data"))
    pred <- predict(dp, public$x)
    expect_identical(dim(pred), c(24L, 1L))
    res <- evaluate(dp, public$x, public$y)
    expect_setequal(names(res), c("loss", "mean_absolute_error"))
    expect_equal(res$mean_absolute_error, history$metrics$val_mean_absolute_error[2], tolerance = 1e-4)
    expect_output(summary(dp), "epsilon spent = ")
  })

  test_that("metric, loss, optimizer and callback objects of the client are accepted in every form", {
    data <- private_sequences()
    public <- make_sequences(24, seed = 2)
    dp <- private_keras_model(blog_model(), fix = TRUE, seed = 2)
    dp %>% compile(optimizer = optimizer_adam, loss = loss_mean_squared_error,
                   metrics = list(metric_mean_absolute_error(name = "mae_object"), metric_mean_squared_error, "mae"))
    history <- dp %>% fit(data$loader, epochs = 1, verbose = 0, validation_data = list(public$x, public$y))
    expect_setequal(names(history$metrics), c("epsilon", "val_loss", "val_mae_object", "val_mean_squared_error",
                                              "val_mae"))
    dp %>% compile(optimizer = optimizer_sgd(learning_rate = 0.01), loss = loss_mean_squared_error(),
                   metrics = c("mae", "mse"))
    # early stopping (the blog's callback) charges only the epochs run
    fresh <- private_sequences()
    stopper <- callback_early_stopping(monitor = "epsilon", mode = "min", patience = 0)
    seen <- numeric()
    logger <- callback_lambda(on_epoch_end = function(epoch, logs) seen <<- c(seen, logs$epsilon))
    history <- dp %>% fit(fresh$loader, epochs = 4, verbose = 0, callbacks = list(stopper, logger))
    expect_length(history$metrics$epsilon, 2L)
    expect_equal(seen, history$metrics$epsilon) # an R callback sees each epoch's logs
    expect_equal(spent(fresh$pdf), history$metrics$epsilon[2], tolerance = 1e-9)
  })

  test_that("refused calls spend no budget", {
    data <- private_sequences(epsilon = 3)
    public <- make_sequences(24, seed = 2)
    dp <- private_keras_model(blog_model(), fix = TRUE, seed = 3)
    expect_error(dp %>% compile(optimizer = optimizer_adam(), loss = "mse",
                                metrics = function(y_true, y_pred) mean(abs(y_true - y_pred))),
                 "plain R function", class = "TypeError")
    dp %>% compile(optimizer = optimizer_adam(), loss = "mse", metrics = metric_mean_absolute_error)
    expect_error(dp %>% fit(data$loader, epochs = 1, verbose = 0, validation_data = list(public$x[, 1:6, ], public$y)),
                 "validation_data")
    expect_error(dp %>% fit(data$loader, epochs = 1, verbose = 0, validation_data = list(public$x, public$y[1:3])),
                 "validation_data")
    expect_error(dp %>% fit(data$loader, epochs = 1, verbose = 0, batch_size = 8), class = "ValueError")
    expect_error(dp %>% fit(data$loader, epochs = 200, verbose = 0), class = "BudgetExceededError")
    expect_equal(spent(data$pdf), 0)
    expect_equal(spent(data$loader), 0)
  })
}

# evaluate() is the R tensorflow package's generic in keras and keras3, optensorflow's own otherwise:
# both must reach private models and ordinary keras models, whichever package was attached last.
check_evaluate_masking <- function(client) {
  test_that(paste0("evaluate works on private and plain models whether ", client, " or optensorflow is attached last"), {
    public <- make_sequences(24, seed = 2)
    data <- private_sequences()
    plain <- keras_model_sequential(input_shape = c(12, 6)) %>% layer_flatten() %>% layer_dense(1)
    plain %>% compile(optimizer = "sgd", loss = "mse")
    dp <- private_keras_model(keras_model_sequential(input_shape = c(12, 6)) %>% layer_flatten() %>% layer_dense(1))
    dp %>% compile(optimizer = "sgd", loss = "mse")
    for (last in c(client, "optensorflow")) {
      first <- setdiff(c(client, "optensorflow"), last)
      suppressWarnings(suppressMessages({
        detach(paste0("package:", last), character.only = TRUE)
        library(last, character.only = TRUE)
      }))
      expect_identical(search()[2], paste0("package:", last))
      expect_identical(environmentName(environment(evaluate)), if (last == "optensorflow") "optensorflow" else "tensorflow")
      res <- evaluate(dp, public$x, public$y)
      expect_named(res, "loss")
      plain_res <- evaluate(plain, public$x, public$y, verbose = 0)
      expect_true("loss" %in% names(plain_res))
      expect_s3_class(fit(dp, data$loader, epochs = 1, verbose = 0), "optensorflow_training_history")
      expect_true(is.matrix(predict(dp, public$x)))
    }
  })
}

# A metric written in R with the client's Keras operations, wrapped by the client's custom_metric().
check_custom_metric <- function(metric) {
  test_that("a custom_metric() of the client runs on the validation data", {
    data <- private_sequences()
    public <- make_sequences(24, seed = 2)
    dp <- private_keras_model(blog_model(), fix = TRUE, seed = 4)
    dp %>% compile(optimizer = "adam", loss = "mse", metrics = metric)
    history <- dp %>% fit(data$loader, epochs = 1, verbose = 0, validation_data = list(public$x, public$y))
    expect_identical(names(history$metrics), c("epsilon", "val_loss", "val_mae_r"))
    expect_true(is.finite(history$metrics$val_mae_r))
  })
}

# Public tfdatasets datasets (the blog's pipeline) as inputs of predict() and evaluate().
check_tfdatasets <- function() {
  test_that("predict() and evaluate() take public tfdatasets datasets", {
    skip_if_not_installed("tfdatasets")
    public <- make_sequences(40, seed = 3)
    dp <- private_keras_model(blog_model(), fix = TRUE, seed = 1)
    dp %>% compile(optimizer = "adam", loss = "mse", metrics = "mae")
    features <- tfdatasets::dataset_batch(tfdatasets::tensor_slices_dataset(public$x), 16)
    both <- tfdatasets::dataset_batch(tfdatasets::tensor_slices_dataset(list(public$x, public$y)), 16)
    from_arrays <- predict(dp, public$x)
    expect_equal(predict(dp, features), from_arrays, tolerance = 1e-5)
    expect_equal(predict(dp, both), from_arrays, tolerance = 1e-5)
    expect_equal(evaluate(dp, both), evaluate(dp, public$x, public$y), tolerance = 1e-5)
  })
}
