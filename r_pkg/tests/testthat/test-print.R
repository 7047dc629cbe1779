# Printing: privacy_budget() reports, TF Privacy's DP optimizers, private frames and models.

test_that("format() of a privacy budget report gives its lines without Python", {
  report <- structure(list(epsilon = 3, delta = 1e-5, accountant = "pld", spent = 1.25, remaining = 1.75,
                           n_entries = 2L, n_reserved = 1L), class = "optensorflow_privacy_budget")
  expect_identical(format(report), c(
    "Privacy budget (pld accountant, delta = 1e-05)",
    "  epsilon:   3",
    "  spent:     1.25",
    "  remaining: 1.75",
    "  entries:   2 (1 reserved)"
  ))
  expect_output(print(report), "entries:   2 \\(1 reserved\\)")
  capture.output(expect_invisible(print(report)))
})

test_that("privacy_budget() returns the classed report silently; its fields are R values", {
  skip_if_no_op_tensorflow()
  pdf <- make_pdf(60, epsilon = 4, delta = 1e-5)
  dp_mean(pdf$x1, eps = 0.5)
  expect_silent(report <- privacy_budget(pdf))
  expect_s3_class(report, "optensorflow_privacy_budget")
  expect_type(report$spent, "double")
  expect_type(report$n_entries, "integer")
  expect_type(report$accountant, "character")
  expect_gte(report$spent, 0.5) # the Laplace charge, composed by the ledger's RDP accountant
  expect_equal(report$spent + report$remaining, 4)
  out <- capture.output(print(report))
  expect_length(out, 5)
  expect_identical(out[3], paste("  spent:    ", format(report$spent, digits = 6)))
  # the loader and the series report the same ledger
  loader <- private_data_loader(pdf[c("x1", "x2")], pdf$y, batch_size = 10)
  expect_equal(privacy_budget(loader)$spent, report$spent)
  expect_equal(privacy_budget(pdf$x2)$spent, report$spent)
})

test_that("a private frame prints a compact summary (at most 20 lines, no values)", {
  skip_if_no_op_tensorflow()
  set.seed(1)
  df <- as.data.frame(matrix(round(runif(30 * 73) * 1000 + 0.123, 3), ncol = 73))
  pdf <- private_data_frame(df, epsilon = 5, delta = 1e-5)
  out <- capture.output(print(pdf))
  expect_lte(length(out), 20)
  expect_lte(max(nchar(out)), 200)
  expect_match(paste(out, collapse = "\n"), "PrivateDataFrame")
  expect_match(paste(out, collapse = "\n"), "30")         # rows
  expect_match(paste(out, collapse = "\n"), "V1")         # first column
  expect_false(any(grepl("\\.123", out)))                 # never values
  expect_identical(capture.output(pdf), out)              # auto-printing is the same
  expect_identical(out, strsplit(reticulate::py_repr(pdf), "\n", fixed = TRUE)[[1]]) # the Python repr
})

test_that("a private model prints its Python repr", {
  skip_if_no_op_tensorflow()
  k <- keras_module()
  dp <- private_keras_model(k$Sequential(list(k$Input(shape = list(2L)), k$layers$Dense(1L))))
  out <- capture.output(print(dp))
  expect_identical(out, strsplit(reticulate::py_repr(dp), "\n", fixed = TRUE)[[1]])
  expect_match(out[1], "PrivateKerasModel(", fixed = TRUE)
})

test_that("TF Privacy's DP optimizers print their configuration, not an address (Keras 2)", {
  skip_if_no_op_tensorflow()
  skip_if(optensorflow_stack()$keras == "keras3", "TF Privacy's optimizers need Keras 2")
  adam <- dp_adam_gaussian_optimizer(l2_norm_clip = 1.5, noise_multiplier = 1.1, num_microbatches = 16,
                                     learning_rate = 0.01)
  expect_s3_class(adam, "optensorflow_dp_optimizer")
  expect_s3_class(adam, "python.builtin.object") # still the Python optimizer
  out <- capture.output(print(adam))
  expect_identical(out, format(adam))
  expect_identical(capture.output(adam), out)
  expect_false(any(grepl("0x[0-9a-f]+|object at", out)))
  expect_match(out[1], "DPKerasAdamOptimizer", fixed = TRUE)
  expect_true(any(grepl("^  l2_norm_clip: +1.5$", out)))
  expect_true(any(grepl("^  noise_multiplier: +1.1$", out)))
  expect_true(any(grepl("^  num_microbatches: +16$", out)))
  expect_true(any(grepl("^  learning_rate: +0.01$", out)))
  sgd <- dp_gradient_descent_gaussian_optimizer(l2_norm_clip = 2, noise_multiplier = 0.7)
  out <- format(sgd)
  expect_match(out[1], "DPKerasSGDOptimizer", fixed = TRUE)
  expect_true(any(grepl("^  noise_multiplier: +0.7$", out)))
  expect_true(any(grepl("^  num_microbatches: +NULL", out)))
  # the classed object still compiles a plain Keras 2 model
  k <- keras_module()
  net <- k$Sequential(list(k$Input(shape = list(3L)), k$layers$Dense(1L)))
  net$compile(optimizer = adam, loss = k$losses$MeanSquaredError(reduction = k$losses$Reduction$NONE))
  expect_identical(class(net$optimizer)[1], class(adam)[2])
})
