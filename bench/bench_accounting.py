"""Accounting speed: op_tensorflow against TF Privacy's own path, in one process.

Run: ``make bench`` (or ``.venv/bin/python bench/bench_accounting.py``). Prints one row per
case: seconds for op_tensorflow's RDP estimate, for TF Privacy 0.9.0's
``compute_dp_sgd_privacy_lib.compute_dp_sgd_privacy`` on the same inputs (the baseline),
their ratio, and the PLD estimate's time.
"""

import time
import warnings

from absl import logging as absl_logging
from tensorflow_privacy.privacy.analysis import compute_dp_sgd_privacy_lib as tfp_lib

from op_tensorflow import accounting

CASES = [  # (n, batch, epochs, sigma, delta)
    (3989, 32, 20, 1.1, 1e-6),  # the R blog
    (100000, 4, 20, 1.2, 1e-5),  # the seed guide (500k steps)
    (60000, 256, 60, 1.1, 1e-5),
    (10**7, 1, 1, 1.0, 1e-8),  # 10^7 steps
    (10**6, 10, 100, 2.0, 1e-7),  # 10^7 steps
]


def best_of(fn, repeat=5):
    best = float("inf")
    for _ in range(repeat):
        tic = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - tic)
    return best


def main():
    warnings.simplefilter("ignore")
    absl_logging.set_verbosity(absl_logging.ERROR)  # TF Privacy's deprecation notice on every call
    print(f"{'case':<34} {'steps':>9} {'ours RDP s':>10} {'TFP s':>8} {'ratio':>6} {'ours PLD s':>10}")
    for n, b, e, s, d in CASES:
        steps = accounting.steps_for(n, b, e)
        ours = best_of(lambda n=n, b=b, e=e, s=s, d=d: accounting.training_epsilon(n, b, e, s, d))
        tfp = best_of(lambda n=n, b=b, e=e, s=s, d=d: tfp_lib.compute_dp_sgd_privacy(n, b, s, e, d))
        pld = best_of(lambda n=n, b=b, e=e, s=s, d=d: accounting.training_epsilon(n, b, e, s, d, accountant="pld"), 1)
        case = f"n={n} b={b} E={e} sigma={s}"
        print(f"{case:<34} {steps:>9} {ours:>10.4f} {tfp:>8.4f} {ours / tfp:>6.2f} {pld:>10.2f}")


if __name__ == "__main__":
    main()
