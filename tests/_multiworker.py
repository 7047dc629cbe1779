"""Subprocess helper for tests/test_distributed.py: one worker of a 2-worker MultiWorkerMirroredStrategy run.

Usage:
    _multiworker.py OUT MODE        (TF_CONFIG is set by the test; MODE is "train" or "die")

Every worker builds the same private arrays (the same rows in the same order, as each worker opening the
same private source would), creates and compiles a small classifier under the strategy's scope and fits it
on a seeded PrivateDataLoader. Each worker writes OUT.<index>.json.

"train": four fits in a row. (1) Worker 1's data differ from the chief's in one value: every worker must
refuse before anything is spent; (1b) so must they when worker 1 clips at another bound. (2) A run too
large for the budget: the chief's reservation is refused, the worker must refuse too. (3) A run that
fits: it trains; the JSON gets the accuracy on held-out public data, the chief's planned epsilon
(get_privacy_budget) and every worker's ledger.
"die": one fit, in which worker 1 kills itself (SIGKILL) after its third chunk of steps; the chief
records the error it raised and its ledger.
"""

import json
import os
import signal
import sys

import numpy as np
import tensorflow as tf

import op_tensorflow as opt

OUT, MODE = sys.argv[1], sys.argv[2]
EPOCHS, BATCH, SIGMA, CLIP, N = 4, 64, 1.0, 1.0, 1000

strategy = tf.distribute.MultiWorkerMirroredStrategy(
    communication_options=tf.distribute.experimental.CommunicationOptions(timeout_seconds=60)
)
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]

rng = np.random.default_rng(0)
x = rng.uniform(-1.0, 1.0, (N + 200, 6)).astype("float32")
y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype("float32")
x_test, y_test = x[N:], y[N:]


def loader(rows):
    return opt.PrivateDataLoader.from_arrays(
        rows, y[:N], BATCH, feature_bounds=(-1, 1), label_categories=[0, 1], epsilon=10.0, delta=1e-5, seed=11
    )


def private_model(clip):
    with strategy.scope():
        tf.keras.utils.set_random_seed(5)
        layers = [tf.keras.layers.Dense(16, activation="relu"), tf.keras.layers.Dense(1, activation="sigmoid")]
        model = tf.keras.Sequential([tf.keras.Input((6,)), *layers])
        dp_model = opt.PrivateKerasModel(model, l2_norm_clip=clip, noise_multiplier=SIGMA, seed=3)
        dp_model.compile(optimizer=tf.keras.optimizers.Adam(0.05), loss="binary_crossentropy", metrics=["accuracy"])
    return dp_model, model


dp_model, model = private_model(CLIP)


class Die(tf.keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch >= 2:
            os.kill(os.getpid(), signal.SIGKILL)


def attempt(data, epochs, callbacks=(), dp=None):
    try:
        (dp or dp_model).fit(data, epochs=epochs, verbose=0, callbacks=list(callbacks), steps_per_execution=2)
        return None
    except Exception as err:  # the test checks what each worker reports
        return f"{type(err).__name__}: {err}"


result = {"planned": opt.get_privacy_budget(N, BATCH, EPOCHS, SIGMA, 1e-5, verbose=False)}
data = loader(x[:N])
if MODE == "train":
    other = x[:N].copy()
    if index == 1:
        other[17, 3] = 0.5
    result["mismatch"] = attempt(loader(other), EPOCHS)
    result["mismatch_spent"] = data.budget.spent()
    result["other_clip"] = attempt(data, EPOCHS, dp=private_model(CLIP * (4 if index == 1 else 1))[0])
    result["other_clip_spent"] = data.budget.spent()
    result["too_large"] = attempt(data, 1000)
    result["too_large_spent"] = data.budget.spent()
    result["error"] = attempt(data, EPOCHS)
    result["accuracy"] = float(np.mean((model.predict(x_test, verbose=0)[:, 0] > 0.5) == y_test))
else:
    result["error"] = attempt(data, EPOCHS, [Die()] if index == 1 else [])
result["spent"] = data.budget.spent()
result["privacy"] = dp_model.privacy
with open(f"{OUT}.{index}.json", "w") as f:
    json.dump(result, f)
