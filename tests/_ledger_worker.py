"""Subprocess helper for tests/test_budget.py (run as a script, not collected by pytest).

Usage:
    _ledger_worker.py charge PATH EPSILON DELTA SIGMA ATTEMPTS
        Opens the ledger, prints READY, waits for a line on stdin, then tries to charge
        ATTEMPTS GaussianDpEvent(SIGMA) events and prints {"accepted": n} as JSON.
    _ledger_worker.py reserve-and-hang PATH EPSILON DELTA Q SIGMA STEPS
        Reserves a DP-SGD training event, prints RESERVED, then sleeps until killed.
    _ledger_worker.py report PATH
        Prints the ledger's spent() and entries as JSON.
"""

import json
import sys
import time

import dp_accounting

from op_tensorflow import accounting
from op_tensorflow.budget import PrivacyBudget
from op_tensorflow.errors import BudgetExceededError


def main(argv: list[str]) -> None:
    mode, path = argv[0], argv[1]
    if mode == "charge":
        epsilon, delta, sigma, attempts = float(argv[2]), float(argv[3]), float(argv[4]), int(argv[5])
        budget = PrivacyBudget(epsilon, delta, path=path)
        print("READY", flush=True)
        sys.stdin.readline()
        accepted = 0
        for i in range(attempts):
            try:
                budget.charge(dp_accounting.GaussianDpEvent(sigma), f"query {i}")
                accepted += 1
            except BudgetExceededError:
                pass
        print(json.dumps({"accepted": accepted}), flush=True)
    elif mode == "reserve-and-hang":
        epsilon, delta, q, sigma, steps = float(argv[2]), float(argv[3]), float(argv[4]), float(argv[5]), int(argv[6])
        budget = PrivacyBudget(epsilon, delta, path=path)
        budget.reserve(accounting.dp_sgd_event(q, sigma, steps), "training run")
        print("RESERVED", flush=True)
        while True:
            time.sleep(60)
    elif mode == "report":
        budget = PrivacyBudget.load(path)
        entries = [e.to_dict() for e in budget.entries]
        print(json.dumps({"spent": budget.spent(), "entries": entries}), flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
