"""op_tensorflow: differentially private deep learning for TensorFlow/Keras."""

from op_tensorflow import _tf_privacy_hook  # noqa: F401  (first: before any module imports TF Privacy)
from op_tensorflow.accounting import get_privacy_budget, noise_multiplier_for_epsilon
from op_tensorflow.arrays import private_arrays
from op_tensorflow.budget import PrivacyBudget
from op_tensorflow.errors import BudgetExceededError, PrivacyError, PrivacyWarning
from op_tensorflow.frame import PrivateDataFrame, PrivateSeries, test_train_split, train_test_split
from op_tensorflow.loader import PrivateDataLoader
from op_tensorflow.tf_privacy_accounting import compute_dp_sgd_privacy, compute_rdp, get_privacy_spent

__version__ = "0.1.0"

# TensorFlow-backed parts load on first use, so accounting and the CLI start fast.
_LAZY = {
    "PrivateKerasModel": "op_tensorflow.model",
    "load_private_model": "op_tensorflow.model",
    "fix_model": "op_tensorflow.validate",
    "validate_model": "op_tensorflow.validate",
    "DPKerasSGDOptimizer": "op_tensorflow.optimizers",
    "DPKerasAdamOptimizer": "op_tensorflow.optimizers",
    "DPKerasAdagradOptimizer": "op_tensorflow.optimizers",
    "DPAdamGaussianOptimizer": "op_tensorflow.optimizers",
    "DPGradientDescentGaussianOptimizer": "op_tensorflow.optimizers",
    "audit": "op_tensorflow.auditing",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'op_tensorflow' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    *_LAZY,
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
    "private_arrays",
    "test_train_split",
    "train_test_split",
]
