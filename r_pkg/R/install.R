#' Install the Python side of optensorflow
#'
#' Creates a Python 3.11 virtual environment with the pinned stack (TensorFlow 2.15.1,
#' tensorflow-privacy 0.9.0, numpy < 2) and the `op_tensorflow` package, then tells you
#' to point `RETICULATE_PYTHON` at it.
#'
#' @param envname Path of the virtual environment to create.
#' @param package pip requirement for op_tensorflow: a path to a source checkout or a
#'   package name.
#' @param python Python 3.11 interpreter used to create the environment.
#' @return The path of the environment's python, invisibly.
#' @examples
#' \dontrun{
#' install_optensorflow(package = "/path/to/op-tensorflow")
#' }
#' @export
install_optensorflow <- function(envname = "~/.virtualenvs/optensorflow", package = "op-tensorflow",
                                 python = Sys.which("python3.11")) {
  if (!nzchar(python)) stop("python must be a Python 3.11 interpreter; none was found on PATH.")
  reticulate::virtualenv_create(envname, python = python)
  reticulate::virtualenv_install(envname, packages = c(package), ignore_installed = FALSE)
  py <- reticulate::virtualenv_python(envname)
  message("Installed. Before library(optensorflow), set Sys.setenv(RETICULATE_PYTHON = \"", py, "\").")
  invisible(py)
}
