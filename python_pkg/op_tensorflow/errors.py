"""Exceptions and warnings raised by op_tensorflow."""


class PrivacyError(RuntimeError):
    """An operation would release raw private data."""


class BudgetExceededError(RuntimeError):
    """A charge would exceed a dataset's privacy budget; nothing was spent."""


class PrivacyWarning(UserWarning):
    """A setting is legal but gives weak or surprising privacy."""
