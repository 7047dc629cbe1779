# Runs the tests of one real R keras client: Rscript tests/r_clients/run.R keras|keras3
# with that client's private library first (R_LIBS=.r-clients/<client>); see the Makefile's
# test-r-clients. Skips with a message when the client is not installed.
client <- commandArgs(trailingOnly = TRUE)[1]
if (is.na(client) || !client %in% c("keras", "keras3")) stop("usage: Rscript tests/r_clients/run.R keras|keras3")
if (!requireNamespace(client, quietly = TRUE)) {
  message("tests/r_clients: the R package '", client, "' is not installed; skipped (make r-clients installs it ",
          "into .r-clients/", client, ")")
  quit(status = 0)
}
file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "tests/r_clients"
library(testthat)
started <- Sys.time()
env <- new.env(parent = globalenv())
sys.source(file.path(here, "helper-workflow.R"), envir = env)
res <- test_file(file.path(here, paste0("test-", client, ".R")), env = env, reporter = "summary",
                 stop_on_failure = TRUE)
cat(sprintf("tests/r_clients (%s, reticulate %s): done in %.0f s\n", client, utils::packageVersion("reticulate"),
            as.numeric(difftime(Sys.time(), started, units = "secs"))))
