"""Subprocess helper for tests/test_crash_safety.py (run as a script, not collected by pytest).

Usage:
    _crash_worker.py DIR TRIAL ROUNDS EPOCHS

Trains a small PrivateKerasModel on a private frame whose ledger is DIR/ledger.json
(created, or reopened if a killed earlier trial left it), saves the model to
DIR/model.optf once before training and at the end of every epoch (a Keras callback), and
runs ROUNDS fit calls of EPOCHS epochs each. The test kills it with SIGKILL at random
points.

Before anything irreversible happens, a line is appended to DIR/progress.log and made
durable (flush + fsync), so the log never under-reports what really ran:

    steps TRIAL/FIT Q SIGMA K    K DP-SGD steps of fit call FIT are about to run
    save_begin SHA               a save of the weights with sha256 SHA is about to start
    save_end SHA                 that save returned

Phases are announced on stdout (READY, TRAINING, SAVE_BEGIN, SAVE_END, DONE) so the test
can aim its kill at start-up, training or the middle of a save. After the imports the
worker prints READY and waits for a line on stdin before it touches DIR, so the test can
start the next worker (TensorFlow takes seconds to import) while the current one runs.
"""

import hashlib
import os
import sys

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

import op_tensorflow as ot  # noqa: E402

N_ROWS, BATCH_SIZE, NOISE_MULTIPLIER, DELTA, BUDGET = 1000, 50, 1.1, 1e-5, 1e4
STEPS_PER_EXECUTION = 4


def weights_sha(weights) -> str:
    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


class Progress:
    def __init__(self, path: str):
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, line: str) -> None:
        os.write(self._fd, (line + "\n").encode())
        os.fsync(self._fd)


class StepMarker(tf.keras.callbacks.Callback):
    """Logs each chunk of steps before fit runs it (fit calls on_train_batch_begin first)."""

    def __init__(self, progress: Progress, fit_id: str, q: float):
        super().__init__()
        self.progress, self.fit_id, self.q, self.announced = progress, fit_id, q, False

    def on_train_batch_begin(self, batch, logs=None):
        chunk = min(STEPS_PER_EXECUTION, self.params["steps"] - batch)
        self.progress.write(f"steps {self.fit_id} {self.q!r} {NOISE_MULTIPLIER!r} {chunk}")
        if not self.announced:
            print("TRAINING", flush=True)
            self.announced = True


class Saver(tf.keras.callbacks.Callback):
    def __init__(self, save):
        super().__init__()
        self.save = save

    def on_epoch_end(self, epoch, logs=None):
        self.save()


def main(directory: str, trial: str, rounds: int, epochs: int) -> None:
    progress = Progress(os.path.join(directory, "progress.log"))
    model_path = os.path.join(directory, "model.optf")
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (N_ROWS, 4))
    df = pd.DataFrame({f"x{i}": x[:, i] for i in range(4)})
    df["y"] = (x[:, 0] + x[:, 1] > 0).astype(float)
    budget = ot.PrivacyBudget(BUDGET, DELTA, path=os.path.join(directory, "ledger.json"))
    pdf = ot.PrivateDataFrame(df, metadata={"y": (0, 1)}, budget=budget)
    loader = ot.PrivateDataLoader(pdf[["x0", "x1", "x2", "x3"]], pdf["y"], BATCH_SIZE)
    keras_model = tf.keras.Sequential(
        [
            tf.keras.layers.Dense(64, activation="relu", input_shape=(4,)),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    dp_model = ot.PrivateKerasModel(keras_model, l2_norm_clip=1.0, noise_multiplier=NOISE_MULTIPLIER)
    dp_model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss="binary_crossentropy")

    def save():
        sha = weights_sha(dp_model.get_weights())
        progress.write(f"save_begin {sha}")
        print("SAVE_BEGIN", flush=True)
        dp_model.save(model_path)
        progress.write(f"save_end {sha}")
        print("SAVE_END", flush=True)

    save()  # once before training, outside fit
    for r in range(rounds):
        marker = StepMarker(progress, f"{trial}/{r}", loader.sampling_rate)
        dp_model.fit(
            loader,
            epochs=epochs,
            target_delta=DELTA,
            callbacks=[marker, Saver(save)],
            verbose=0,
            steps_per_execution=STEPS_PER_EXECUTION,
        )
    print("DONE", flush=True)


if __name__ == "__main__":
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "go":  # the test went away
        sys.exit(1)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
