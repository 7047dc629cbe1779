# Python's messages reach R users in R spelling (r_phrased()), the Python messages unchanged.

# Python spellings that must not reach R users.
python_spelling <- c("op_tensorflow\\.", "PrivateKerasModel\\(", "PrivateDataLoader\\(", "PrivateDataFrame\\(",
                     "fix=True", "\\w=\\[", "\\w='", "\\w=(True|False|None)\\b", "\\(x, y\\) tuple",
                     "\\btuple\\b", "feature_df=", "\\b[a-z_]+=[^= ]")

expect_r_spelling <- function(msg) {
  for (p in python_spelling) {
    expect_false(grepl(p, msg, perl = TRUE), label = sprintf("message %s has Python spelling /%s/", deparse(msg), p))
  }
}

test_that("r_phrased rewrites the Python API and syntax into R's", {
  bn <- paste("Fix: `op_tensorflow.fix_model(model)` or `PrivateKerasModel(..., fix=True)` returns a copy",
              "(`fix_model(model, norm='layer')` uses LayerNormalization)")
  expect_identical(r_phrased(bn), paste("Fix: `fix_model(model)` or `private_keras_model(..., fix = TRUE)` returns",
                                        "a copy (`fix_model(model, norm = \"layer\")` uses LayerNormalization)"))
  expect_identical(r_phrased("compile with metrics=['accuracy'] or pass loss_bound"),
                   "compile with metrics = \"accuracy\" or pass loss_bound")
  expect_identical(r_phrased("compile with metrics=['mae'] and error_bound=..."),
                   "compile with metrics = \"mae\" and error_bound = ...")
  expect_identical(r_phrased("metrics=['mae', 'mse']"), "metrics = c(\"mae\", \"mse\")")
  expect_identical(r_phrased("validation_data must be a public (x, y) tuple of arrays, got str."),
                   "validation_data must be a list(x, y) of public data, got a character string.")
  expect_identical(r_phrased("wrap private data with PrivateDataLoader(feature_df=X, label_df=y, batch_size=...)."),
                   "wrap private data with private_data_loader(X, y, batch_size = ...).")
  expect_identical(r_phrased("use PrivateDataLoader(..., feature_shape=...) or change the model"),
                   "use private_data_loader(..., feature_shape = ...) or change the model")
  expect_identical(r_phrased("seed must be None or an integer >= 0; dropna=True, verbose=False, target_delta=None"),
                   "seed must be NULL or an integer >= 0; dropna = TRUE, verbose = FALSE, target_delta = NULL")
  expect_identical(r_phrased("the loader's input_shape (73,) does not match the model's input shape (12, 6)"),
                   "the loader's input_shape c(73) does not match the model's input shape c(12, 6)")
  expect_identical(r_phrased("mechanism='laplace' or a smaller eps"), "mechanism = \"laplace\" or a smaller eps")
  # left alone: comparisons, environment variables, prose, R spelling
  untouched <- c("eps >= 0 and a == b", "TF_USE_LEGACY_KERAS=1", "None of the columns is numeric",
                 "set options(optensorflow.keras = \"tf_keras\")", "dp_compile(model, optimizer = \"adam\")")
  for (m in untouched) expect_identical(r_phrased(m), m)
  expect_identical(r_phrased(NA_character_), NA_character_)
})

test_that("the common refusals read in R spelling: BatchNorm, missing metrics, validation_data, loader", {
  skip_if_no_op_tensorflow()
  k <- keras_module()
  net <- k$Sequential(list(
    k$Input(shape = list(12L, 6L)),
    k$layers$Conv1D(4L, 3L, activation = "relu"),
    k$layers$BatchNormalization(),
    k$layers$GlobalAveragePooling1D(),
    k$layers$Dense(1L)
  ))
  bn <- tryCatch(private_keras_model(net), ValueError = function(e) conditionMessage(e))
  expect_match(bn, "`fix_model(model)` or `private_keras_model(..., fix = TRUE)`", fixed = TRUE)
  expect_r_spelling(bn)
  expect_r_spelling(tryCatch(validate_model(net), ValueError = function(e) conditionMessage(e)))

  pdf <- make_pdf(100, epsilon = 10, delta = 1e-5)
  parts <- train_test_split(X = pdf[c("x1", "x2")], y = pdf$y, test_size = 0.3, random_state = 1)
  dp <- private_keras_model(k$Sequential(list(k$Input(shape = list(2L)), k$layers$Dense(1L, activation = "sigmoid"))))
  dp_compile(dp, optimizer = "sgd", loss = "binary_crossentropy")
  # DP evaluation without a metric to compute privately
  metrics <- tryCatch(dp_evaluate(dp, parts$X_test, parts$y_test, eps = 1), ValueError = function(e) conditionMessage(e))
  expect_type(metrics, "character")
  expect_match(metrics, "metrics = \"")
  expect_r_spelling(metrics)
  # validation data of the wrong type, passed on to Python as it is
  loader <- private_data_loader(parts$X_train, parts$y_train, batch_size = 10)
  validation <- tryCatch(dp_fit(dp, loader, epochs = 1, validation_data = reticulate::r_to_py("oops")),
                         error = function(e) conditionMessage(e))
  expect_match(validation, "list(x, y)", fixed = TRUE)
  expect_r_spelling(validation)
  # a private frame where a loader is needed
  not_loader <- tryCatch(dp_fit(dp, parts$X_train, epochs = 1), error = function(e) conditionMessage(e))
  expect_match(not_loader, "private_data_loader(", fixed = TRUE)
  expect_r_spelling(not_loader)
  expect_equal(spent(pdf), 0) # none of the refusals spent budget
})

test_that("Python warnings relayed by py_call are R-phrased too", {
  skip_if_no_op_tensorflow()
  warn <- reticulate::py_run_string(
    "def warn_python():\n    import warnings\n    warnings.warn(\"use PrivateKerasModel(..., fix=True)\")\n",
    local = TRUE, convert = FALSE)
  expect_warning(py_call(warn[["warn_python"]]), "use private_keras_model(..., fix = TRUE)", fixed = TRUE)
})
