#' Estimate the epsilon a DP-SGD training run will spend
#'
#' Mirrors Python's `op_tensorflow.get_privacy_budget()`: Poisson sampling with rate
#' `batch_size / sample_size` for `ceiling(num_epochs * sample_size / batch_size)` steps.
#'
#' @param sample_size Number of training rows.
#' @param batch_size Expected batch size.
#' @param num_epochs Number of epochs.
#' @param noise_multiplier Noise standard deviation divided by the clipping norm.
#' @param target_delta Delta of the (epsilon, delta) guarantee.
#' @param accountant `"rdp"` or `"pld"`.
#' @param verbose Print the estimate and its parameters.
#' @param group_size Protect any `group_size` examples together (default 1: one example), e.g.
#'   the window length when each observation appears in up to that many sliding-window
#'   examples. The smaller of two valid conversions: the Poisson-sampled binomial mixture of
#'   Gaussians (each step adds the clipped gradients of a Binomial(k, q) number of the group's
#'   examples; dp_accounting's `MixtureOfGaussiansDpEvent` with its PLD accountant, dp-accounting
#'   >= 0.5; Schuchardt et al., NeurIPS 2024), and the group-privacy lemma for (epsilon, delta)-DP
#'   (Dwork & Roth 2014, Sec. 2.3): per-example (eps, delta') gives (k eps, k exp((k - 1) eps)
#'   delta') for groups of k, with delta' solved so that the group delta is `target_delta`. With
#'   dp-accounting < 0.5 only the lemma is available; when no delta' reaches `target_delta` a
#'   `ValueError` says so.
#' @return Epsilon, a number (for groups of `group_size` examples).
#' @examplesIf op_tensorflow_available()
#' get_privacy_budget(100000, 4, 20, 1.2, 1e-5)
#' get_privacy_budget(100000, 4, 20, 1.2, 1e-5, accountant = "pld", verbose = FALSE)
#' # 12-step sliding windows: one observation is in up to 12 training examples
#' get_privacy_budget(3989, 32, 10, 2, 1e-6, group_size = 12)
#' @export
get_privacy_budget <- function(sample_size, batch_size, num_epochs, noise_multiplier,
                               target_delta = 1e-5, accountant = "rdp", verbose = TRUE,
                               group_size = 1) {
  res <- py_call(op$accounting$training_epsilon_and_delta,
    as_py_count(sample_size), as_py_count(batch_size), num_epochs, noise_multiplier,
    target_delta, accountant = accountant, group_size = as_py_count(group_size)
  )
  eps <- res[[1]]
  if (verbose) {
    cat(op$accounting$budget_statement(eps, sample_size, batch_size, num_epochs,
                                       noise_multiplier, target_delta, group_size, res[[2]]), "\n", sep = "")
  }
  invisible(eps)
}

#' RDP of Poisson-subsampled Gaussian steps (TF Privacy's compute_rdp)
#'
#' @param q Sampling probability.
#' @param noise_multiplier Noise multiplier.
#' @param steps Number of steps.
#' @param orders RDP orders; default the blog's `c(1 + (1:99) / 10, 12:63)`.
#' @return A numeric vector, one RDP value per order.
#' @export
compute_rdp <- function(q, noise_multiplier, steps, orders = NULL) {
  as.numeric(py_call(op$compute_rdp, q, noise_multiplier, as_py_count(steps),
                     if (is.null(orders)) NULL else as.numeric(orders)))
}

#' Convert RDP to (epsilon, delta) (TF Privacy's get_privacy_spent)
#'
#' @param orders RDP orders.
#' @param rdp RDP values, as returned by [compute_rdp()].
#' @param target_eps,target_delta Give exactly one.
#' @param conversion `"current"` or `"classic"` (the older bound behind the blog's 2.73).
#' @return A named list: `eps`, `delta`, `optimal_order`.
#' @examplesIf op_tensorflow_available()
#' orders <- c(1 + (1:99) / 10, 12:63)
#' rdp <- compute_rdp(q = 32 / 3989, noise_multiplier = 1.1, steps = 2494, orders = orders)
#' get_privacy_spent(orders, rdp, target_delta = 1e-6)$eps
#' get_privacy_spent(orders, rdp, target_delta = 1e-6, conversion = "classic")$eps  # the blog's 2.73
#' @export
get_privacy_spent <- function(orders, rdp, target_eps = NULL, target_delta = NULL,
                              conversion = "current") {
  res <- py_call(op$get_privacy_spent, as.numeric(orders), as.numeric(rdp),
                 target_eps = target_eps, target_delta = target_delta, conversion = conversion)
  list(eps = res[[1]], delta = res[[2]], optimal_order = res[[3]])
}

#' Epsilon of DP-SGD (TF Privacy's compute_dp_sgd_privacy)
#'
#' @param n Number of training examples.
#' @param batch_size Expected batch size.
#' @param noise_multiplier Noise multiplier.
#' @param epochs Number of epochs.
#' @param delta Target delta.
#' @param accountant `"rdp"` or `"pld"`.
#' @param conversion `"current"` or `"classic"` (RDP only).
#' @return A named list: `eps`, `optimal_order` (NA for PLD).
#' @examplesIf op_tensorflow_available()
#' compute_dp_sgd_privacy(n = 3989, batch_size = 32, noise_multiplier = 1.1, epochs = 20, delta = 1e-6)
#' @export
compute_dp_sgd_privacy <- function(n, batch_size, noise_multiplier, epochs, delta = 1e-6,
                                   accountant = "rdp", conversion = "current") {
  res <- py_call(op$compute_dp_sgd_privacy, as_py_count(n), as_py_count(batch_size),
                 noise_multiplier, epochs, delta, accountant = accountant, conversion = conversion)
  list(eps = res[[1]], optimal_order = if (is.null(res[[2]])) NA_real_ else res[[2]])
}

#' Smallest noise multiplier reaching a target epsilon
#'
#' @inheritParams get_privacy_budget
#' @param target_epsilon The epsilon not to exceed.
#' @return The noise multiplier (to 1e-4), a number.
#' @export
noise_multiplier_for_epsilon <- function(target_epsilon, sample_size, batch_size, num_epochs,
                                         target_delta = 1e-5, accountant = "rdp") {
  py_call(op$noise_multiplier_for_epsilon, target_epsilon, as_py_count(sample_size),
          as_py_count(batch_size), num_epochs, target_delta, accountant = accountant)
}
