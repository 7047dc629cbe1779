"""Accuracy of sparse against dense embedding noise at the same epsilon, on the embedding bench task.

``PrivateKerasModel(..., embedding_noise="sparse")`` (DP-AdaFEST) and the default dense noise train the same
model (``bench_model.py``'s embedding workload: Embedding 10 000 x 64, average pooling, Dense 64 relu, Dense 1
sigmoid, Adam (``--learning-rate``, default 0.01), binary cross-entropy, clip 1.0, noise multiplier 1.1,
b = 256) from the same initial
weights on the same private rows with the same sampling seed, so both runs spend exactly the same epsilon.
Accuracy is measured on 5 000 held-out rows of the same distribution (public test data). Two tasks:

* ``uniform`` (the bench task): tokens uniform over the vocabulary, label = whether most tokens are < 5 000.
  Every row is looked up ~1.6 times per batch, far below the selection threshold, so the sparse run updates
  almost only false-positive rows: the worst case for sparse noise.
* ``zipf``: tokens Zipf(1.2)-distributed (a few very frequent rows, as in real vocabularies), each row a random
  N(0, 1) score, label = whether the example's mean score is above the median (balanced); frequent rows pass
  the threshold.

``.venv/bin/python bench/bench_sparse_accuracy.py [--epochs 5] [--task uniform --task zipf] [--seeds 2]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

VOCAB, SEQ, N, N_TEST, BATCH = 10_000, 64, 20_000, 5_000, 256


def make_task(task: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    if task == "uniform":
        x = rng.integers(0, VOCAB, size=(N + N_TEST, SEQ))
        y = ((x < VOCAB // 2).mean(axis=1) > 0.5).astype("float32")
    else:
        x = (rng.zipf(1.2, size=(N + N_TEST, SEQ)) - 1) % VOCAB
        score = rng.normal(size=VOCAB)[x].mean(axis=1)
        y = (score > np.median(score)).astype("float32")
    x = x.astype("float32")
    return (x[:N], y[:N]), (x[N:], y[N:])


def run(task: str, mode: str, epochs: int, seed: int, learning_rate: float) -> dict:
    import tensorflow as tf
    from bench_model import CLIP, NOISE, make_layers, make_loss

    import op_tensorflow as ot

    warnings.filterwarnings("ignore")
    (x, y), (x_test, y_test) = make_task(task, seed)
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential(make_layers("embed"))
    model.build((None, SEQ))
    dp = ot.PrivateKerasModel(model, CLIP, NOISE, seed=seed, embedding_noise=mode)
    dp.compile(optimizer=tf.keras.optimizers.Adam(learning_rate), loss=make_loss("embed"), metrics=["accuracy"])
    loader = ot.PrivateDataLoader.from_arrays(
        x, y, BATCH, feature_bounds=(0, VOCAB - 1), label_categories=[0, 1], seed=seed, epsilon=float("inf"), delta=1e-6
    )
    before = model.get_weights()[0].copy()
    tic = time.perf_counter()
    history = dp.fit(loader, epochs=epochs, verbose=0, validation_data=(x_test, y_test))
    seconds = time.perf_counter() - tic
    moved = float(np.mean(np.any(model.get_weights()[0] != before, axis=1)))
    return {
        "accuracy": history.history["val_accuracy"],
        "epsilon": history.history["epsilon"][-1],
        "seconds": seconds,
        "rows_moved": moved,
        "majority": float(max(y_test.mean(), 1 - y_test.mean())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["uniform", "zipf"], action="append")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    args = parser.parse_args()
    print("| task | noise | seed | epsilon | test accuracy per epoch | final | table rows moved | fit s |")
    print("|---|---|---:|---:|---|---:|---:|---:|")
    for task in args.task or ["uniform", "zipf"]:
        finals: dict = {}
        for seed in range(args.seeds):
            for mode in ("dense", "sparse"):
                r = run(task, mode, args.epochs, seed, args.learning_rate)
                finals.setdefault(mode, []).append(r["accuracy"][-1])
                acc = " ".join(f"{a:.3f}" for a in r["accuracy"])
                print(
                    f"| {task} | {mode} | {seed} | {r['epsilon']:.3f} | {acc} | {r['accuracy'][-1]:.3f} | "
                    f"{100 * r['rows_moved']:.1f}% | {r['seconds']:.1f} |",
                    flush=True,
                )
        print(
            f"| {task} | mean final | | | | dense {np.mean(finals['dense']):.3f} / sparse "
            f"{np.mean(finals['sparse']):.3f} (majority class {r['majority']:.3f}) | | |",
            flush=True,
        )


if __name__ == "__main__":
    main()
