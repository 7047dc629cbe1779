test_that("private_data_loader takes R numbers and a feature_shape vector", {
  skip_if_no_op_tensorflow()
  set.seed(3)
  df <- as.data.frame(matrix(runif(20 * 72), ncol = 72))
  df$y <- runif(20)
  pdf <- private_data_frame(df)
  features <- pdf[paste0("V", 1:72)]
  ld <- private_data_loader(features, pdf$y, batch_size = 4, seed = 7, feature_shape = c(12, 6))
  expect_s3_class(ld, "op_tensorflow.loader.PrivateDataLoader")
  expect_identical(ld$sample_size, 20L)
  expect_identical(ld$batch_size, 4L) # passed to Python as an integer
  expect_equal(ld$sampling_rate, 0.2)
  expect_identical(unlist(ld$input_shape), c(12L, 6L))
  expect_identical(ld$label_columns, "y")
  expect_identical(ld$steps_per_epoch, 5L)
  expect_error(private_data_loader(features, pdf$y, batch_size = 4, feature_shape = c(10, 6)),
               "product of feature_shape", class = "ValueError")
  expect_error(private_data_loader(features, pdf$y, batch_size = 4.5), "batch_size")
  expect_error(private_data_loader(features, pdf$y, batch_size = 50), "batch_size", class = "ValueError")
  expect_error(private_data_loader(features, make_pdf(20)$y, batch_size = 4), "different private dataset",
               class = "ValueError")
  expect_error(private_data_loader(features, pdf$y, batch_size = 4, seed = -1), "seed", class = "ValueError")
  capture.output(report <- privacy_budget(ld))
  expect_equal(report$spent, 0)
})

test_that("private_data_loader takes the list of private_arrays() and needs no feature_shape", {
  skip_if_no_op_tensorflow()
  d <- private_arrays(array(runif(8 * 12 * 6), c(8, 12, 6)), runif(8), feature_bounds = c(0, 1),
                      label_bounds = c(0, 1))
  ld <- private_data_loader(d, batch_size = 2, seed = 1)
  expect_identical(unlist(ld$input_shape), c(12L, 6L))
  expect_identical(ld$sample_size, 8L)
  expect_identical(unlist(private_data_loader(d$x, d$y, 2, feature_shape = 72)$input_shape), 72L)
  out <- capture.output(print(ld))
  expect_lte(length(out), 20)
  expect_match(out[1], "input_shape=(12, 6)", fixed = TRUE)
})
