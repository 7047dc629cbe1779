"""Lets TF Privacy's Keras modules import on any TensorFlow.

TF Privacy 0.9.0's package ``__init__`` imports its estimators and DP queries, which need
``tensorflow_estimator`` (gone in TF 2.16) and ``tensorflow_probability`` (not installed: TF Privacy is
installed with ``--no-deps``, see the README). Its own hook, ``sys.skip_tf_privacy_import``, skips those
imports; the submodules op_tensorflow uses (fast gradient clipping, the Keras DP optimizers, the
membership-inference attacks) import fine then. The hook is set before TF Privacy is first imported;
``tensorflow_privacy``'s top-level names are then empty, so import from its submodules (e.g.
``tensorflow_privacy.privacy.optimizers.dp_optimizer_keras``). TensorFlow itself is not imported here.
"""

import sys

if "tensorflow_privacy" not in sys.modules:
    sys.skip_tf_privacy_import = True
