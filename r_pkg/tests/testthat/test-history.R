# The training history: a keras_training_history-like list with our own methods first.
fake_history <- function(epochs = 3, planned = epochs) {
  structure(
    list(params = list(epochs = planned, steps = 10L, verbose = 0L, target_delta = 1e-6, ledger_delta = 1e-6,
                       samples = 200L, batch_size = 20L, l2_norm_clip = 1, noise_multiplier = 1.1),
         metrics = list(epsilon = seq(1, 2, length.out = epochs), val_loss = rev(seq_len(epochs)) / 10,
                        val_mae = rev(seq_len(epochs)) / 20)),
    class = c("optensorflow_training_history", "keras_training_history")
  )
}

test_that("the history is a keras_training_history whose methods are optensorflow's", {
  h <- fake_history()
  expect_s3_class(h, "keras_training_history")
  expect_identical(class(h)[1], "optensorflow_training_history")
  expect_identical(names(h), c("params", "metrics"))
  # shortcuts for the metrics and the epochs run
  expect_identical(h$epsilon, h$metrics$epsilon)
  expect_identical(h$val_loss, c(0.3, 0.2, 0.1))
  expect_identical(h$epoch, 1:3)
  expect_null(h$val_accuracy)
  expect_null(h$eps) # no partial matching
  out <- capture.output(print(h))
  expect_match(out[1], "3 epochs on 200 private rows", fixed = TRUE)
  expect_match(out[2], "epsilon at delta = 1e-06 (the ledger's delta)", fixed = TRUE)
  expect_true(any(grepl("^ *epsilon: 2$", out)))
  expect_true(any(grepl("val_mae: 0.05", out, fixed = TRUE)))
  h2 <- fake_history(2, planned = 5)
  h2$params$target_delta <- 1e-5
  out2 <- capture.output(print(h2))
  expect_match(out2[1], "2 of 5 planned epochs", fixed = TRUE)
  expect_match(out2[2], "the ledger charges at delta = 1e-06", fixed = TRUE)
})

test_that("as.data.frame gives keras's long format, or one row per epoch", {
  h <- fake_history()
  df <- as.data.frame(h)
  expect_identical(names(df), c("epoch", "value", "metric", "data"))
  expect_identical(nrow(df), 9L)
  expect_identical(levels(df$data), c("training", "validation"))
  expect_identical(levels(df$metric), c("loss", "mae", "epsilon"))
  expect_identical(as.character(df$data[df$metric == "loss"]), rep("validation", 3))
  expect_equal(df$value[df$metric == "epsilon"], h$metrics$epsilon)
  wide <- as.data.frame(h, format = "wide")
  expect_identical(names(wide), c("epoch", "epsilon", "val_loss", "val_mae"))
  expect_identical(wide$epoch, 1:3)
})

test_that("plot draws epsilon and the validation metrics with ggplot2 and with base graphics", {
  h <- fake_history(12)
  file <- tempfile(fileext = ".pdf")
  grDevices::pdf(file)
  on.exit({
    grDevices::dev.off()
    unlink(file)
  })
  skip_if_not_installed("ggplot2")
  p <- plot(h)
  expect_s3_class(p, "ggplot")
  print(p)
  built <- ggplot2::ggplot_build(p)
  expect_identical(levels(p$data$metric), c("loss", "mae", "epsilon (delta = 1e-06)"))
  expect_setequal(as.character(unique(p$data$data)), c("validation", "privacy (epsilon spent)"))
  expect_length(unique(built$data[[1]]$PANEL), 3)
  expect_identical(levels(plot(h, metrics = c("epsilon", "mae"))$data$metric),
                   c("mae", "epsilon (delta = 1e-06)"))
  expect_error(plot(h, metrics = "accuracy"), "not in the history", class = "ValueError")
  # base graphics: by argument, or forced by the option
  expect_null(plot(h, method = "base"))
  withr_opt <- options(optensorflow.plot.method = "base")
  on.exit(options(withr_opt), add = TRUE, after = FALSE)
  expect_invisible(plot(h))
  expect_null(plot(h))
})

test_that("plot works on histories of one epoch and without validation data", {
  h <- fake_history(1)
  h$metrics <- h$metrics["epsilon"]
  file <- tempfile(fileext = ".pdf")
  grDevices::pdf(file)
  on.exit({
    grDevices::dev.off()
    unlink(file)
  })
  expect_null(plot(h, method = "base"))
  skip_if_not_installed("ggplot2")
  p <- plot(h)
  print(p)
  expect_identical(levels(p$data$metric), "epsilon (delta = 1e-06)")
})
