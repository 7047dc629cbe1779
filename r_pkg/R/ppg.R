# Wearable heart-rate data (PPG-DaLiA, subject S1) for the R blog "Differential Privacy with
# TensorFlow": a synthetic subject, the real file's loader and the blog's preprocessing.
# The work is done by Python's op_tensorflow.ppg; these functions convert to and from R.

ppg_module <- function() {
  ensure_keras_mode()
  tryCatch(reticulate::import("op_tensorflow.ppg"), error = function(e) rethrow_py_error(e))
}

ppg_features <- c("acc_x", "acc_y", "acc_z", "bvp", "eda", "temp")

#' A synthetic PPG-DaLiA subject
#'
#' Generates wrist signals and heart-rate labels in the layout of PPG-DaLiA's `S1.pkl` (Reiss et
#' al. 2019), the data set of the R blog "Differential Privacy with TensorFlow", so the blog can
#' be run without downloading the real 1.4 GB file. Signals have the real file's sampling rates
#' and units: `ACC` (32 Hz, 3 axes, 1/64 g), `BVP` (64 Hz), `EDA` (4 Hz, microsiemens) and `TEMP`
#' (4 Hz, degrees Celsius); `label` is the heart rate in bpm every 2 s.
#'
#' The subject follows PPG-DaLiA's protocol (sitting, stairs, table soccer, cycling, driving,
#' lunch, walking, working, with transitions) with jittered durations. Heart rate (60-170 bpm)
#' is a lagged response to exertion plus a slow random walk; the pulse in `BVP` beats at that
#' rate, with motion artefacts correlated with `ACC` during activity. Because the blog's features
#' are 2-s averages, which keep only the slow part of each signal, the slow parts carry
#' information as they do physiologically: wrist posture depends on the activity, the PPG
#' baseline falls as heart rate rises, EDA rises with arousal and exertion, and skin temperature
#' falls with sustained exertion. It is synthetic data: results on it say nothing about real
#' subjects.
#'
#' @param n_labels Number of 2-s labels (S1 has 4603, about 2.5 hours).
#' @param seed Seed of the generator: the same seed gives identical data.
#' @return A list like the blog's `s1`: `signal$wrist$ACC` (an `n_labels * 64` x 3 matrix),
#'   `signal$wrist$BVP` (`n_labels * 128` x 1), `signal$wrist$EDA` and `signal$wrist$TEMP`
#'   (`n_labels * 8` x 1), `label` (`n_labels` heart rates), `activity` (the protocol's activity
#'   id at 4 Hz, as in the real file) and `subject` (`"S1 (synthetic)"`).
#' @seealso [ppg_load_s1()] for the real file, [ppg_make_sequences()] for the blog's preprocessing.
#' @examplesIf op_tensorflow_available()
#' s1 <- ppg_synthetic_s1(n_labels = 100)
#' nrow(s1$signal$wrist$ACC)   # 100 * 64 samples at 32 Hz
#' range(s1$label)             # heart rate in bpm
#' @export
ppg_synthetic_s1 <- function(n_labels = 4603, seed = 0) {
  py_call(ppg_module()$synthetic_s1, n_labels = as_py_count(n_labels), seed = as_py_count(seed))
}

#' Load a real PPG-DaLiA subject file
#'
#' Reads a subject file of PPG-DaLiA (e.g. `S1.pkl` from the UCI Machine Learning Repository)
#' exactly as the R blog does: `reticulate::py_load_object(path, encoding = "latin1")`, the
#' files being Python 2 pickles. The result is the file's content unchanged, with the layout
#' [ppg_synthetic_s1()] imitates. Unpickling runs code chosen by whoever wrote the file: load
#' only files you trust. Python's `op_tensorflow.ppg.load_s1()` reads the same files.
#'
#' @param path Path of the `.pkl` file.
#' @return The subject as an R list (`signal`, `label`, ...).
#' @examples
#' \dontrun{
#' s1 <- ppg_load_s1("PPG_FieldStudy/S1/S1.pkl")
#' seqs <- ppg_make_sequences(s1)
#' }
#' @export
ppg_load_s1 <- function(path) {
  if (!is.character(path) || length(path) != 1 || !file.exists(path.expand(path))) {
    py_stop("FileNotFoundError", "path must name an existing PPG-DaLiA subject file (e.g. S1.pkl), got ",
            deparse(path), ".")
  }
  path <- path.expand(path)
  s1 <- tryCatch(reticulate::py_load_object(path, encoding = "latin1"),
                 error = function(e) rethrow_py_error(e))
  if (!is.list(s1) || is.null(s1$label) || !is.list(s1$signal) || !is.list(s1$signal$wrist)) {
    py_stop("ValueError", "path ", deparse(path), " does not hold a PPG-DaLiA subject ",
            "(a dict with 'signal' (with 'wrist') and 'label').")
  }
  s1
}

#' The R blog's preprocessing of a PPG-DaLiA subject
#'
#' Averages the wrist signals over each 2-s label window (64 `ACC`, 128 `BVP`, 8 `EDA` and 8
#' `TEMP` samples), giving 6 features per label; takes the first `train_max` observations for
#' training and the rest for testing; and cuts each part on its own into sliding sequences of
#' `num_timesteps` observations (shift 1), so no sequence spans both. A sequence's target is
#' the label of its last step, so the first `num_timesteps - 1` labels of each part are dropped:
#' with S1's 4603 labels, 3989 training and 592 test sequences, as in the blog. Signals longer
#' than the labels (the real S1 has a few seconds more) are cut to the labels' length.
#'
#' @param s1 A subject from [ppg_synthetic_s1()] or [ppg_load_s1()] (an R list), or the Python
#'   dict.
#' @param num_timesteps Sequence length.
#' @param train_max Number of 2-s observations used for training.
#' @return A list: `x_train` (an array `n_train` x `num_timesteps` x 6), `y_train` (a 1-d array
#'   of `n_train` heart rates), `x_test`, `y_test`, and `feature_names` (`acc_x`, `acc_y`,
#'   `acc_z`, `bvp`, `eda`, `temp`, also the names of the arrays' third dimension). Arrays, not
#'   plain vectors, so that they reach Keras as numpy arrays (`model$fit(seqs$x_train,
#'   seqs$y_train)`).
#' @seealso [ppg_sequences_to_frame()] to make private data of the training part.
#' @examplesIf op_tensorflow_available()
#' seqs <- ppg_make_sequences(ppg_synthetic_s1(n_labels = 200), train_max = 150)
#' dim(seqs$x_train)   # 139 x 12 x 6
#' length(seqs$y_test) # 39
#' @export
ppg_make_sequences <- function(s1, num_timesteps = 12, train_max = 4000) {
  out <- py_call(ppg_module()$make_sequences, s1, num_timesteps = as_py_count(num_timesteps),
                 train_max = as_py_count(train_max))
  names_f <- as.character(unlist(out$feature_names))
  for (part in c("x_train", "x_test")) dimnames(out[[part]]) <- list(NULL, NULL, names_f)
  # The labels stay 1-d arrays (not plain vectors), so that reticulate hands them to Keras as numpy arrays.
  for (part in c("y_train", "y_test")) out[[part]] <- array(as.numeric(out[[part]]))
  out$feature_names <- names_f
  out
}

#' Flatten sequences into a data.frame for private data
#'
#' Turns sequences `x` (`n` x `timesteps` x `features`) and their labels into a data.frame with
#' one row per sequence: `timesteps * features` columns in row-major order (`t01_acc_x`,
#' `t01_acc_y`, ..., `t12_temp`) and the label column. Wrapped with [private_data_frame()], the
#' columns go back into sequences with `private_data_loader(..., feature_shape = c(12, 6))`.
#'
#' @param x An array `n` x `timesteps` x `features`, e.g. `x_train` of [ppg_make_sequences()].
#' @param y The `n` labels.
#' @param label Name of the label column.
#' @return A data.frame with `n` rows and `timesteps * features + 1` columns.
#' @examplesIf op_tensorflow_available()
#' seqs <- ppg_make_sequences(ppg_synthetic_s1(n_labels = 200), train_max = 150)
#' df <- ppg_sequences_to_frame(seqs$x_train, seqs$y_train)
#' dim(df)          # 139 x 73
#' names(df)[1:7]
#' @export
ppg_sequences_to_frame <- function(x, y, label = "heart_rate") {
  d <- dim(x)
  if (!is.numeric(x) || length(d) != 3) {
    py_stop("ValueError", "x must be a numeric array n x timesteps x features, got ",
            if (is.null(d)) class(x)[1] else paste(d, collapse = " x "), ".")
  }
  y <- as.numeric(y)
  if (length(y) != d[1]) py_stop("ValueError", "x has ", d[1], " sequences but y has ", length(y), " labels.")
  if (!is.character(label) || length(label) != 1 || !nzchar(label)) {
    py_stop("TypeError", "label must be a column name.")
  }
  features <- dimnames(x)[[3]]
  if (is.null(features)) {
    features <- if (d[3] == length(ppg_features)) ppg_features else paste0("f", seq_len(d[3]))
  }
  steps <- formatC(seq_len(d[2]), width = max(2, nchar(d[2])), flag = "0")
  # Row-major (C) order: the feature index runs fastest, then the timestep.
  flat <- matrix(aperm(x, c(1, 3, 2)), nrow = d[1])
  colnames(flat) <- paste0("t", rep(steps, each = d[3]), "_", rep(features, times = d[2]))
  if (label %in% colnames(flat)) py_stop("ValueError", "label ", deparse(label), " clashes with a feature column.")
  out <- as.data.frame(flat)
  out[[label]] <- y
  out
}
