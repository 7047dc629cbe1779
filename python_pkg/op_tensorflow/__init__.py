"""op_tensorflow: differentially private deep learning for TensorFlow/Keras."""

from op_tensorflow.accounting import (
    compute_dp_sgd_privacy,
    compute_rdp,
    get_privacy_budget,
    get_privacy_spent,
    noise_multiplier_for_epsilon,
)
from op_tensorflow.budget import PrivacyBudget
from op_tensorflow.errors import BudgetExceededError, PrivacyError, PrivacyWarning
from op_tensorflow.frame import PrivateDataFrame, PrivateSeries, test_train_split, train_test_split
from op_tensorflow.loader import PrivateDataLoader

__version__ = "0.1.0"

__all__ = [
    "BudgetExceededError",
    "PrivacyError",
    "PrivacyBudget",
    "PrivacyWarning",
    "PrivateDataFrame",
    "PrivateDataLoader",
    "PrivateSeries",
    "compute_dp_sgd_privacy",
    "compute_rdp",
    "get_privacy_budget",
    "get_privacy_spent",
    "noise_multiplier_for_epsilon",
    "test_train_split",
    "train_test_split",
]
