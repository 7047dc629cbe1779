# Conversion of the objects R keras users hand to compile() and fit(): optimizers, losses, metrics
# and callbacks, given as Python objects (`metric_mean_absolute_error()`, `optimizer_adam(1e-3)`,
# `callback_early_stopping()`), as the R keras/keras3 packages' wrapper functions themselves
# (`metric_mean_absolute_error`, `loss_binary_crossentropy`, `optimizer_adam`), as names
# (`"mae"`), or as lists and vectors of these. Works without the keras packages installed: a
# wrapper function is recognised by what it is (a function of an R package's namespace, or one
# carrying keras's `py_function_name` attribute) and called without arguments, which is how those
# packages themselves build the Python object (e.g. `metric_mean_absolute_error()` returns
# `keras.metrics.MeanAbsoluteError()`). A plain R function is refused with a hint: private
# training runs Keras's graph in Python, where R code cannot compute on the tensors.

is_py_object <- function(x) inherits(x, "python.builtin.object")

# A function exported by an R package (keras's, keras3's or another wrapper package's), as opposed
# to one the user wrote: its environment is a package namespace, or it carries R keras 2's
# `py_function_name` attribute naming the Keras object it stands for.
is_wrapper_function <- function(fn) {
  if (!is.function(fn) || is_py_object(fn)) return(FALSE)
  env <- environment(fn)
  if (is.character(attr(fn, "py_function_name", exact = TRUE))) return(TRUE)
  if (is.null(env)) return(FALSE) # a primitive
  while (!identical(env, emptyenv()) && !identical(env, globalenv())) {
    if (isNamespace(env)) return(!(getNamespaceName(env) %in% c("optensorflow", "base")))
    env <- parent.env(env)
  }
  FALSE
}

# One optimizer, loss, metric or callback as Keras accepts it (a Python object or a name).
# `what` is the argument's name, for messages ("metrics", "loss", ...).
as_keras_object <- function(x, what) {
  if (is.null(x) || is_py_object(x)) return(x)
  if (is.character(x) && length(x) == 1 && !is.na(x)) return(x)
  if (is.function(x)) {
    if (is_wrapper_function(x)) {
      made <- tryCatch(suppressWarnings(x()), error = function(e) e)
      if (is_py_object(made)) return(made)
      name <- attr(x, "py_function_name", exact = TRUE)
      if (is.character(name) && length(name) == 1) return(name)
      detail <- if (inherits(made, "error")) paste0(": calling it without arguments failed: ", conditionMessage(made)) else
        paste0(": calling it without arguments gave a ", class(made)[1], ", not a Keras object")
      py_stop("TypeError", .call = NULL, what, " was given an R function that optensorflow cannot turn into a Keras ",
              "object", detail, ". ", keras_object_hint(what))
    }
    py_stop("TypeError", .call = NULL, what, " was given a plain R function. Private training runs the Keras graph in ",
            "Python and does not call R functions on the tensors. ", keras_object_hint(what))
  }
  py_stop("TypeError", .call = NULL, what, " must be a Keras object, its name or an R keras wrapper (e.g. ",
          keras_object_example(what), "), got ", if (is.character(x)) paste0("a character vector of length ", length(x))
          else paste0("a ", class(x)[1]), ".")
}

keras_object_example <- function(what) {
  switch(what,
    optimizer = "\"adam\" or optimizer_adam(learning_rate = 1e-3)",
    loss = "\"mse\" or loss_binary_crossentropy()",
    metrics = "\"mae\" or metric_mean_absolute_error()",
    callbacks = "callback_early_stopping(patience = 2)",
    "a name such as \"mse\""
  )
}

keras_object_hint <- function(what) {
  switch(what,
    metrics = paste0("Give the metric's name (e.g. metrics = \"mae\" or \"mean_absolute_error\"), a Keras metric ",
                     "object (e.g. metric_mean_absolute_error() of the keras or keras3 package), or wrap a function ",
                     "written with Keras operations in custom_metric(name, fn) of the keras or keras3 package."),
    loss = paste0("Give the loss's name (e.g. loss = \"mse\"), a Keras loss object (e.g. loss_mean_squared_error() ",
                  "of the keras or keras3 package) or a Python function."),
    optimizer = paste0("Give the optimizer's name (e.g. optimizer = \"adam\") or a Keras optimizer object ",
                       "(e.g. optimizer_adam(learning_rate = 1e-3) of the keras or keras3 package)."),
    callbacks = paste0("Give Keras callback objects, e.g. callback_early_stopping() of the keras or keras3 package ",
                       "(an R function can run at epoch ends through callback_lambda())."),
    paste0("Give its name or a Keras object.")
  )
}

# Metrics (or callbacks): NULL, one item or a list/vector of items, as a Python-ready R list
# (names kept, so a named list becomes a Python dict, e.g. metrics per output).
as_keras_list <- function(x, what) {
  if (is.null(x)) return(NULL)
  if (is_py_object(x)) {
    if (inherits(x, c("python.builtin.list", "python.builtin.tuple", "python.builtin.dict"))) return(x)
    return(list(x))
  }
  if (is.function(x)) return(list(as_keras_object(x, what)))
  if (inherits(x, "R6")) {
    py_stop("TypeError", .call = NULL, what, " was given an R6 object (", class(x)[1], "), which Keras cannot call from ",
            "the Python training loop. ", keras_object_hint(what))
  }
  if (is.character(x)) {
    if (anyNA(x)) py_stop("TypeError", .call = NULL, what, " must not contain NA.")
    return(stats::setNames(as.list(x), names(x)))
  }
  if (is.list(x)) {
    out <- lapply(x, function(el) {
      if (is.list(el) && !is_py_object(el) && !is.function(el)) as_keras_list(el, what) else as_keras_object(el, what)
    })
    return(out)
  }
  as_keras_object(x, what)
}

# A loss: one item as Keras takes it; a list (one loss per output) item by item.
as_keras_loss <- function(x) {
  if (is.list(x) && !is_py_object(x)) return(lapply(x, as_keras_object, what = "loss"))
  if (is.character(x) && length(x) > 1) return(as.list(x))
  as_keras_object(x, "loss")
}

# R keras 2.15 (the R blog's package) recognises Keras 2 objects by the class names of Keras 2's
# own package ("keras.engine.sequential.Sequential", via its class filter), so on TensorFlow >= 2.16
# in the tf_keras mode, where the same classes are named "tf_keras.src.engine...", its verbs
# fail (`keras_model_sequential() %>% layer_dense()`: "Inputs to a layer should be tensors").
# When R keras is loaded, optensorflow adds the Keras 2 names after the tf_keras ones (the same
# aliases keras 2.15 adds for "keras.src."), so its methods apply. keras3 is not affected.
tf_keras_class_aliases <- function(classes) {
  if (!any(startsWith(classes, "tf_keras."))) return(classes)
  unique(as.vector(rbind(classes, sub("^tf_keras\\.(src\\.)?", "keras.", classes), deparse.level = 0)))
}

register_tf_keras_aliases <- function(...) {
  if (isTRUE(.state$tf_keras_aliases)) return(invisible())
  .state$tf_keras_aliases <- TRUE
  reticulate::register_class_filter(tf_keras_class_aliases)
  invisible()
}

# Called from .onLoad: registers the aliases when the R keras package loads (now, if it already is).
tf_keras_aliases_on_load <- function() {
  if (isNamespaceLoaded("keras")) register_tf_keras_aliases()
  setHook(packageEvent("keras", "onLoad"), register_tf_keras_aliases)
}
