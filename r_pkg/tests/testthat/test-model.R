# One small DP training run (an MLP on 300 rows, 2 epochs), shared by the tests below.
trained <- local({
  cache <- NULL
  function() {
    if (is.null(cache)) {
      pdf <- make_pdf(300, epsilon = 10, delta = 1e-5)
      parts <- train_test_split(X = pdf[c("x1", "x2")], y = pdf$y, test_size = 0.25, random_state = 1)
      k <- keras_module()
      net <- k$Sequential(list(
        k$layers$Dense(16L, activation = "relu", input_shape = list(2L)),
        k$layers$Dense(1L, activation = "sigmoid")
      ))
      model <- private_keras_model(net, l2_norm_clip = 1, noise_multiplier = 1.1, seed = 1)
      compiled <- dp_compile(model, optimizer = "adam", loss = "binary_crossentropy", metrics = "accuracy")
      loader <- private_data_loader(parts$X_train, parts$y_train, batch_size = 16, seed = 1)
      public <- make_df(60, seed = 9)
      history <- dp_fit(model, loader, epochs = 2, target_delta = 1e-5,
                        validation_data = list(as.matrix(public[c("x1", "x2")]), public$y))
      cache <<- list(pdf = pdf, parts = parts, model = model, compiled = compiled, loader = loader,
                     history = history, public = public)
    }
    cache
  }
})

test_that("keras_module gives tensorflow.keras of the mode's Keras for building models as in the blog", {
  skip_if_no_op_tensorflow()
  k <- keras_module()
  expect_s3_class(k, "python.builtin.module")
  net <- k$Sequential(list(k$layers$Dense(2L, input_shape = list(3L))))
  stack <- optensorflow_stack()
  # Keras 3's Model, or Keras 2's (tf_keras on TF 2.21, keras 2.15 on TF 2.15)
  expected <- if (stack$keras == "keras3") "keras.src.models.model.Model" else
    paste0(stack$keras_package, ".src.engine.training.Model")
  expect_s3_class(net, expected)
})

test_that("dp_fit trains and returns the history with the epsilon get_privacy_budget predicts", {
  skip_if_no_op_tensorflow()
  run <- trained()
  expect_s3_class(run$model, "op_tensorflow.model.PrivateKerasModel")
  expect_identical(run$compiled, run$model) # dp_compile returns the model (invisibly)
  h <- run$history
  expect_s3_class(h, c("optensorflow_training_history", "keras_training_history"), exact = TRUE)
  expect_identical(names(h$metrics)[1], "epsilon")
  expect_setequal(names(h$metrics)[-1], c("val_loss", "val_accuracy")) # in Keras' order: Keras 3 sorts them
  expect_identical(h$epoch, 1:2)
  expect_true(all(diff(h$metrics$epsilon) > 0))
  expect_equal(h$params$target_delta, 1e-5)
  wide <- as.data.frame(h, format = "wide")
  expect_identical(names(wide)[1:2], c("epoch", "epsilon"))
  expect_identical(wide$epoch, 1:2)
  expected <- get_privacy_budget(225, 16, 2, 1.1, 1e-5, verbose = FALSE)
  expect_equal(h$epsilon[2], expected, tolerance = 1e-12)
  # Python's own estimate, called directly: the same number
  py_eps <- reticulate::import("op_tensorflow")$get_privacy_budget(225L, 16L, 2L, 1.1, 1e-5, verbose = FALSE)
  expect_equal(h$epsilon[2], py_eps, tolerance = 1e-12)
  # the ledger (at the same delta) was charged exactly the run's epsilon
  expect_equal(spent(run$pdf), expected, tolerance = 1e-9)
  expect_equal(run$model$privacy$epsilon, expected, tolerance = 1e-12)
  expect_match(capture.output(print(run$model)),
               "PrivateKerasModel(sequential", fixed = TRUE)
})

test_that("dp_fit refuses a run the budget cannot afford, before any step", {
  skip_if_no_op_tensorflow()
  pdf <- make_pdf(100, epsilon = 0.5, delta = 1e-5)
  k <- keras_module()
  model <- private_keras_model(k$Sequential(list(k$layers$Dense(1L, input_shape = list(2L)))),
                               noise_multiplier = 0.5)
  dp_compile(model, optimizer = k$optimizers$SGD(learning_rate = 0.1), loss = "mse")
  loader <- private_data_loader(pdf[c("x1", "x2")], pdf$y, batch_size = 10)
  before <- model$get_weights()
  caught <- tryCatch(dp_fit(model, loader, epochs = 5), BudgetExceededError = function(e) e)
  expect_s3_class(caught, "BudgetExceededError")
  expect_equal(model$get_weights(), before)
  expect_equal(spent(pdf), 0)
  expect_error(dp_fit(model, pdf, epochs = 1), "private_data_loader|PrivateDataLoader", class = "TypeError")
  expect_error(dp_fit(model, loader, epochs = 1, validation_data = list(pdf["x1"], pdf$y)),
               class = "PrivacyError")
})

test_that("dp_predict keeps private inputs private and returns R matrices for public ones", {
  skip_if_no_op_tensorflow()
  run <- trained()
  pred <- dp_predict(run$model, run$parts$X_test, label_columns = "prob")
  expect_s3_class(pred, "op_tensorflow.frame.PrivateDataFrame")
  expect_identical(names(pred), "prob")
  expect_identical(nrow(pred), 75L)
  expect_equal(unlist(pred$prob$metadata), c(0, 1)) # sigmoid output bounds
  expect_error(as.data.frame(pred), class = "PrivacyError")
  before <- spent(run$pdf)
  m <- dp_mean(pred$prob, eps = 0.1)
  expect_true(m >= 0 && m <= 1)
  expect_gt(spent(run$pdf), before)
  x <- as.matrix(run$public[1:5, c("x1", "x2")])
  out <- dp_predict(run$model, x)
  expect_true(is.matrix(out))
  expect_identical(dim(out), c(5L, 1L))
  expect_true(all(out >= 0 & out <= 1))
  expect_equal(dp_predict(run$model, run$public[1:5, c("x1", "x2")]), out, tolerance = 1e-6)
  expect_error(dp_predict(run$model, run$parts$X_test, label_columns = c("a", "b")), "label_columns",
               class = "ValueError")
})

test_that("dp_evaluate gives DP metrics on private data and Keras metrics on public data", {
  skip_if_no_op_tensorflow()
  run <- trained()
  before <- spent(run$pdf)
  res <- dp_evaluate(run$model, run$parts$X_test, run$parts$y_test, eps = 0.5, loss_bound = 5)
  expect_type(res, "list")
  expect_setequal(names(res), c("loss", "accuracy"))
  expect_true(res$accuracy >= 0 && res$accuracy <= 1)
  expect_gt(spent(run$pdf), before)
  expect_error(dp_evaluate(run$model, run$parts$X_test, run$parts$y_test), "eps must be given",
               class = "ValueError")
  pub <- dp_evaluate(run$model, run$public[c("x1", "x2")], run$public$y)
  expect_setequal(names(pub), c("loss", "accuracy"))
  expect_type(pub$loss, "double")
})

test_that("save_private_model and load_private_model round-trip weights and privacy metadata", {
  skip_if_no_op_tensorflow()
  run <- trained()
  path <- tempfile(fileext = ".optf")
  on.exit(unlink(path))
  expect_invisible(save_private_model(run$model, path))
  expect_true(file.exists(path))
  loaded <- load_private_model(path)
  expect_s3_class(loaded, "op_tensorflow.model.PrivateKerasModel")
  expect_equal(loaded$privacy$epsilon, run$model$privacy$epsilon)
  expect_equal(loaded$privacy$noise_multiplier, 1.1)
  x <- as.matrix(run$public[1:5, c("x1", "x2")])
  expect_equal(dp_predict(loaded, x), dp_predict(run$model, x), tolerance = 1e-6)
  expect_error(load_private_model(tempfile()), class = "FileNotFoundError")
})

test_that("BatchNormalization is refused, and fix_model makes the model trainable", {
  skip_if_no_op_tensorflow()
  k <- keras_module()
  net <- k$Sequential(list(
    k$layers$Conv1D(4L, 3L, activation = "relu", input_shape = list(12L, 6L)),
    k$layers$BatchNormalization(),
    k$layers$GlobalAveragePooling1D(),
    k$layers$Dense(1L)
  ))
  expect_error(validate_model(net), "BatchNormalization", class = "ValueError")
  caught <- tryCatch(private_keras_model(net), ValueError = function(e) conditionMessage(e))
  expect_match(caught, "cannot be trained with differential privacy")
  fixed <- fix_model(net)
  expect_true(validate_model(fixed))
  classes <- vapply(reticulate::py_to_r(fixed$layers), function(l) class(l)[1], "")
  expect_true(any(grepl("GroupNormalization", classes)))
  expect_false(any(grepl("BatchNormalization", classes)))
  layer_norm <- fix_model(net, norm = "layer")
  expect_true(validate_model(layer_norm))
  expect_error(fix_model(net, norm = "batch"), "norm must be one of", class = "ValueError")
  # fix = TRUE does the same inside private_keras_model, and a 1-D convnet trains on
  # flattened columns reshaped by the loader's feature_shape
  model <- private_keras_model(net, fix = TRUE, seed = 2)
  expect_true(validate_model(model))
  set.seed(4)
  df <- as.data.frame(matrix(runif(40 * 72), ncol = 72))
  df$y <- runif(40)
  pdf <- private_data_frame(df)
  dp_compile(model, loss = "mse")
  h <- dp_fit(model, private_data_loader(pdf[paste0("V", 1:72)], pdf$y, batch_size = 8, seed = 1,
                                         feature_shape = c(12, 6)), epochs = 1)
  expect_identical(names(h$metrics), "epsilon")
  # target_delta defaults to the ledger's delta (private_data_frame's default, 1e-5 here)
  expect_equal(h$params$target_delta, h$params$ledger_delta)
  expect_equal(h$metrics$epsilon, get_privacy_budget(40, 8, 1, 1.1, h$params$ledger_delta, verbose = FALSE),
               tolerance = 1e-12)
  expect_equal(spent(pdf), h$metrics$epsilon, tolerance = 1e-9)
})

test_that("an R function as metric, bad validation data and a model mixing examples fail before any budget is spent", {
  skip_if_no_op_tensorflow()
  pdf <- make_pdf(100, epsilon = 10, delta = 1e-5)
  k <- keras_module()
  loader <- private_data_loader(pdf[c("x1", "x2")], pdf$y, batch_size = 10)
  public <- make_df(20, seed = 3)
  validation <- list(as.matrix(public[c("x1", "x2")]), public$y)
  model <- private_keras_model(k$Sequential(list(k$layers$Dense(1L, input_shape = list(2L)))))
  # a plain R function is refused at compile (Keras cannot run R code in the training graph), with a hint
  expect_error(dp_compile(model, optimizer = "sgd", loss = "mse",
                          metrics = function(y_true, y_pred) mean(abs(y_true - y_pred))),
               "metric's name", class = "TypeError")
  expect_equal(spent(pdf), 0)
  dp_compile(model, optimizer = "sgd", loss = "mse")
  expect_error(dp_fit(model, loader, epochs = 3, validation_data = list(validation[[1]][, 1, drop = FALSE], public$y)),
               "validation_data")
  expect_equal(spent(pdf), 0)
  mixing <- private_keras_model(k$Sequential(list(k$layers$Dense(2L, input_shape = list(2L)),
                                                  k$layers$Softmax(axis = 0L), k$layers$Dense(1L))))
  dp_compile(mixing, optimizer = "sgd", loss = "mse")
  expect_error(dp_fit(mixing, loader, epochs = 3), "mixes examples", class = "PrivacyError")
  expect_equal(spent(pdf), 0)
})

test_that("private_keras_model takes embedding_noise and explains what it needs", {
  skip_if_no_op_tensorflow()
  k <- keras_module()
  net <- k$Sequential(list(k$layers$Input(list(2L)), k$layers$Dense(1L)))
  expect_error(private_keras_model(net, embedding_noise = "sparse"), "exactly one", class = "ValueError")
  expect_error(private_keras_model(net, embedding_noise = "sparser"), "embedding_noise must be", class = "ValueError")
  emb <- k$Sequential(list(k$layers$Input(list(4L), dtype = "int32"), k$layers$Embedding(20L, 2L),
                           k$layers$GlobalAveragePooling1D(), k$layers$Dense(1L)))
  expect_s3_class(private_keras_model(emb, embedding_noise = "sparse"), "python.builtin.object")
})
