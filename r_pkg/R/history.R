# The training history of fit()/dp_fit(): a list like R keras's `keras_training_history`
# (`params` and `metrics`), classed c("optensorflow_training_history", "keras_training_history")
# so that this package's methods come first whether or not keras or keras3 is attached, and
# code written for keras histories (`history$metrics$val_loss`, `history$params$epochs`) works.

#' Training history of a private model
#'
#' [fit()] and [dp_fit()] return the history of a DP-SGD run as R keras does: a list of class
#' `c("optensorflow_training_history", "keras_training_history")` with
#' * `params`: `epochs` (planned), `steps` (in the first epoch), `verbose`, `target_delta` (the delta
#'   at which `epsilon` is reported), `ledger_delta` (the delta of the data's ledger), `samples`
#'   and `batch_size` (the loader's row count and expected batch size), `l2_norm_clip`,
#'   `noise_multiplier`;
#' * `metrics`: a named list of numeric vectors with one value per epoch run: `epsilon` (the
#'   epsilon spent by this run after the epoch, at `params$target_delta`) and, with public
#'   `validation_data`, Keras' `val_*` metrics. Training metrics are not reported: they would be
#'   computed from private rows without noise.
#'
#' `plot()` draws one panel per metric and one for epsilon, per epoch, with ggplot2 when it is
#' installed (returning the ggplot object) and base graphics otherwise (or with `method =
#' "base"`, or `options(optensorflow.plot.method = "base")`). `as.data.frame()` gives keras's
#' long format (`epoch`, `value`, `metric`, `data`), or one row per epoch with `format = "wide"`.
#' `history$epsilon` and `history$val_loss` are shortcuts for `history$metrics$epsilon` etc., and
#' `history$epoch` gives the epochs run.
#'
#' @param x A training history from [fit()] or [dp_fit()].
#' @param y Unused.
#' @param metrics The metrics to plot (names without `val_`, plus `"epsilon"`); all by default.
#' @param method `"auto"` (ggplot2 if installed), `"ggplot2"` or `"base"`.
#' @param smooth Add a loess smooth (ggplot2, at least 10 epochs), as keras does.
#' @param theme_bw Use `ggplot2::theme_bw()`.
#' @param row.names,optional Unused (for the generic).
#' @param format `"long"` (as keras: one row per epoch and metric) or `"wide"` (one row per epoch).
#' @param name A list element (`params`, `metrics`), a metric or `epoch`.
#' @param ... Passed on to [graphics::plot()] for base graphics.
#' @return `plot()`: a ggplot object (ggplot2), or `NULL` invisibly (base graphics).
#'   `as.data.frame()`: a data.frame. `print()`: `x`, invisibly.
#' @name training_history
#' @aliases optensorflow_training_history
#' @seealso [fit()], [dp_fit()]
NULL

# Builds the history from the Python History object's `params` and `history` and the run's
# R-side parameters (used where Python does not report them).
new_training_history <- function(py_history, params = list()) {
  logs <- reticulate::py_to_r(reticulate::py_get_attr(py_history, "history"))
  metrics <- lapply(logs, function(v) as.numeric(unlist(v)))
  py_params <- tryCatch(reticulate::py_to_r(reticulate::py_get_attr(py_history, "params")), error = function(e) NULL)
  if (!is.list(py_params)) py_params <- list()
  py_params <- lapply(py_params, function(v) if (is.numeric(v) && length(v) == 1) as.vector(v) else v)
  for (name in names(params)) if (is.null(py_params[[name]])) py_params[[name]] <- params[[name]]
  # epsilon first, then Keras's metrics
  metrics <- metrics[c(intersect("epsilon", names(metrics)), setdiff(names(metrics), "epsilon"))]
  rows <- if (length(metrics)) max(lengths(metrics)) else 0L
  metrics <- lapply(metrics, function(v) c(v, rep(NA_real_, rows - length(v))))
  structure(list(params = py_params, metrics = metrics),
            class = c("optensorflow_training_history", "keras_training_history"))
}

# The epochs run (the planned ones when training stopped early are not listed).
history_epochs <- function(x) {
  m <- .subset2(x, "metrics")
  if (length(m)) seq_len(max(lengths(m))) else integer()
}

#' @rdname training_history
#' @export
`$.optensorflow_training_history` <- function(x, name) {
  if (name %in% c("params", "metrics")) return(.subset2(x, name))
  if (identical(name, "epoch")) return(history_epochs(x))
  .subset2(x, "metrics")[[name, exact = TRUE]]
}

#' @rdname training_history
#' @export
print.optensorflow_training_history <- function(x, ...) {
  p <- x$params
  epochs <- length(history_epochs(x))
  planned <- p$epochs
  head <- paste0("DP-SGD training history: ", epochs, if (!is.null(planned) && planned != epochs)
    paste0(" of ", planned, " planned") else "", " epoch", if (epochs != 1) "s" else "")
  if (!is.null(p$samples)) {
    head <- paste0(head, " on ", format(p$samples, big.mark = ","), " private rows (batch_size ~",
                   format(p$batch_size), ", l2_norm_clip = ", format(p$l2_norm_clip), ", noise_multiplier = ",
                   format(p$noise_multiplier), ")")
  }
  cat(head, "\n", sep = "")
  if (!is.null(p$target_delta)) {
    cat("epsilon at delta = ", format(p$target_delta), if (!is.null(p$ledger_delta)) {
      if (isTRUE(all.equal(p$ledger_delta, p$target_delta))) " (the ledger's delta)" else
        paste0(" (the ledger charges at delta = ", format(p$ledger_delta), ")")
    }, "\n", sep = "")
  }
  if (epochs > 0) {
    last <- vapply(x$metrics, function(v) v[[epochs]], numeric(1))
    labels <- formatC(names(last), width = max(nchar(names(last))))
    cat("Final epoch (plot to see history):\n")
    cat(paste0(labels, ": ", prettyNum(last, big.mark = ",", digits = 4, scientific = FALSE)), sep = "\n")
  }
  invisible(x)
}

#' @rdname training_history
#' @export
as.data.frame.optensorflow_training_history <- function(x, row.names = NULL, optional = FALSE, ...,
                                                         format = c("long", "wide")) {
  format <- match.arg(format)
  metrics <- x$metrics
  epochs <- history_epochs(x)
  if (format == "wide") {
    return(data.frame(epoch = epochs, metrics, check.names = FALSE))
  }
  n <- length(epochs)
  base <- sub("^val_", "", names(metrics))
  df <- data.frame(
    epoch = rep(epochs, length(metrics)),
    value = as.numeric(unlist(metrics, use.names = FALSE)),
    metric = rep(base, each = n),
    data = rep(grepl("^val_", names(metrics)), each = n)
  )
  df$data <- factor(df$data, c(FALSE, TRUE), c("training", "validation"))
  df$metric <- factor(df$metric, unique(c(setdiff(base, "epsilon"), intersect("epsilon", base))))
  rownames(df) <- NULL
  df
}

#' @rdname training_history
#' @export
plot.optensorflow_training_history <- function(x, y, metrics = NULL, method = c("auto", "ggplot2", "base"),
                                               smooth = getOption("keras.plot.history.smooth", TRUE),
                                               theme_bw = getOption("keras.plot.history.theme_bw", FALSE), ...) {
  method <- match.arg(method)
  if (method == "auto") {
    forced <- getOption("optensorflow.plot.method")
    method <- if (identical(forced, "base")) "base" else if (requireNamespace("ggplot2", quietly = TRUE)) "ggplot2" else "base"
  }
  df <- as.data.frame(x)
  if (!nrow(df)) {
    message("The history has no epochs to plot.")
    return(invisible(NULL))
  }
  if (!is.null(metrics)) {
    unknown <- setdiff(metrics, levels(df$metric))
    if (length(unknown)) {
      py_stop("ValueError", "metrics not in the history: ", paste(unknown, collapse = ", "), "; it has ",
              paste(levels(df$metric), collapse = ", "), ".")
    }
    df <- df[df$metric %in% metrics, ]
    df$metric <- factor(as.character(df$metric), intersect(levels(df$metric), metrics))
  }
  delta <- x$params$target_delta
  eps_label <- if (is.null(delta)) "epsilon" else paste0("epsilon (delta = ", format(delta), ")")
  levels(df$metric)[levels(df$metric) == "epsilon"] <- eps_label
  df$data <- factor(ifelse(df$metric == eps_label, "privacy (epsilon spent)", as.character(df$data)),
                    c("training", "validation", "privacy (epsilon spent)"))
  df$data <- droplevels(df$data)
  if (method == "ggplot2") {
    if (!requireNamespace("ggplot2", quietly = TRUE)) {
      py_stop("ValueError", "method = \"ggplot2\" needs the ggplot2 package; use method = \"base\".")
    }
    return(plot_history_ggplot(df, smooth = smooth && max(df$epoch) >= 10, theme_bw = theme_bw))
  }
  plot_history_base(df, ...)
  invisible(NULL)
}

# ggplot2 evaluates `.data` (the data pronoun) in its data mask.
utils::globalVariables(".data")

plot_history_ggplot <- function(df, smooth, theme_bw) {
  int_breaks <- function(v) {
    b <- pretty(v)
    b[b %% 1 == 0]
  }
  p <- ggplot2::ggplot(df, ggplot2::aes(x = .data$epoch, y = .data$value, colour = .data$data, fill = .data$data))
  if (max(df$epoch) > 1) p <- p + ggplot2::geom_line(na.rm = TRUE)
  p <- p + ggplot2::geom_point(shape = 21, colour = "black", na.rm = TRUE)
  if (smooth) {
    p <- p + ggplot2::geom_smooth(se = FALSE, method = "loess", formula = y ~ x, na.rm = TRUE)
  }
  if (theme_bw) p <- p + ggplot2::theme_bw()
  p + ggplot2::facet_grid(metric ~ ., switch = "y", scales = "free_y") +
    ggplot2::scale_x_continuous(breaks = int_breaks) +
    ggplot2::labs(colour = NULL, fill = NULL) +
    ggplot2::theme(axis.title.y = ggplot2::element_blank(), strip.placement = "outside",
                   strip.text = ggplot2::element_text(colour = "black", size = 11),
                   strip.background = ggplot2::element_rect(fill = NA, colour = NA))
}

plot_history_base <- function(df, ...) {
  panels <- levels(droplevels(df$metric))
  old <- graphics::par(mfrow = c(length(panels), 1), mar = c(4, 4.5, 1, 1), mgp = c(2.2, 0.8, 0))
  on.exit(graphics::par(old), add = TRUE)
  styles <- c(training = 1, validation = 4, "privacy (epsilon spent)" = 16)
  colours <- c(training = "black", validation = "steelblue", "privacy (epsilon spent)" = "firebrick")
  for (panel in panels) {
    d <- df[df$metric == panel & !is.na(df$value), ]
    kinds <- as.character(unique(d$data))
    graphics::plot(range(df$epoch), range(d$value, na.rm = TRUE, finite = TRUE), type = "n",
                   xlab = "epoch", ylab = panel, xaxt = "n", ...)
    graphics::axis(1, at = unique(pretty(df$epoch)[pretty(df$epoch) %% 1 == 0]))
    for (k in kinds) {
      dk <- d[d$data == k, ]
      graphics::lines(dk$epoch, dk$value, type = "b", pch = styles[[k]], col = colours[[k]])
    }
    v <- d$value[order(d$epoch)]
    where <- if (length(v) > 1 && v[1] > v[length(v)]) "topright" else "bottomright"
    graphics::legend(where, legend = kinds, pch = styles[kinds], col = colours[kinds], bty = "n")
  }
}
