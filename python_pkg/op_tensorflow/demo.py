"""The main job (``make demo``): DP training on scikit-learn's handwritten digits.

The 1,797 8x8 digit images ship inside scikit-learn. They stand in for sensitive data: the
frame is private from the start, its pixel range 0..16 is public metadata, features are
scaled with that public range (never with data statistics), and the test accuracy is
released as a DP answer charged to the same ledger. A plain Keras model trained on the
same split is the non-private baseline.
"""

import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import op_tensorflow as ot  # noqa: E402
from op_tensorflow.frame import _raw  # noqa: E402  (the demo also trains the non-private baseline)

EPOCHS, BATCH, CLIP, NOISE, DELTA = 30, 64, 1.0, 1.3, 1e-5


def build_model() -> tf.keras.Model:
    return tf.keras.Sequential(
        [
            tf.keras.Input((64,)),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(10, activation="softmax"),
        ]
    )


def main() -> None:
    tf.keras.utils.set_random_seed(0)
    digits = load_digits()
    pixels = [f"pixel_{i}" for i in range(64)]
    df = pd.DataFrame(digits.data, columns=pixels).assign(digit=digits.target.astype(float))
    pdf = ot.PrivateDataFrame(
        df,
        metadata={**{p: (0, 16) for p in pixels}, "digit": (0, 9)},
        budget=ot.PrivacyBudget(epsilon=8.0, delta=DELTA),
    )
    print(f"Private data: {pdf!r}")
    X = pdf[pixels] / 16.0  # scaled with the public pixel range
    X_train, X_test, y_train, y_test = ot.train_test_split(X, pdf["digit"], test_size=0.25, random_state=0)
    n_train = len(X_train)

    print("\n# Budget estimate before training")
    ot.get_privacy_budget(n_train, BATCH, EPOCHS, NOISE, DELTA)

    print(f"\n# DP-SGD: {EPOCHS} epochs, Poisson batches of expected size {BATCH}, clip {CLIP}, noise {NOISE}")
    dp_model = ot.PrivateKerasModel(model=build_model(), l2_norm_clip=CLIP, noise_multiplier=NOISE)
    dp_model.compile(
        optimizer=tf.keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    loader = ot.PrivateDataLoader(feature_df=X_train, label_df=y_train, batch_size=BATCH)
    tic = time.perf_counter()
    history = dp_model.fit(x=loader, epochs=EPOCHS, target_delta=DELTA, verbose=2)
    dp_seconds = time.perf_counter() - tic
    dp_accuracy = dp_model.evaluate(X_test, y_test, eps=0.5)["accuracy"]

    baseline = build_model()
    baseline.compile(
        optimizer=tf.keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        baseline.fit(_raw(X_train).to_numpy(), _raw(y_train).to_numpy(), batch_size=BATCH, epochs=EPOCHS, verbose=0)
    base_accuracy = baseline.evaluate(_raw(X_test).to_numpy(), _raw(y_test).to_numpy(), verbose=0)[1]

    print("\n# Result")
    print(
        f"epsilon spent by training  = {history.history['epsilon'][-1]:.4f} at delta = {DELTA:g} ({dp_seconds:.1f} s)"
    )
    print(f"DP test accuracy           = {dp_accuracy:.3f}  (a DP answer, eps = 0.5, {len(X_test)} test rows)")
    print(f"non-private test accuracy  = {base_accuracy:.3f}  (plain Keras, same model and split)")
    print(f"ledger                     : {pdf.budget!r}")
    assert np.isfinite(dp_accuracy)


if __name__ == "__main__":
    main()
