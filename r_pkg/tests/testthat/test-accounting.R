seed_eps <- 0.2778802396005823
blog_orders <- c(1 + (1:99) / 10, 12:63)

test_that("get_privacy_budget reproduces the seed's printout and matches Python", {
  skip_if_no_op_tensorflow()
  out <- capture.output(eps <- suppressWarnings(get_privacy_budget(100000, 4, 20, 1.2, 1e-5)))
  expect_equal(eps, seed_eps, tolerance = 1e-9)
  # dp-accounting 0.4.3 (TF 2.15 stack) and 0.6 (TF 2.21) agree to 1e-10
  expect_match(out[1], "EPSILON_REQUIRED = 0.2778802396", fixed = TRUE)
  expect_true("SAMPLE_SIZE = 100000" %in% out)
  expect_true("NUM_EPOCHS = 20" %in% out)
  # The same computation made by Python directly, through dp_accounting.
  dpa <- reticulate::import("dp_accounting")
  event <- dpa$SelfComposedDpEvent(
    dpa$PoissonSampledDpEvent(4 / 100000, dpa$GaussianDpEvent(1.2)), 500000L
  )
  py_eps <- dpa$rdp$RdpAccountant()$compose(event)$get_epsilon(1e-5)
  expect_identical(eps, py_eps)
  expect_silent(get_privacy_budget(100000, 4, 20, 1.2, 1e-6, verbose = FALSE))
})

test_that("compute_rdp and get_privacy_spent reproduce the blog in both conversions", {
  skip_if_no_op_tensorflow()
  rdp <- compute_rdp(q = 32 / 3989, noise_multiplier = 1.1, steps = 2494, orders = blog_orders)
  expect_type(rdp, "double")
  expect_length(rdp, length(blog_orders))
  classic <- get_privacy_spent(blog_orders, rdp, target_delta = 1e-6, conversion = "classic")
  current <- get_privacy_spent(blog_orders, rdp, target_delta = 1e-6)
  expect_equal(classic$eps, 2.7338, tolerance = 1e-4)
  expect_equal(current$eps, 2.3678, tolerance = 1e-4)
  expect_named(current, c("eps", "delta", "optimal_order"))
  # With the default orders (the blog's), the result is the same.
  expect_equal(compute_rdp(32 / 3989, 1.1, 2494), rdp)
  back <- get_privacy_spent(blog_orders, rdp, target_eps = current$eps)
  expect_equal(back$delta, 1e-6, tolerance = 1e-3)
})

test_that("compute_dp_sgd_privacy and noise_multiplier_for_epsilon return R numbers", {
  skip_if_no_op_tensorflow()
  res <- compute_dp_sgd_privacy(3989, 32, 1.1, 20, 1e-6)
  expect_equal(round(res$eps, 2), 2.37)
  pld <- compute_dp_sgd_privacy(3989, 32, 1.1, 20, 1e-6, accountant = "pld")
  expect_true(is.na(pld$optimal_order))
  expect_lt(pld$eps, res$eps)
  sigma <- noise_multiplier_for_epsilon(1, 60000, 256, 10)
  expect_type(sigma, "double")
  expect_lte(get_privacy_budget(60000, 256, 10, sigma, verbose = FALSE), 1)
  expect_gt(get_privacy_budget(60000, 256, 10, sigma - 1e-4, verbose = FALSE), 1)
})

test_that("Python argument errors arrive as R errors with the same message", {
  skip_if_no_op_tensorflow()
  expect_error(get_privacy_budget(100, 200, 1, 1.0, verbose = FALSE),
               "batch_size must be <= sample_size", class = "ValueError")
  expect_error(get_privacy_budget(100, 10, 1, -1, verbose = FALSE), "noise_multiplier must be")
  expect_error(compute_dp_sgd_privacy(100, 10, 1, 1, 2), "target_delta must be in the open interval")
  expect_error(get_privacy_budget(1000, 10, 1, 1, accountant = "gdp"), "accountant must be one of")
  expect_warning(get_privacy_budget(1000, 10, 1, 1, target_delta = 0.01, verbose = FALSE),
                 "target_delta ?= ?0.01 is >= 1/sample_size")  # R-phrased by py_call (spaces around =)
})

test_that("op_tensorflow_available", {
  expect_type(op_tensorflow_available(), "logical")
})

test_that("get_privacy_budget(group_size =) protects groups as Python computes it", {
  skip_if_no_op_tensorflow()
  one <- get_privacy_budget(3989, 32, 10, 2, 1e-6, verbose = FALSE)
  expect_identical(get_privacy_budget(3989, 32, 10, 2, 1e-6, verbose = FALSE, group_size = 1), one)
  out <- capture.output(eps12 <- get_privacy_budget(3989, 32, 10, 2, 1e-6, group_size = 12))
  py <- reticulate::import("op_tensorflow")$accounting$training_epsilon_and_delta(3989L, 32L, 10L, 2, 1e-6,
                                                                                   group_size = 12L)
  expect_equal(eps12, py[[1]], tolerance = 1e-12)
  expect_gt(eps12, 6 * one)
  if (!is.null(py[[2]])) { # the lemma was the tighter: 12 * the per-example epsilon at the solved delta'
    per_example <- reticulate::import("op_tensorflow")$accounting$training_epsilon(3989L, 32L, 10L, 2, py[[2]])
    expect_equal(eps12, 12 * per_example, tolerance = 1e-10)
  }
  expect_true(any(grepl("GROUP_SIZE = 12: protects any 12 examples together", out, fixed = TRUE)))
  eps <- vapply(1:4, function(k) get_privacy_budget(3989, 32, 10, 2, 1e-6, verbose = FALSE, group_size = k), 1)
  expect_true(all(diff(eps) > 0))
  expect_error(get_privacy_budget(3989, 32, 10, 2, 1e-6, group_size = 0), "group_size", class = "ValueError")
  expect_error(get_privacy_budget(3989, 32, 10, 2, 1e-6, group_size = 2.5), "group_size", class = "ValueError")
  expect_error(get_privacy_budget(3989, 32, 10, 2, 1e-6, group_size = "3"), "group_size", class = "TypeError")
  if (!reticulate::import("op_tensorflow.group_privacy")$MIXTURE_AVAILABLE) { # dp-accounting < 0.5: lemma only
    expect_error(get_privacy_budget(3989, 32, 10, 1.1, 1e-6, group_size = 12, verbose = FALSE),
                 "no per-example delta", class = "ValueError")
  }
})
