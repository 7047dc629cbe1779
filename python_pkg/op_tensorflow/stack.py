"""What op_tensorflow runs on, and two set-up helpers: ``python -m op_tensorflow.stack [options]``.

Without options it prints the stack (Python, TensorFlow, the Keras behind ``tf.keras``, TF Privacy,
dp-accounting, numpy). ``--expect-tensorflow 2.21.0`` exits with an error if TensorFlow is another version
(the set-up uses it to check that installing op-tensorflow did not replace the user's TensorFlow).
``--install-imp-shim`` puts a minimal ``imp`` module into this environment's site-packages on Python >= 3.12,
where ``imp`` was removed: Debian's reticulate 1.28 runs a configuration script that compares
``sys.version`` as a string (``'3.12' < '3.4'``) and so imports ``imp`` to locate numpy.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import sysconfig
from importlib import metadata

IMP_SHIM = '''"""A minimal `imp` for reticulate 1.28 on Python >= 3.12 (installed by op_tensorflow.stack)."""
import importlib.util
import os


def find_module(name, path=None):
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ImportError(f"No module named {name!r}")
    return None, os.path.dirname(spec.origin), ("", "", 5)
'''


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> str:
    """One line per component of the stack, the Keras line read from ``tf.keras`` itself."""
    from op_tensorflow import keras_seam

    lines = [
        f"Python {sys.version.split()[0]}",
        f"{keras_seam.keras_description()} (tf.keras is {'Keras 3' if keras_seam.KERAS3 else 'Keras 2'})",
        f"tensorflow-privacy {_version('tensorflow-privacy')}",
        f"dp-accounting {_version('dp-accounting')}",
        f"numpy {_version('numpy')}",
    ]
    return "\n".join(lines)


def install_imp_shim() -> str | None:
    """Writes ``imp.py`` into site-packages on Python >= 3.12 if ``imp`` is missing; returns its path."""
    if sys.version_info < (3, 12) or importlib.util.find_spec("imp") is not None:
        return None
    path = os.path.join(sysconfig.get_paths()["purelib"], "imp.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(IMP_SHIM)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m op_tensorflow.stack", description=__doc__.splitlines()[0])
    parser.add_argument("--expect-tensorflow", metavar="VERSION", help="fail unless TensorFlow is this version")
    parser.add_argument("--install-imp-shim", action="store_true", help="add `imp` for reticulate on Python 3.12")
    args = parser.parse_args(argv)
    if args.install_imp_shim:
        path = install_imp_shim()
        print(f"imp shim: {path}" if path else "imp shim: not needed on this Python")
        return 0
    installed = _version("tensorflow")
    if args.expect_tensorflow and installed != args.expect_tensorflow:
        print(f"TensorFlow is {installed}, expected {args.expect_tensorflow}.", file=sys.stderr)
        return 1
    print(describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
