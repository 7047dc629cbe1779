"""Ours / non-private per stack: Keras 3 and Keras 2 (tf_keras) on the same TensorFlow, in one run.

For the MLP, the convnet and the embedding model of ``bench_model.py`` this runs, under each Keras, the
non-private baselines (``steps_per_execution`` 1 and 32) and ``PrivateKerasModel`` (32 DP steps per graph
call), each configuration in its own subprocess (``bench_model.py --workload W --config C``), interleaved
over ``--rounds`` rounds (best kept), and reports ours divided by the *fastest* non-private configuration of
the same model under the same Keras. Keras 2 is selected by ``TF_USE_LEGACY_KERAS=1`` in the subprocess.

``.venv/bin/python bench/bench_stacks.py [--rounds 2] [--workload mlp ...] [--json out.json]``;
on TF 2.15: ``.venv-tf215/bin/python bench/bench_stacks.py --stack native``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = ("mlp", "conv", "embed")
CONFIGS = ("nonprivate", "nonprivate_spe32", "ours")
# "native": whatever tf.keras is without the variable (e.g. Keras 2.15 on TF 2.15, which has no tf_keras)
STACKS = {"keras3": {"TF_USE_LEGACY_KERAS": "0"}, "tf_keras": {"TF_USE_LEGACY_KERAS": "1"}, "native": {}}


def _env(stack: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    return {**base, **STACKS[stack], "TF_CPP_MIN_LOG_LEVEL": "3"}


def run(stack: str, workload: str, config: str, timeout: float) -> dict:
    env = _env(stack)
    cmd = [sys.executable, os.path.join(HERE, "bench_model.py"), "--workload", workload, "--config", config]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}


def stack_versions(stack: str) -> str:
    env = _env(stack)
    out = subprocess.run([sys.executable, "-m", "op_tensorflow.stack"], capture_output=True, text=True, env=env)
    return out.stdout.splitlines()[1] if out.returncode == 0 and len(out.stdout.splitlines()) > 1 else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=WORKLOADS, action="append")
    parser.add_argument("--stack", choices=list(STACKS), action="append")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    workloads, stacks = args.workload or list(WORKLOADS), args.stack or ["keras3", "tf_keras"]
    tic = time.perf_counter()
    best: dict = {}
    for round_ in range(args.rounds):
        for workload in workloads:
            for stack in stacks:
                for config in CONFIGS:
                    result = run(stack, workload, config, args.timeout)
                    key = (stack, workload, config)
                    step = result.get("step_s")
                    if step is not None and (key not in best or step < best[key]["step_s"]):
                        best[key] = result
                    status = f"{1e3 * step:.2f} ms/step" if step else result.get("error", "?").splitlines()[-1]
                    elapsed = time.perf_counter() - tic
                    print(f"[{elapsed:5.0f} s] round {round_ + 1} {stack:8s} {workload:5s} {config:16s} {status}")
    print()
    for stack in stacks:
        print(f"{stack}: {stack_versions(stack)}")
    print("\n| stack | model | non-private spe=1 | non-private spe=32 | ours (spe=32) | ours / fastest non-private |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = []
    for stack in stacks:
        for workload in workloads:
            steps = {c: best.get((stack, workload, c), {}).get("step_s") for c in CONFIGS}
            base = min((s for c, s in steps.items() if c != "ours" and s), default=None)
            ratio = steps["ours"] / base if steps["ours"] and base else None
            cells = [f"{1e3 * steps[c]:.2f} ms" if steps[c] else "—" for c in CONFIGS]
            print(f"| {stack} | {workload} | {' | '.join(cells)} | {f'{ratio:.2f}' if ratio else '—'} |")
            rows.append({"stack": stack, "workload": workload, **steps, "ratio": ratio})
    print(f"\ntotal {(time.perf_counter() - tic) / 60:.1f} min")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
