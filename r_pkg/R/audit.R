#' Audit a trained model's privacy with membership-inference attacks
#'
#' Mirrors Python's `op_tensorflow.audit()`. An attacker sees the model's per-example loss
#' (and, for the `"logistic_regression"` attack, its outputs) on members (`train`, the rows
#' the model was trained on) and non-members (`holdout`, rows of the same dataset it never
#' saw) and tries to tell them apart. From the attack's ROC curve the audit reports the attack
#' AUC, the attacker advantage `max |TPR - FPR|` and an empirical lower bound on epsilon,
#' `max(log((TPR - delta) / FPR), log((1 - FPR - delta) / (1 - TPR)))` over the curve's
#' points (clamped at 0), and compares it with the DP-SGD accountant's epsilon at the same
#' delta. The lower bound is a point estimate from finite samples, not a high-confidence
#' bound; `empirical_epsilon_lower_bound_ci` is TF Privacy's `epsilon_lower_bound_value` (95%, for delta = 0).
#'
#' **The audit is not differentially private.** It reads the raw private rows of both frames
#' (a tool for the data owner), charges nothing to the ledger, and its numbers depend on
#' individual rows: do not release them as DP answers.
#'
#' @param model A trained private Keras model ([private_keras_model()]), or a compiled plain
#'   Keras model for a non-private comparison.
#' @param train A private data frame of the members: the feature columns and the label column.
#' @param holdout A private data frame of non-members with the same columns, e.g. the other
#'   part of one [train_test_split()] of the same dataset.
#' @param target_delta The delta, in (0, 1), of the lower bound and the accountant's epsilon.
#' @param label_column The label column's name (or names); `NULL` means the last column. The
#'   other columns, in order, are the model's features.
#' @param attack_types `NULL` (the threshold attack), `"threshold"`, `"logistic_regression"`,
#'   or both; every number reported is the maximum over the attacks run.
#' @param seed A whole number seeding the trained attack and the confidence bound's split
#'   (`NULL`: random). Not a privacy parameter.
#' @param verbose Print the summary.
#' @return Invisibly, a named list: `attack_auc`, `attacker_advantage`,
#'   `empirical_epsilon_lower_bound`, `accountant_epsilon` (`NA` for a plain Keras model),
#'   `target_delta`, `n_train`, `n_holdout`, `empirical_epsilon_lower_bound_ci`, `confidence`,
#'   `consistent` (lower bound <= accountant epsilon; `NA` for a plain Keras model),
#'   `differentially_private` (always `FALSE`), `attacks` (a data.frame with one row per
#'   attack: `attack_type`, `auc`, `advantage`, `epsilon_lower_bound`,
#'   `epsilon_lower_bound_ci`) and `summary` (the printed text).
#' @seealso [dp_fit()], [train_test_split()]
#' @examplesIf op_tensorflow_available()
#' \donttest{
#' set.seed(1)
#' df <- data.frame(x1 = runif(200), x2 = runif(200))
#' df$y <- as.numeric(df$x1 + df$x2 > 1)
#' pdf <- private_data_frame(df, epsilon = 10, delta = 1e-4)
#' parts <- train_test_split(data = pdf, random_state = 1, test_size = 0.5)
#' k <- keras_module()
#' model <- private_keras_model(k$Sequential(list(
#'   k$layers$Dense(8L, activation = "relu", input_shape = list(2L)),
#'   k$layers$Dense(1L, activation = "sigmoid"))), noise_multiplier = 1.1)
#' dp_compile(model, optimizer = "adam", loss = "binary_crossentropy")
#' dp_fit(model, private_data_loader(parts$data_train[c("x1", "x2")], parts$data_train$y,
#'                                   batch_size = 10), epochs = 2, target_delta = 1e-4)
#' report <- audit_model(model, parts$data_train, parts$data_test, target_delta = 1e-4)
#' report$consistent
#' }
#' @export
audit_model <- function(model, train, holdout, target_delta, label_column = NULL, attack_types = NULL,
                        seed = 0, verbose = TRUE) {
  if (missing(target_delta)) py_stop("TypeError", "target_delta must be given, a number in (0, 1).")
  report <- py_call(op$audit, model, train, holdout, target_delta = target_delta,
                    label_column = as_py_list(label_column), attack_types = as_py_list(attack_types),
                    seed = as_py_count(seed), .convert = FALSE)
  values <- reticulate::py_to_r(reticulate::py_call(reticulate::py_get_attr(report, "to_dict")))
  text <- reticulate::py_to_r(reticulate::py_call(reticulate::py_get_attr(report, "summary")))
  number <- function(x) if (is.null(x)) NA_real_ else as.numeric(x)
  attacks <- values$attacks
  out <- list(
    attack_auc = number(values$attack_auc),
    attacker_advantage = number(values$attacker_advantage),
    empirical_epsilon_lower_bound = number(values$empirical_epsilon_lower_bound),
    accountant_epsilon = number(values$accountant_epsilon),
    target_delta = number(values$target_delta),
    n_train = as.integer(values$n_train),
    n_holdout = as.integer(values$n_holdout),
    empirical_epsilon_lower_bound_ci = number(values$empirical_epsilon_lower_bound_ci),
    confidence = number(values$confidence),
    consistent = if (is.null(values$consistent)) NA else isTRUE(values$consistent),
    differentially_private = FALSE,
    attacks = data.frame(
      attack_type = vapply(attacks, function(a) as.character(a$attack_type), character(1)),
      auc = vapply(attacks, function(a) number(a$auc), numeric(1)),
      advantage = vapply(attacks, function(a) number(a$advantage), numeric(1)),
      epsilon_lower_bound = vapply(attacks, function(a) number(a$epsilon_lower_bound), numeric(1)),
      epsilon_lower_bound_ci = vapply(attacks, function(a) number(a$epsilon_lower_bound_ci), numeric(1)),
      stringsAsFactors = FALSE
    ),
    summary = text
  )
  if (verbose) cat(text, "\n", sep = "")
  invisible(out)
}
