"""The channel count (last axis) at each BatchNormalization of a Sequential, read from the layers' configs.

``fix_model`` replaces BatchNormalization by ``GroupNormalization(groups=g)``, and ``g`` must divide the
channel count. A built layer knows it; in a Sequential that is not built yet (no ``tf.keras.Input``), it is
read from the layers before: the last ``filters`` / ``units`` / ``output_dim`` (Conv*, Dense, recurrent
layers, Embedding), carried through layers that keep the channels (activations, dropout, pooling,
padding, normalization, ...). Any other layer makes it unknown, and ``fix_model`` then warns and uses
LayerNormalization.
"""

from __future__ import annotations

import tensorflow as tf

from op_tensorflow import keras_seam

__all__ = ["channel_hints"]

# Layers whose output has the channels (last axis) of their input; any other layer not listed in
# _channels_after leaves the count unknown.
_KEEPS_CHANNELS = tuple(
    getattr(tf.keras.layers, name)
    for name in (
        "Activation",
        "ActivityRegularization",
        "AlphaDropout",
        "AveragePooling1D",
        "AveragePooling2D",
        "AveragePooling3D",
        "BatchNormalization",
        "Cropping1D",
        "Cropping2D",
        "Cropping3D",
        "Dropout",
        "ELU",
        "GaussianDropout",
        "GaussianNoise",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
        "GlobalAveragePooling3D",
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "GlobalMaxPooling3D",
        "GroupNormalization",
        "LayerNormalization",
        "LeakyReLU",
        "Masking",
        "MaxPooling1D",
        "MaxPooling2D",
        "MaxPooling3D",
        "PReLU",
        "ReLU",
        "Softmax",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "UnitNormalization",
        "UpSampling1D",
        "UpSampling2D",
        "UpSampling3D",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "ZeroPadding3D",
    )
    if hasattr(tf.keras.layers, name)
)


def _channels_after(layer: tf.keras.layers.Layer, channels: int | None) -> int | None:
    """The channel count (last axis) of ``layer``'s output, from its config and the count before it."""
    config = layer.get_config()
    if config.get("data_format") not in (None, "channels_last"):
        return None
    if isinstance(layer, _KEEPS_CHANNELS):
        return channels
    for key in ("filters", "units", "output_dim"):  # Conv*, Dense and recurrent layers, Embedding
        if isinstance(config.get(key), int):
            return config[key]
    if isinstance(config.get("depth_multiplier"), int) and channels is not None:  # DepthwiseConv*
        return channels * config["depth_multiplier"]
    return None


def channel_hints(model: tf.keras.Sequential) -> dict[int, int | None]:
    """``{id(bn): channel count or None}`` for the BatchNormalization layers of a Sequential, from the layers before.

    Reads the layers' configs only, so it works on a Sequential that is not built (no input shape yet).
    """
    hints, channels = {}, None
    for layer in model.layers:
        if isinstance(layer, keras_seam.BATCH_NORM_CLASSES):
            hints[id(layer)] = channels
        channels = _channels_after(layer, channels)
    return hints
