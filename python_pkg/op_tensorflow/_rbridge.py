"""Calls made on behalf of the R package.

reticulate turns Python exceptions into untyped C++ errors and prints Python warnings to
stderr. Calling through ``call`` returns both as data, so R can re-raise them as classed R
conditions and R warnings with the original messages.
"""

import warnings


def call(fn, args=(), kwargs=None):
    """Runs ``fn(*args, **kwargs)`` and reports its value, warnings and error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = fn(*(args or ()), **(kwargs or {}))
        except Exception as err:  # noqa: BLE001 - every error is handed to R
            return {"ok": False, "error_class": type(err).__name__, "message": str(err), "warnings": []}
    # Library deprecation notices (Keras, TensorFlow) are for developers, not for R users.
    relevant = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    return {"ok": True, "value": value, "warnings": [str(w.message) for w in relevant]}
