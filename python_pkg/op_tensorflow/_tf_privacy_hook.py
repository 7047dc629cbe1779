"""Lets TF Privacy's Keras modules import on TensorFlow >= 2.16.

TF Privacy 0.9.0's package ``__init__`` imports its estimators, which need ``tensorflow_estimator`` (gone
in TF 2.16), so ``import tensorflow_privacy`` fails there. Its own hook, ``sys.skip_tf_privacy_import``,
skips those imports; the submodules op_tensorflow uses (fast gradient clipping, the Keras DP optimizers,
the membership-inference attacks) import fine then. The hook is set before TF Privacy is first imported,
and only on TF >= 2.16, where the full import cannot work anyway; TensorFlow itself is not imported here.
"""

import sys
from importlib import metadata


def _tensorflow_version() -> tuple[int, ...] | None:
    for dist in ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tf-nightly"):
        try:
            return tuple(int(p) for p in metadata.version(dist).split(".")[:2] if p.isdigit())
        except metadata.PackageNotFoundError:
            continue
    return None


_version = _tensorflow_version()
if "tensorflow_privacy" not in sys.modules and (_version is None or _version >= (2, 16)):
    sys.skip_tf_privacy_import = True
