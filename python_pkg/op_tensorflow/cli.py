"""Command-line entry points."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from op_tensorflow.accounting import ACCOUNTANTS, steps_for
from op_tensorflow.tf_privacy_accounting import CONVERSIONS, compute_dp_sgd_privacy


def compute_dp_sgd_privacy_main(argv: Sequence[str] | None = None) -> int:
    """``compute_dp_sgd_privacy --N=3989 --batch_size=32 --noise_multiplier=1.1 --epochs=20``."""
    parser = argparse.ArgumentParser(
        prog="compute_dp_sgd_privacy",
        description="Epsilon of DP-SGD with Poisson sampling and per-example clipping.",
    )
    parser.add_argument("--N", type=int, required=True, help="number of training examples")
    parser.add_argument("--batch_size", type=int, required=True, help="expected batch size")
    parser.add_argument("--noise_multiplier", type=float, required=True)
    parser.add_argument("--epochs", type=float, required=True)
    parser.add_argument("--delta", type=float, default=1e-6, help="target delta (default 1e-6)")
    parser.add_argument("--accountant", choices=ACCOUNTANTS, default="rdp")
    parser.add_argument("--conversion", choices=CONVERSIONS, default="current")
    args = parser.parse_args(argv)
    try:
        eps, order = compute_dp_sgd_privacy(
            args.N,
            args.batch_size,
            args.noise_multiplier,
            args.epochs,
            args.delta,
            accountant=args.accountant,
            conversion=args.conversion,
        )
    except ValueError as err:
        parser.exit(2, f"compute_dp_sgd_privacy: error: {err}\n")
    steps = steps_for(args.N, args.batch_size, args.epochs)
    print(
        f"DP-SGD with sampling rate = {100 * args.batch_size / args.N:.3g}% and noise_multiplier = "
        f"{args.noise_multiplier:g} iterated over {steps} steps satisfies differential privacy with "
        f"eps = {eps:.3g} and delta = {args.delta:g}."
    )
    how = f"({args.accountant.upper()} accountant"
    if args.accountant == "rdp":
        how += f", {args.conversion} RDP-to-DP conversion, optimal order {order:g}"
    print(how + ")")
    return 0


if __name__ == "__main__":
    sys.exit(compute_dp_sgd_privacy_main())
