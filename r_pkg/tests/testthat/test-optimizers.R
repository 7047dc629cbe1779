# TF Privacy's optimizers are Keras 2 optimizers: trained with on Keras 2 (tf_keras or TF 2.15),
# refused with an R-spelled error on Keras 3.
keras2 <- function() optensorflow_stack()$keras == "tf_keras"

fit_plain_keras <- function(optimizer) {
  k <- keras_module()
  set.seed(5)
  x <- matrix(runif(64 * 3), ncol = 3)
  y <- x %*% c(1, -1, 0.5)
  net <- k$Sequential(list(k$Input(shape = list(3L)), k$layers$Dense(1L)))
  # the blog's per-example loss
  loss <- k$losses$MeanSquaredError(reduction = k$losses$Reduction$NONE)
  net$compile(optimizer = optimizer, loss = loss)
  h <- net$fit(reticulate::np_array(x, dtype = "float32"), reticulate::np_array(y, dtype = "float32"),
               batch_size = 16L, epochs = 2L, verbose = 0L)
  as.numeric(unlist(h$history$loss))
}

test_that("on Keras 3 the DP optimizers are refused, pointing to private_keras_model() and the tf_keras mode", {
  skip_if_no_op_tensorflow()
  if (keras2()) {
    expect_true(any(grepl("^tensorflow_privacy\\.", class(dp_adam_gaussian_optimizer(1, 1.1)))))
    return(invisible())
  }
  for (make in list(function() dp_adam_gaussian_optimizer(l2_norm_clip = 1, noise_multiplier = 1.1),
                    function() dp_gradient_descent_gaussian_optimizer(1, 1.1, num_microbatches = 4))) {
    err <- expect_error(make(), class = "RuntimeError")
    msg <- conditionMessage(err)
    expect_match(msg, "needs Keras 2, but optensorflow runs on Keras 3", fixed = TRUE)
    expect_match(msg, "private_keras_model(", fixed = TRUE)
    expect_match(msg, "options(optensorflow.keras = \"tf_keras\")", fixed = TRUE)
    expect_false(grepl("TF_USE_LEGACY_KERAS|PrivateKerasModel", msg)) # R's spelling, not Python's
  }
  err <- expect_error(dp_adam_gaussian_optimizer(1, 1.1), class = "RuntimeError")
  expect_identical(deparse(conditionCall(err)), "dp_adam_gaussian_optimizer(1, 1.1)")
})

test_that("dp_adam_gaussian_optimizer trains a plain Keras model with a per-example loss (Keras 2)", {
  skip_if_no_op_tensorflow()
  if (!keras2()) {
    expect_error(dp_adam_gaussian_optimizer(1, 1.1, num_microbatches = 16), class = "RuntimeError")
    return(invisible())
  }
  opt <- dp_adam_gaussian_optimizer(l2_norm_clip = 1, noise_multiplier = 1.1, num_microbatches = 16,
                                    learning_rate = 0.01)
  expect_true(any(grepl("^tensorflow_privacy\\.", class(opt))))
  config <- opt$get_config()
  expect_identical(config$num_microbatches, 16L) # a whole double arrives as an int
  expect_equal(config$global_state$l2_norm_clip, 1)
  expect_equal(config$global_state$stddev, 1.1, tolerance = 1e-6) # l2_norm_clip * noise_multiplier (float32)
  expect_equal(config$learning_rate, 0.01)
  losses <- fit_plain_keras(opt)
  expect_length(losses, 2)
  expect_true(all(is.finite(losses)))
})

test_that("dp_gradient_descent_gaussian_optimizer trains a plain Keras model (Keras 2)", {
  skip_if_no_op_tensorflow()
  if (!keras2()) {
    expect_error(dp_gradient_descent_gaussian_optimizer(1, 1.1), class = "RuntimeError")
    return(invisible())
  }
  opt <- dp_gradient_descent_gaussian_optimizer(l2_norm_clip = 1, noise_multiplier = 1.1)
  expect_true(any(grepl("^tensorflow_privacy\\.", class(opt))))
  config <- opt$get_config()
  expect_null(config$num_microbatches) # one microbatch per example
  expect_equal(config$learning_rate, 0.01)
  losses <- fit_plain_keras(opt)
  expect_true(all(is.finite(losses)))
})

test_that("DP optimizer arguments are checked by Python, with classed errors (Keras 2)", {
  skip_if_no_op_tensorflow()
  k <- keras_module()
  model <- private_keras_model(k$Sequential(list(k$Input(shape = list(3L)), k$layers$Dense(1L))))
  expect_error(dp_compile(model), "loss must be given", class = "ValueError")
  if (!keras2()) {
    # the mode check comes first: no argument reaches TF Privacy on Keras 3
    expect_error(dp_adam_gaussian_optimizer(l2_norm_clip = -1, noise_multiplier = 1.1), "needs Keras 2",
                 class = "RuntimeError")
    return(invisible())
  }
  expect_error(dp_adam_gaussian_optimizer(l2_norm_clip = -1, noise_multiplier = 1.1),
               "l2_norm_clip must be a finite number > 0", class = "ValueError")
  expect_error(dp_gradient_descent_gaussian_optimizer(1, 1.1, num_microbatches = 2.5),
               "num_microbatches must be an integer >= 1", class = "ValueError")
  # a DP optimizer is refused by a private model, which adds the noise itself
  expect_error(dp_compile(model, optimizer = dp_adam_gaussian_optimizer(1, 1.1), loss = "mse"),
               "already adds DP noise", class = "ValueError")
})
