# A small audit: a DP model and a plain Keras model on 200 rows split in members and non-members.
audit_setup <- local({
  cache <- NULL
  function() {
    if (is.null(cache)) {
      pdf <- make_pdf(200, epsilon = 50, delta = 1e-4)
      data <- pdf[c("x1", "x2", "y")]
      parts <- train_test_split(data = data, test_size = 0.5, random_state = 1)
      k <- keras_module()
      net <- function() {
        k$utils$set_random_seed(1L)
        k$Sequential(list(
          k$layers$Dense(16L, activation = "relu", input_shape = list(2L)),
          k$layers$Dense(1L, activation = "sigmoid")
        ))
      }
      model <- private_keras_model(net(), l2_norm_clip = 1, noise_multiplier = 1.1, seed = 1)
      dp_compile(model, optimizer = "adam", loss = "binary_crossentropy")
      train <- parts$data_train
      dp_fit(model, private_data_loader(train[c("x1", "x2")], train$y, batch_size = 10, seed = 1),
             epochs = 2, target_delta = 1e-4)
      plain <- net()
      plain$compile(optimizer = "adam", loss = "binary_crossentropy")
      cache <<- list(pdf = pdf, parts = parts, model = model, plain = plain)
    }
    cache
  }
})

test_that("audit_model reports attack AUC, the empirical bound and the accountant's epsilon", {
  skip_if_no_op_tensorflow()
  run <- audit_setup()
  before <- spent(run$pdf)
  expect_output(
    report <- audit_model(run$model, run$parts$data_train, run$parts$data_test, target_delta = 1e-4,
                          attack_types = c("threshold", "logistic_regression")),
    "NOT differentially private"
  )
  expect_type(report, "list")
  expect_identical(names(report), c(
    "attack_auc", "attacker_advantage", "empirical_epsilon_lower_bound", "accountant_epsilon", "target_delta",
    "n_train", "n_holdout", "empirical_epsilon_lower_bound_ci", "confidence", "consistent",
    "differentially_private", "attacks", "summary"
  ))
  expect_identical(report$n_train, 100L)
  expect_identical(report$n_holdout, 100L)
  expect_equal(report$target_delta, 1e-4)
  expect_equal(report$accountant_epsilon, run$model$privacy$epsilon, tolerance = 1e-12)
  expect_true(report$attack_auc >= 0 && report$attack_auc <= 1)
  expect_true(report$empirical_epsilon_lower_bound >= 0)
  expect_true(report$empirical_epsilon_lower_bound <= report$accountant_epsilon)
  expect_true(report$consistent)
  expect_false(report$differentially_private)
  expect_s3_class(report$attacks, "data.frame")
  expect_identical(report$attacks$attack_type, c("threshold", "logistic_regression"))
  expect_equal(report$attack_auc, max(report$attacks$auc))
  expect_match(report$summary, "accountant epsilon", fixed = TRUE)
  expect_equal(spent(run$pdf), before) # the audit charges nothing: it is not a DP release
})

test_that("audit_model on a plain Keras model has no accountant epsilon", {
  skip_if_no_op_tensorflow()
  run <- audit_setup()
  report <- audit_model(run$plain, run$parts$data_train, run$parts$data_test, target_delta = 1e-4,
                        label_column = "y", verbose = FALSE)
  expect_true(is.na(report$accountant_epsilon))
  expect_true(is.na(report$consistent))
  expect_identical(report$attacks$attack_type, "threshold")
  expect_match(report$summary, "no differential-privacy guarantee", fixed = TRUE)
})

test_that("audit_model refuses bad input with classed errors naming the argument", {
  skip_if_no_op_tensorflow()
  run <- audit_setup()
  train <- run$parts$data_train
  holdout <- run$parts$data_test
  expect_error(audit_model(run$model, train, holdout, target_delta = 0), "target_delta", class = "ValueError")
  expect_error(audit_model(run$model, train, holdout, target_delta = 1.5), "target_delta", class = "ValueError")
  expect_error(audit_model(run$model, train, holdout), "target_delta", class = "TypeError")
  expect_error(audit_model(run$model, train, holdout[c("x1", "y")], target_delta = 1e-4),
               "same dataset", class = "ValueError")
  expect_error(audit_model(run$model, train, holdout, target_delta = 1e-4, label_column = "target"),
               "label_column", class = "ValueError")
  expect_error(audit_model(run$model, train$y, holdout, target_delta = 1e-4), "train_pdf", class = "TypeError")
  expect_error(audit_model("model", train, holdout, target_delta = 1e-4), "model", class = "TypeError")
  expect_error(audit_model(run$model, train, holdout, target_delta = 1e-4, attack_types = "shadow"),
               "attack_types", class = "ValueError")
})
