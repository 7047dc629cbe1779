"""Subprocess helper for tests/test_distributed.py: one worker of a 2-worker MultiWorkerMirroredStrategy run.

Usage:
    _multiworker.py OUT MODE        (TF_CONFIG is set by the test; MODE is "train" or "die")

Every worker builds the same private arrays (the same rows in the same order, as each worker opening the
same private source would), creates and compiles a small classifier under the strategy's scope and fits it
on a seeded PrivateDataLoader. The chief writes OUT (JSON): the spent epsilon on its ledger, the planned
epsilon from get_privacy_budget, the accuracy on held-out public data and, in "die" mode, the error it
raised. In "die" mode the non-chief worker kills itself (SIGKILL) in the middle of the run.
"""

import json
import os
import signal
import sys

import numpy as np
import tensorflow as tf

import op_tensorflow as opt

OUT, MODE = sys.argv[1], sys.argv[2]
EPOCHS, BATCH, SIGMA, CLIP = 4, 64, 1.0, 1.0

strategy = tf.distribute.MultiWorkerMirroredStrategy(
    communication_options=tf.distribute.experimental.CommunicationOptions(timeout_seconds=60)
)
task = json.loads(os.environ["TF_CONFIG"])["task"]
chief = task["index"] == 0

rng = np.random.default_rng(0)
x = rng.uniform(-1.0, 1.0, (1200, 6)).astype("float32")
y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype("float32")
x_test, y_test = x[1000:], y[1000:]
loader = opt.PrivateDataLoader.from_arrays(
    x[:1000], y[:1000], BATCH, feature_bounds=(-1, 1), label_categories=[0, 1], epsilon=10.0, delta=1e-5, seed=11
)

with strategy.scope():
    tf.keras.utils.set_random_seed(5)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((6,)),
            tf.keras.layers.Dense(16, activation="relu"),
            tf.keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    dp_model = opt.PrivateKerasModel(model, l2_norm_clip=CLIP, noise_multiplier=SIGMA, seed=3)
    dp_model.compile(optimizer=tf.keras.optimizers.Adam(0.05), loss="binary_crossentropy", metrics=["accuracy"])


class Die(tf.keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch >= 2:
            os.kill(os.getpid(), signal.SIGKILL)


callbacks = [Die()] if MODE == "die" and not chief else []
result = {"planned": opt.get_privacy_budget(1000, BATCH, EPOCHS, SIGMA, 1e-5, verbose=False)}
try:
    dp_model.fit(loader, epochs=EPOCHS, verbose=0, callbacks=callbacks, steps_per_execution=2)
    result["accuracy"] = float(np.mean((model.predict(x_test, verbose=0)[:, 0] > 0.5) == y_test))
except Exception as err:  # the test checks what the chief reports
    result["error"] = f"{type(err).__name__}: {err}"
    result["cause"] = str(err.__cause__)
result["spent"] = loader.budget.spent()
result["privacy"] = dp_model.privacy
if chief:
    with open(OUT, "w") as f:
        json.dump(result, f)
