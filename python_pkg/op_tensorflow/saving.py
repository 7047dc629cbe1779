"""Saving and loading private models: one zip file (``model.keras`` + ``privacy.json``), written atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile

import tensorflow as tf

from op_tensorflow import _checks, keras_seam

__all__ = ["FORMAT", "model_path", "read_bundle", "write_bundle"]

FORMAT = "op_tensorflow.private_model"


def model_path(path) -> str:
    return _checks.file_path("path", path, "model file")


def write_bundle(keras_model: tf.keras.Model, meta: dict, path) -> None:
    """Writes ``keras_model`` and the privacy metadata ``meta`` to ``path``, atomically.

    The zip is staged in ``.<name>.<pid>.<random>.saving`` next to ``path`` and renamed, so ``path`` always
    holds the old or the new model; a staging directory left by a process killed mid-save is removed by the
    next save to ``path``.
    """
    path = model_path(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"path {path!r}: directory {directory!r} does not exist.")
    name = os.path.basename(path)
    if not name or os.path.isdir(path):
        raise ValueError(f"path {path!r} must name a file, not a directory.")
    _remove_stale_saves(directory, name)
    with tempfile.TemporaryDirectory(dir=directory, prefix=f".{name}.{os.getpid()}.", suffix=".saving") as tmp:
        keras_path = os.path.join(tmp, "model.keras")
        keras_seam.save_model(keras_model, keras_path)
        staged = os.path.join(tmp, "bundle.zip")
        with zipfile.ZipFile(staged, "w") as bundle:
            bundle.write(keras_path, "model.keras")
            bundle.writestr("privacy.json", json.dumps(meta, indent=1))
        with open(staged, "rb") as f:
            os.fsync(f.fileno())
        os.replace(staged, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _remove_stale_saves(directory: str, name: str) -> None:
    """Deletes the temporary directories of saves to ``name`` whose process is gone (killed mid-save)."""
    for entry in os.listdir(directory):
        parts = entry[len(name) + 2 :].split(".") if entry.startswith(f".{name}.") else []
        if len(parts) != 3 or parts[2] != "saving" or not parts[0].isdigit():
            continue
        try:
            os.kill(int(parts[0]), 0)
            continue  # the saving process is alive (its save may be in progress)
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)


def read_bundle(path) -> tuple[tf.keras.Model, dict]:
    """The Keras model and the privacy metadata of a file written by :func:`write_bundle`."""
    path = model_path(path)
    if os.path.isdir(path):
        raise ValueError(f"path {path!r} is a directory, not a model saved by PrivateKerasModel.save.")
    try:
        with zipfile.ZipFile(path) as bundle, tempfile.TemporaryDirectory() as tmp:
            meta = json.loads(bundle.read("privacy.json"))
            bundle.extract("model.keras", tmp)
            model = tf.keras.models.load_model(os.path.join(tmp, "model.keras"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"path {path!r} is not a model saved by PrivateKerasModel.save: {err}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"path {path!r} is not a model saved by PrivateKerasModel.save.")
    return model, meta
