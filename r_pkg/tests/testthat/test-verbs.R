# R keras's verbs on private models, with only optensorflow attached (the tests with the real
# keras and keras3 packages are in tests/r_clients/ of the repository).

regression_setup <- function(n = 120, epsilon = 10, delta = 1e-6) {
  set.seed(2)
  df <- data.frame(x1 = runif(n), x2 = runif(n))
  df$y <- df$x1 + df$x2
  pdf <- private_data_frame(df, metadata = list(x1 = c(0, 1), x2 = c(0, 1), y = c(0, 2)),
                            epsilon = epsilon, delta = delta)
  loader <- private_data_loader(pdf[c("x1", "x2")], pdf$y, batch_size = 20, seed = 1)
  public <- df[1:30, ]
  list(pdf = pdf, loader = loader, x = as.matrix(public[c("x1", "x2")]), y = public$y)
}

regression_model <- function(seed = 1) {
  k <- keras_module()
  private_keras_model(k$Sequential(list(k$Input(shape = list(2L)), k$layers$Dense(4L, activation = "relu"),
                                         k$layers$Dense(1L))), seed = seed)
}

test_that("compile, fit, predict, evaluate work as R keras verbs, with pipes", {
  skip_if_no_op_tensorflow()
  s <- regression_setup()
  dp <- regression_model()
  expect_identical(optensorflow::compile, generics::compile)
  expect_identical(optensorflow::fit, generics::fit)
  expect_invisible(dp |> compile(optimizer = "adam", loss = "mse", metrics = c("mae", "mse")))
  history <- dp |> fit(s$loader, epochs = 2, verbose = 0, validation_data = list(s$x, s$y))
  expect_s3_class(history, c("optensorflow_training_history", "keras_training_history"), exact = TRUE)
  expect_identical(names(history$metrics), c("epsilon", "val_loss", "val_mae", "val_mse"))
  expect_identical(history$params$epochs, 2L)
  # epsilon at the ledger's delta by default: the history reports what the ledger is charged
  expect_equal(history$params$target_delta, 1e-6)
  expect_equal(history$params$ledger_delta, 1e-6)
  expected <- get_privacy_budget(120, 20, 2, 1.1, 1e-6, verbose = FALSE)
  expect_equal(history$metrics$epsilon[2], expected, tolerance = 1e-9)
  expect_equal(spent(s$pdf), expected, tolerance = 1e-9)
  pred <- predict(dp, s$x)
  expect_true(is.matrix(pred))
  expect_identical(dim(pred), c(30L, 1L))
  res <- evaluate(dp, s$x, s$y)
  expect_setequal(names(res), c("loss", "mae", "mse"))
  expect_equal(res$mae, history$metrics$val_mae[2], tolerance = 1e-5)
  expect_identical(dp |> evaluate(s$x, s$y), res)
  # the same method for generics' evaluate (e.g. when tidymodels' generics is attached)
  expect_identical(generics::evaluate(dp, s$x, s$y), res)
})

test_that("fit refuses keras arguments that do not apply to a private loader, before any budget is spent", {
  skip_if_no_op_tensorflow()
  s <- regression_setup()
  dp <- regression_model()
  compile(dp, optimizer = "sgd", loss = "mse")
  expect_error(fit(dp, s$loader, s$y, epochs = 1), "holds the labels", class = "ValueError")
  expect_error(fit(dp, s$loader, batch_size = 10, epochs = 1), "private_data_loader", class = "ValueError")
  expect_error(fit(dp, s$loader, validation_split = 0.2, epochs = 1), "train_test_split", class = "ValueError")
  expect_error(fit(dp, s$loader, initial_epoch = 1, epochs = 1), class = "ValueError")
  expect_error(fit(dp, s$pdf, epochs = 1), class = "TypeError")
  expect_equal(spent(s$pdf), 0)
})

test_that("summary, format and plot describe the private model", {
  skip_if_no_op_tensorflow()
  s <- regression_setup()
  dp <- regression_model()
  expect_match(format(dp), "^PrivateKerasModel\\(sequential")
  out <- capture.output(lines <- summary(dp))
  expect_identical(out, lines)
  expect_true(any(grepl("Dense", out)))
  expect_true(any(grepl("l2_norm_clip = 1, Gaussian noise with noise_multiplier = 1.1", out, fixed = TRUE)))
  expect_true(any(grepl("not trained yet", out)))
  compile(dp, optimizer = "sgd", loss = "mse")
  fit(dp, s$loader, epochs = 1, verbose = 0)
  out <- capture.output(summary(dp))
  expect_true(any(grepl("epsilon spent = [0-9.]+ at delta = 1e-06 over 6 DP-SGD steps", out)))
  file <- tempfile(fileext = ".pdf")
  grDevices::pdf(file)
  expect_null(plot(dp))
  grDevices::dev.off()
  expect_gt(file.size(file), 0)
  unlink(file)
  # a model without an input shape has no layer summary yet, and says so
  k <- keras_module()
  unbuilt <- private_keras_model(k$Sequential(list(k$layers$Dense(1L))))
  expect_true(any(grepl("no layer summary yet|Output Shape", capture.output(summary(unbuilt)))))
})

test_that("evaluate() of optensorflow hands other objects to the generics' methods", {
  skip_if_no_op_tensorflow()
  registerS3method("evaluate", "optensorflow_test_thing", function(x, ...) "generics method",
                   envir = asNamespace("generics"))
  thing <- structure(list(), class = "optensorflow_test_thing")
  expect_identical(optensorflow::evaluate(thing), "generics method")
  expect_error(optensorflow::evaluate(structure(list(), class = "no_such_class")), "no applicable method")
})

py_to_r_num <- function(x) as.numeric(reticulate::py_to_r(reticulate::import("numpy", convert = FALSE)$asarray(x)))

test_that("metrics, losses and optimizers are accepted as names, objects, lists and keras wrapper functions", {
  skip_if_no_op_tensorflow()
  s <- regression_setup()
  k <- keras_module()
  dp <- regression_model()
  # R keras 2 style: a wrapper function carrying py_function_name, which needs arguments
  mae_wrapper <- function(y_true, y_pred) stop("called with tensors only")
  attr(mae_wrapper, "py_function_name") <- "mean_absolute_error"
  # a wrapper returning the Keras object when called without arguments (as keras's metric_*() do)
  mse_wrapper <- function(y_true, y_pred, ...) k$metrics$MeanSquaredError(name = "mse_object")
  attr(mse_wrapper, "py_function_name") <- "mean_squared_error"
  adam <- function(learning_rate = 0.01) k$optimizers$Adam(learning_rate = learning_rate)
  attr(adam, "py_function_name") <- "adam"
  compile(dp, optimizer = adam, loss = k$losses$MeanSquaredError(),
          metrics = list(mae_wrapper, mse_wrapper, "mse", k$metrics$MeanAbsoluteError(name = "mae_object")))
  history <- fit(dp, s$loader, epochs = 1, verbose = 0, validation_data = list(s$x, s$y))
  expect_setequal(names(history$metrics), c("epsilon", "val_loss", "val_mean_absolute_error", "val_mse_object",
                                            "val_mse", "val_mae_object"))
  expect_equal(py_to_r_num(dp$model$optimizer$learning_rate), 0.01, tolerance = 1e-6)
  # one metric function alone is one metric, not a list of its formals
  compile(dp, optimizer = "sgd", loss = "mse", metrics = mae_wrapper)
  history <- fit(dp, s$loader, epochs = 1, verbose = 0, validation_data = list(s$x, s$y))
  expect_identical(names(history$metrics), c("epsilon", "val_loss", "val_mean_absolute_error"))
})

test_that("plain R functions and bad objects are refused with a hint, and no budget is spent", {
  skip_if_no_op_tensorflow()
  s <- regression_setup()
  dp <- regression_model()
  caught <- tryCatch(compile(dp, loss = "mse", metrics = function(y_true, y_pred) mean(abs(y_true - y_pred))),
                     TypeError = function(e) conditionMessage(e))
  expect_match(caught, "plain R function", fixed = TRUE)
  expect_match(caught, "metrics = \"mae\"", fixed = TRUE)
  expect_match(caught, "custom_metric(name, fn)", fixed = TRUE)
  expect_error(compile(dp, loss = function(y_true, y_pred) 1), "loss = \"mse\"", class = "TypeError")
  expect_error(compile(dp, optimizer = function() 1, loss = "mse"), "optimizer = \"adam\"", class = "TypeError")
  expect_error(compile(dp, loss = "mse", metrics = list(list(1))), "must be a Keras object", class = "TypeError")
  expect_error(compile(dp, loss = "mse", metrics = NA_character_), "NA", class = "TypeError")
  compile(dp, optimizer = "sgd", loss = "mse")
  expect_error(fit(dp, s$loader, epochs = 1, verbose = 0, callbacks = list(function(epoch, logs) NULL)),
               "callback", class = "TypeError")
  expect_equal(spent(s$pdf), 0)
})

test_that("every refused fit leaves the ledger untouched", {
  skip_if_no_op_tensorflow()
  s <- regression_setup()
  k <- keras_module()
  dp <- regression_model()
  spent_loader <- function() spent(s$loader)
  # an unknown metric name fails at compile (or, at the latest, on the validation data before the reservation)
  expect_error({
    compile(dp, optimizer = "sgd", loss = "mse", metrics = "no_such_metric")
    fit(dp, s$loader, epochs = 2, verbose = 0, validation_data = list(s$x, s$y))
  }, "no_such_metric")
  expect_equal(spent_loader(), 0)
  # an unknown loss fails at compile
  expect_error(compile(dp, optimizer = "sgd", loss = "no_such_loss"))
  # validation data of the wrong shape, or private
  compile(dp, optimizer = "sgd", loss = "mse", metrics = "mae")
  expect_error(fit(dp, s$loader, epochs = 2, verbose = 0, validation_data = list(s$x[, 1, drop = FALSE], s$y)),
               "validation_data")
  expect_equal(spent_loader(), 0)
  expect_error(fit(dp, s$loader, epochs = 2, verbose = 0, validation_data = list(s$pdf["x1"], s$pdf$y)),
               class = "PrivacyError")
  expect_error(fit(dp, s$loader, epochs = 2, verbose = 0, validation_data = s$x), "list\\(x, y\\)",
               class = "TypeError")
  expect_equal(spent_loader(), 0)
  # a model whose input shape does not match the loader's
  wrong <- private_keras_model(k$Sequential(list(k$Input(shape = list(3L)), k$layers$Dense(1L))))
  compile(wrong, optimizer = "sgd", loss = "mse")
  expect_error(fit(wrong, s$loader, epochs = 2, verbose = 0), "input shape", class = "ValueError")
  expect_equal(spent_loader(), 0)
  # a callback that is not a Keras callback
  expect_error(fit(dp, s$loader, epochs = 2, verbose = 0, callbacks = list("early_stopping")), class = "TypeError")
  expect_equal(spent_loader(), 0)
  # a run the budget cannot afford
  expect_error(fit(dp, s$loader, epochs = 500, verbose = 0), class = "BudgetExceededError")
  expect_equal(spent_loader(), 0)
  expect_equal(spent(s$pdf), 0)
})

test_that("early stopping by a Keras callback charges only the steps run", {
  skip_if_no_op_tensorflow()
  s <- regression_setup()
  k <- keras_module()
  dp <- regression_model()
  compile(dp, optimizer = "sgd", loss = "mse")
  stopper <- k$callbacks$EarlyStopping(monitor = "epsilon", patience = 0L, mode = "min")
  history <- fit(dp, s$loader, epochs = 5, verbose = 0, callbacks = stopper)
  expect_identical(history$params$epochs, 5L)
  expect_length(history$metrics$epsilon, 2L)
  expect_identical(history$epoch, 1:2)
  expect_equal(spent(s$pdf), history$metrics$epsilon[2], tolerance = 1e-9)
  expect_match(capture.output(print(history))[1], "2 of 5 planned epochs", fixed = TRUE)
})

test_that("R keras 2.15 sees tf_keras's classes under Keras 2's names (its methods dispatch on them)", {
  classes <- c("tf_keras.src.engine.sequential.Sequential", "tf_keras.src.engine.training.Model", "python.builtin.object")
  expect_identical(optensorflow:::tf_keras_class_aliases(classes),
                   c("tf_keras.src.engine.sequential.Sequential", "keras.engine.sequential.Sequential",
                     "tf_keras.src.engine.training.Model", "keras.engine.training.Model", "python.builtin.object"))
  keras3_classes <- c("keras.src.models.sequential.Sequential", "python.builtin.object")
  expect_identical(optensorflow:::tf_keras_class_aliases(keras3_classes), keras3_classes)
})

test_that("evaluate() on private data gives DP regression metrics with eps and error_bound", {
  skip_if_no_op_tensorflow()
  s <- regression_setup(n = 200)
  parts <- train_test_split(X = s$pdf[c("x1", "x2")], y = s$pdf$y, test_size = 0.5, random_state = 1)
  dp <- regression_model()
  dp |> compile(optimizer = "adam", loss = "mse", metrics = c("mae", "mse"))
  before <- spent(s$pdf)
  res <- dp |> evaluate(parts$X_test, parts$y_test, eps = 1, error_bound = 3)
  expect_setequal(names(res), c("mae", "mse"))
  expect_true(res$mae >= 0 && res$mae <= 3)
  expect_gt(spent(s$pdf), before)
  expect_error(evaluate(dp, parts$X_test, parts$y_test), "eps", class = "ValueError")
})
