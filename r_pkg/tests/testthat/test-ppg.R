test_that("ppg_synthetic_s1 has the S1.pkl layout, rates and ranges", {
  skip_if_no_op_tensorflow()
  n <- 200
  s1 <- ppg_synthetic_s1(n_labels = n, seed = 1)
  expect_named(s1, c("signal", "label", "activity", "subject"), ignore.order = TRUE)
  wrist <- s1$signal$wrist
  expect_named(wrist, c("ACC", "BVP", "EDA", "TEMP"), ignore.order = TRUE)
  expect_equal(dim(wrist$ACC), c(n * 64, 3))   # 32 Hz
  expect_equal(dim(wrist$BVP), c(n * 128, 1))  # 64 Hz
  expect_equal(dim(wrist$EDA), c(n * 8, 1))    # 4 Hz
  expect_equal(dim(wrist$TEMP), c(n * 8, 1))   # 4 Hz
  expect_equal(nrow(s1$label), n)              # as the blog counts them: one label every 2 s
  expect_true(all(s1$label >= 60 & s1$label <= 170))
  expect_identical(s1$subject, "S1 (synthetic)")
  expect_identical(ppg_synthetic_s1(n_labels = n, seed = 1), s1)
  expect_false(isTRUE(all.equal(ppg_synthetic_s1(n_labels = n, seed = 2)$label, s1$label)))
  expect_error(ppg_synthetic_s1(n_labels = 0), class = "ValueError")
})

test_that("ppg_make_sequences is the blog's preprocessing", {
  skip_if_no_op_tensorflow()
  s1 <- ppg_synthetic_s1()
  seqs <- ppg_make_sequences(s1)
  expect_equal(dim(seqs$x_train), c(3989, 12, 6))
  expect_equal(dim(seqs$x_test), c(592, 12, 6))
  expect_length(seqs$y_train, 3989)
  expect_length(seqs$y_test, 592)
  expect_identical(seqs$feature_names, c("acc_x", "acc_y", "acc_z", "bvp", "eda", "temp"))
  expect_identical(dimnames(seqs$x_train)[[3]], seqs$feature_names)
  # The target is the label of the last of 12 timesteps: labels 12..4000 and 4012..4603.
  expect_equal(dim(seqs$y_train), 3989)  # 1-d arrays: numpy arrays for Keras
  expect_equal(as.numeric(seqs$y_train), as.numeric(s1$label[12:4000]), tolerance = 1e-6)
  expect_equal(as.numeric(seqs$y_test), as.numeric(s1$label[4012:4603]), tolerance = 1e-6)
  # Window averages: the 12th step of the first sequence is the 12th 2-s window.
  acc <- s1$signal$wrist$ACC
  expect_equal(seqs$x_train[1, 12, 1:3], colMeans(acc[(11 * 64 + 1):(12 * 64), ]), tolerance = 1e-5,
               ignore_attr = TRUE)
  expect_equal(seqs$x_train[1, 12, "bvp"], mean(s1$signal$wrist$BVP[(11 * 128 + 1):(12 * 128), 1]),
               tolerance = 1e-4, ignore_attr = TRUE)
  expect_equal(seqs$x_train[1, 12, "temp"], mean(s1$signal$wrist$TEMP[89:96, 1]), tolerance = 1e-5,
               ignore_attr = TRUE)
  # Sequences slide by one; the test part starts at observation 4001 (no overlap).
  expect_equal(seqs$x_train[2, 1:11, ], seqs$x_train[1, 2:12, ])
  expect_equal(seqs$x_test[1, 1, 1:3], colMeans(acc[(4000 * 64 + 1):(4001 * 64), ]), tolerance = 1e-5,
               ignore_attr = TRUE)
  # The Python dict gives the same as the R list.
  py_s1 <- reticulate::import("op_tensorflow.ppg")$synthetic_s1()
  expect_equal(ppg_make_sequences(py_s1)$x_test, seqs$x_test)
  expect_error(ppg_make_sequences(s1, train_max = 4600), "train_max", class = "ValueError")
  expect_error(ppg_make_sequences(list(label = 1)), class = "ValueError")
})

test_that("ppg_load_s1 reads a pickled subject like py_load_object(encoding = 'latin1')", {
  skip_if_no_op_tensorflow()
  path <- tempfile(fileext = ".pkl")
  on.exit(unlink(path))
  ppg <- reticulate::import("op_tensorflow.ppg", convert = FALSE)
  reticulate::py_save_object(ppg$synthetic_s1(n_labels = 100L, seed = 3L), path)
  s1 <- ppg_load_s1(path)
  expect_identical(s1, reticulate::py_load_object(path, encoding = "latin1"))
  expect_identical(s1$label, ppg_synthetic_s1(n_labels = 100, seed = 3)$label)
  expect_equal(dim(s1$signal$wrist$BVP), c(100 * 128, 1))
  # Python's load_s1 reads the same file.
  expect_equal(reticulate::py_to_r(ppg$load_s1(path))$signal$wrist$ACC, s1$signal$wrist$ACC)
  expect_error(ppg_load_s1(file.path(tempdir(), "no-such-S1.pkl")), class = "FileNotFoundError")
  other <- tempfile(fileext = ".pkl")
  on.exit(unlink(other), add = TRUE)
  reticulate::py_save_object(list(a = 1), other)
  expect_error(ppg_load_s1(other), "PPG-DaLiA", class = "ValueError")
})

test_that("ppg_sequences_to_frame flattens row-major, and the loader restores the sequences", {
  skip_if_no_op_tensorflow()
  seqs <- ppg_make_sequences(ppg_synthetic_s1(n_labels = 300), train_max = 200)
  df <- ppg_sequences_to_frame(seqs$x_train, seqs$y_train)
  expect_s3_class(df, "data.frame")
  expect_equal(dim(df), c(189, 73))
  expect_identical(names(df)[1:7], c("t01_acc_x", "t01_acc_y", "t01_acc_z", "t01_bvp", "t01_eda",
                                     "t01_temp", "t02_acc_x"))
  expect_identical(names(df)[72:73], c("t12_temp", "heart_rate"))
  expect_equal(df$t03_bvp, unname(seqs$x_train[, 3, "bvp"]))
  expect_equal(df$heart_rate, as.numeric(seqs$y_train))
  # The same columns as Python's sequences_to_frame.
  ppg <- reticulate::import("op_tensorflow.ppg", convert = FALSE)
  py_frame <- ppg$sequences_to_frame(seqs$x_train, seqs$y_train)
  expect_identical(names(df), reticulate::py_to_r(py_frame$columns$tolist()))
  # Private data: the loader's feature_shape = c(12, 6) gives back the sequences.
  pdf <- private_data_frame(df)
  loader <- private_data_loader(pdf[names(df)[1:72]], pdf$heart_rate, batch_size = 16,
                                feature_shape = c(12, 6))
  restored <- reticulate::py_to_r(reticulate::py_get_attr(loader, "_x"))
  expect_equal(restored, unname(seqs$x_train), tolerance = 1e-6, ignore_attr = TRUE)
  # Checks.
  expect_error(ppg_sequences_to_frame(matrix(1:4, 2), 1:2), class = "ValueError")
  expect_error(ppg_sequences_to_frame(seqs$x_train, seqs$y_train[-1]), "labels", class = "ValueError")
  three <- ppg_sequences_to_frame(array(1, c(2, 3, 4)), c(1, 2), label = "y")
  expect_identical(names(three)[1:5], c("t01_f1", "t01_f2", "t01_f3", "t01_f4", "t02_f1"))
})

test_that("a DP fit on the synthetic sequences runs from R and charges the estimate", {
  skip_if_no_op_tensorflow()
  seqs <- ppg_make_sequences(ppg_synthetic_s1(n_labels = 700, seed = 5), train_max = 560)
  df <- ppg_sequences_to_frame(seqs$x_train, seqs$y_train)
  pdf <- private_data_frame(df, epsilon = 20, delta = 1e-5)
  loader <- private_data_loader(pdf[names(df)[1:72]], pdf$heart_rate, batch_size = 32, seed = 1,
                                feature_shape = c(12, 6))
  k <- keras_module()
  model <- k$Sequential(list(
    k$Input(shape = list(12L, 6L)),
    k$layers$Conv1D(8L, 3L, activation = "relu"),
    k$layers$BatchNormalization(),
    k$layers$GlobalAveragePooling1D(),
    k$layers$Dense(1L)
  ))
  expect_error(private_keras_model(model), "BatchNormalization", class = "ValueError")
  dp <- private_keras_model(model, l2_norm_clip = 1, noise_multiplier = 1.1, fix = TRUE, seed = 1)
  dp_compile(dp, optimizer = k$optimizers$Adam(learning_rate = 0.01), loss = "mse",
             metrics = "mean_absolute_error")
  hist <- dp_fit(dp, loader, epochs = 2, target_delta = 1e-5,
                 validation_data = list(seqs$x_test, seqs$y_test))
  expect_identical(hist$epoch, 1:2)
  expect_true(all(c("epsilon", "val_mean_absolute_error") %in% names(hist$metrics)))
  estimate <- get_privacy_budget(nrow(df), 32, 2, 1.1, 1e-5, verbose = FALSE)
  expect_equal(hist$metrics$epsilon[2], estimate, tolerance = 1e-9)
  expect_silent(spent <- privacy_budget(pdf))
  expect_equal(spent$spent, estimate, tolerance = 1e-9)
})

test_that("r_pkg/vignettes holds current copies of the repository's vignettes", {
  # Only in the source tree (make test-r runs from the repository): vignettes/ is the only
  # committed copy; the Makefile's r-package and check-r targets copy it to r_pkg/vignettes/.
  top <- file.path("..", "..", "..", "vignettes")
  pkg <- file.path("..", "..", "vignettes")
  skip_if_not(dir.exists(top) && dir.exists(pkg), "not run from the repository's source tree")
  for (v in c("getting-started.Rmd", "dp-heart-rate.Rmd")) {
    expect_identical(readLines(file.path(pkg, v)), readLines(file.path(top, v)),
                     label = paste0("r_pkg/vignettes/", v, " (make r-package copies it from vignettes/)"))
  }
})
