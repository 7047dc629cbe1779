test_that("private_arrays keeps R's index order: x[i, j, k] is example i, timestep j, feature k", {
  skip_if_no_op_tensorflow()
  x <- array(0, c(30, 4, 3))
  x[, 3, 2] <- 1      # timestep 3, feature 2: Python's column "x[2,1]"
  x[1:10, 1, 3] <- 1  # timestep 1, feature 3 of the first 10 examples: "x[0,2]"
  d <- private_arrays(x, rep(0, 30), feature_bounds = c(0, 1), label_bounds = c(0, 1))
  expect_named(d, c("x", "y"))
  expect_s3_class(d$x, "op_tensorflow.frame.PrivateDataFrame")
  expect_s3_class(d$y, "op_tensorflow.frame.PrivateSeries")
  expect_identical(dim(d$x), c(30L, 12L))
  expect_identical(unlist(d$x$example_shape), c(4L, 3L))
  expect_identical(names(d$x)[1:4], c("x[0,0]", "x[0,1]", "x[0,2]", "x[1,0]"))
  # DP sums at a huge epsilon (noise ~1e-6) read the slots back
  expect_equal(dp_sum(d$x[["x[2,1]"]], eps = 1e6), 30, tolerance = 1e-3)
  expect_equal(dp_sum(d$x[["x[0,2]"]], eps = 1e6), 10, tolerance = 1e-3)
  expect_equal(dp_sum(d$x[["x[1,2]"]], eps = 1e6), 0, tolerance = 1e-3)
  expect_true(d$x$budget$epsilon == Inf)
})

test_that("the loader takes private arrays without feature_shape, and the examples in R's order", {
  skip_if_no_op_tensorflow()
  set.seed(2)
  x <- array(runif(20 * 5 * 3), c(20, 5, 3))
  y <- runif(20)
  d <- private_arrays(x, y, feature_bounds = c(0, 1), label_bounds = c(0, 1), epsilon = 3, delta = 1e-4)
  expect_identical(d$x$budget$epsilon, 3)
  ld <- private_data_loader(d$x, d$y, batch_size = 4, seed = 1)
  expect_identical(unlist(ld$input_shape), c(5L, 3L))
  expect_identical(unlist(private_data_loader(d, batch_size = 4)$input_shape), c(5L, 3L))
  # with q = 1 a batch holds every example (shuffled): its x[, j, k] are R's x[, j, k]
  all_rows <- private_data_loader(d, batch_size = 20, seed = 1)
  batch <- all_rows$`_sample`()  # internal: the sampled rows, for this check only
  xb <- batch[[1]]
  expect_identical(dim(xb), c(20L, 5L, 3L))
  order_b <- order(xb[, 1, 1])
  order_r <- order(x[, 1, 1])
  expect_equal(xb[order_b, , ], x[order_r, , ], tolerance = 1e-6)  # float32
  parts <- train_test_split(d$x, d$y, test_size = 0.25, random_state = 1)
  expect_identical(unlist(parts[[1]]$example_shape), c(5L, 3L))
  expect_identical(unlist(private_data_loader(parts[[1]], parts[[3]], batch_size = 3)$input_shape), c(5L, 3L))
})

test_that("per-feature bounds, factor labels, matrices and images", {
  skip_if_no_op_tensorflow()
  set.seed(3)
  img <- array(runif(12 * 4 * 4 * 2), c(12, 4, 4, 2))
  lab <- factor(sample(c("cat", "dog", "emu"), 12, replace = TRUE))
  d <- private_arrays(img, lab, feature_bounds = rbind(c(0, 1), c(0, 0.5)))
  expect_identical(unlist(d$x$example_shape), c(4L, 4L, 2L))
  expect_equal(unlist(d$x$metadata[["x[0,0,1]"]]), c(0, 0.5))
  expect_equal(unlist(d$y$metadata), c(0, 1, 2))  # the factor's codes
  d2 <- private_arrays(matrix(runif(30), 10, 3), rep(0:1, 5),
                       feature_bounds = list(c(0, 1), c(0, 2), c(0, 3)), label_categories = c(0, 1))
  expect_identical(unlist(d2$x$example_shape), 3L)
  expect_equal(unlist(d2$x$metadata[["x[2]"]]), c(0, 3))
})

test_that("private_arrays refuses what it cannot use, naming the argument", {
  skip_if_no_op_tensorflow()
  x <- array(runif(60), c(10, 3, 2))
  expect_error(private_arrays(x, runif(10), label_bounds = c(0, 1)), "feature_bounds must be given",
               class = "ValueError")
  expect_error(private_arrays(x, runif(10), feature_bounds = c(0, 1)), "exactly one of label_bounds",
               class = "ValueError")
  expect_error(private_arrays(x, runif(9), feature_bounds = c(0, 1), label_bounds = c(0, 1)),
               "10 examples but y has 9", class = "ValueError")
  expect_error(private_arrays(runif(10), runif(10), feature_bounds = c(0, 1), label_bounds = c(0, 1)),
               "matrix\\(x, ncol = 1\\)", class = "ValueError")
  expect_error(private_arrays(x, runif(10), feature_bounds = c(0, 1, 2), label_bounds = c(0, 1)),
               "feature_bounds must be c\\(lower, upper\\)", class = "ValueError")
  expect_error(private_arrays(x, runif(10), feature_bounds = rbind(c(0, 1), c(0, 1), c(0, 1)),
                              label_bounds = c(0, 1)), "per feature", class = "ValueError")
  expect_error(private_arrays(array("a", c(10, 2)), runif(10), feature_bounds = c(0, 1),
                              label_bounds = c(0, 1)), "numeric", class = "TypeError")
  expect_error(private_arrays(x, runif(10), feature_bounds = c(0, 1), label_bounds = c(0, 1), epsilon = 1),
               "delta must be given", class = "ValueError")
})

test_that("private arrays never print or convert their values", {
  skip_if_no_op_tensorflow()
  x <- array(0.5, c(10, 3, 2))
  x[4, 2, 1] <- 0.987654
  d <- private_arrays(x, rep(0.123456, 10), feature_bounds = c(0, 1), label_bounds = c(0, 1))
  printed <- c(capture.output(print(d$x)), capture.output(print(d$y)), capture.output(print(d)),
               capture.output(print(private_data_loader(d, batch_size = 2))))
  expect_false(any(grepl("987654|123456", printed)))
  expect_true(any(grepl("per-example shape: (3, 2)", printed, fixed = TRUE)))
  expect_error(as.array(d$x), class = "PrivacyError")
  expect_error(as.matrix(d$x), class = "PrivacyError")
  expect_error(as.numeric(d$y), class = "PrivacyError")
})

test_that("print of a 73-column private frame is a summary of at most 20 lines", {
  skip_if_no_op_tensorflow()
  df <- as.data.frame(matrix(runif(5 * 73), ncol = 73))
  pdf <- private_data_frame(df, metadata = list(V1 = c(0, 1)), epsilon = 3, delta = 1e-3)
  out <- capture.output(print(pdf))
  expect_lte(length(out), 20)
  expect_true(all(nchar(out) <= 120))
  expect_identical(out[1], "PrivateDataFrame(rows=5, columns=73)")
  expect_true("    V1: float64, [0, 1]" %in% out)
  expect_true("    ... and 63 more columns" %in% out)
  expect_match(out[length(out)], "epsilon total 3, spent 0, remaining 3; delta 0.001", fixed = TRUE)
  loader_out <- capture.output(print(private_data_loader(pdf[paste0("V", 1:72)], pdf$V73, batch_size = 2)))
  expect_lte(length(loader_out), 20)
  expect_true(any(grepl("feature columns (72: V1, V2", loader_out, fixed = TRUE)))
})

test_that("a convnet trains on private R sequences, predicts and evaluates them in their shape", {
  skip_if_no_op_tensorflow()
  set.seed(4)
  x <- array(runif(60 * 6 * 2), c(60, 6, 2))
  y <- as.numeric(x[, 1, 1] > 0.5)
  d <- private_arrays(x, y, feature_bounds = c(0, 1), label_categories = c(0, 1), delta = 1e-4)
  parts <- train_test_split(X = d$x, y = d$y, test_size = 0.25, random_state = 1)
  k <- keras_module()
  net <- k$Sequential(list(
    k$Input(shape = list(6L, 2L)),
    k$layers$Conv1D(4L, 3L, activation = "relu"),
    k$layers$Flatten(),
    k$layers$Dense(1L, activation = "sigmoid")
  ))
  model <- private_keras_model(net, l2_norm_clip = 1, noise_multiplier = 1.1, seed = 1)
  dp_compile(model, optimizer = "sgd", loss = "binary_crossentropy", metrics = "accuracy")
  dp_fit(model, private_data_loader(parts$X_train, parts$y_train, batch_size = 9, seed = 1), epochs = 1)
  pred <- dp_predict(model, parts$X_test, label_columns = "p")
  expect_s3_class(pred, "op_tensorflow.frame.PrivateDataFrame")
  expect_identical(dim(pred), c(15L, 1L))
  # the private predictions are the model's outputs on the same examples, reshaped as in R
  test_rows <- sort(reticulate::import("numpy")$random$default_rng(1L)$permutation(60L)[1:15]) + 1
  direct <- net$predict(reticulate::np_array(x[test_rows, , , drop = FALSE], dtype = "float32"), verbose = 0L)
  expect_equal(dp_sum(pred$p, eps = 1e6), sum(direct), tolerance = 1e-3)
  acc <- dp_evaluate(model, parts$X_test, parts$y_test, eps = 1)
  expect_true(acc$accuracy >= 0 && acc$accuracy <= 1)
})
