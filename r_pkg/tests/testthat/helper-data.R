# Small synthetic data shared by the tests: two features in [0, 1], a 0/1 label, a category.
make_df <- function(n = 300, seed = 1) {
  set.seed(seed)
  df <- data.frame(x1 = runif(n), x2 = runif(n), g = sample(c("a", "b"), n, replace = TRUE))
  df$y <- as.numeric(df$x1 + df$x2 > 1)
  df
}

make_pdf <- function(n = 300, epsilon = 10, delta = 1e-5, ...) {
  private_data_frame(make_df(n), metadata = list(x1 = c(0, 1), x2 = c(0, 1), y = c(0, 1), g = c("a", "b")),
                     epsilon = epsilon, delta = delta, ...)
}

# The epsilon spent on x's ledger.
spent <- function(x) privacy_budget(x)$spent
