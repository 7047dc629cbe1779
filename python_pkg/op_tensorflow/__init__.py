"""op_tensorflow: differentially private deep learning for TensorFlow/Keras."""

from op_tensorflow.accounting import (
    compute_dp_sgd_privacy,
    compute_rdp,
    get_privacy_budget,
    get_privacy_spent,
    noise_multiplier_for_epsilon,
)
from op_tensorflow.errors import BudgetExceededError, PrivacyError, PrivacyWarning

__version__ = "0.1.0"

__all__ = [
    "BudgetExceededError",
    "PrivacyError",
    "PrivacyWarning",
    "compute_dp_sgd_privacy",
    "compute_rdp",
    "get_privacy_budget",
    "get_privacy_spent",
    "noise_multiplier_for_epsilon",
]
