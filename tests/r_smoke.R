# A short end-to-end check of the R package against a given Python, e.g. Python 3.12 through the
# `imp` shim (Makefile's test-py312):
#   RETICULATE_PYTHON=.venv-py312/bin/python Rscript tests/r_smoke.R
# Exits non-zero at the first failure. OPTENSORFLOW_KERAS=tf_keras runs it on Keras 2.

check <- function(ok, what) {
  if (!isTRUE(ok)) stop("r_smoke: ", what, call. = FALSE)
  cat("ok:", what, "\n")
}

main <- function() {
  started <- Sys.time()
  library(optensorflow)
  check(op_tensorflow_available(), "reticulate's Python imports op_tensorflow")

  stack <- optensorflow_stack()
  cat(sprintf("  %-13s %s\n", names(stack), unlist(stack)), sep = "")
  check(all(vapply(stack, function(x) is.character(x) && length(x) == 1, logical(1))),
        "optensorflow_stack() gives R strings")
  wanted <- if (tolower(Sys.getenv("OPTENSORFLOW_KERAS")) %in% c("tf_keras", "keras2")) "tf_keras" else "keras3"
  check(identical(stack$keras, wanted) || startsWith(stack$tensorflow, "2.15"),
        paste("the requested Keras is in use:", stack$keras))
  check(startsWith(stack$numpy, "1."), "numpy < 2 (reticulate 1.28 cannot exchange numpy 2 arrays)")

  # the blog's numbers (its delta 1e-5 = 1/n draws a warning about delta, expected here)
  eps <- suppressWarnings(get_privacy_budget(100000, 4, 20, 1.2, 1e-5, verbose = FALSE))
  check(abs(eps - 0.27788024) < 1e-6, sprintf("get_privacy_budget() = %.6f", eps))
  orders <- c(1 + (1:99) / 10, 12:63)
  rdp <- compute_rdp(q = 32 / 3989, noise_multiplier = 1.1, steps = 2494, orders = orders)
  check(is.numeric(rdp) && length(rdp) == length(orders) && all(is.finite(rdp)), "compute_rdp() gives R numbers")
  classic <- get_privacy_spent(orders, rdp, target_delta = 1e-6, conversion = "classic")$eps
  check(abs(classic - 2.7338) < 1e-3, sprintf("the blog's epsilon, %.4f", classic))

  set.seed(1)
  df <- data.frame(x1 = runif(200), x2 = runif(200))
  df$y <- as.numeric(df$x1 + df$x2 > 1)
  pdf <- private_data_frame(df, metadata = list(x1 = c(0, 1), x2 = c(0, 1), y = c(0, 1)),
                            epsilon = 5, delta = 1e-4)
  k <- keras_module()
  model <- private_keras_model(k$Sequential(list(
    k$Input(shape = list(2L)),
    k$layers$Dense(8L, activation = "relu"),
    k$layers$Dense(1L, activation = "sigmoid"))), noise_multiplier = 1.1, seed = 1)
  dp_compile(model, optimizer = "adam", loss = "binary_crossentropy")
  history <- dp_fit(model, private_data_loader(pdf[c("x1", "x2")], pdf$y, batch_size = 20, seed = 1),
                    epochs = 1, target_delta = 1e-4)
  expected <- get_privacy_budget(200, 20, 1, 1.1, 1e-4, verbose = FALSE)
  check(length(history$metrics$epsilon) == 1 && abs(history$metrics$epsilon - expected) < 1e-9,
        sprintf("a private model trained 1 epoch, epsilon %.4f", history$epsilon))
  pred <- dp_predict(model, as.matrix(df[1:5, c("x1", "x2")]))
  check(is.matrix(pred) && all(pred >= 0 & pred <= 1), "dp_predict() on public rows")
  cat(sprintf("r_smoke: all passed in %.0f s\n", as.numeric(difftime(Sys.time(), started, units = "secs"))))
}

tryCatch(main(), error = function(e) {
  message("r_smoke FAILED: ", conditionMessage(e))
  quit(status = 1)
})
