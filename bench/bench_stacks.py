"""Ours against the fastest non-private step and TF Privacy, per stack: Keras 3 and tf_keras, in one run.

Issue #14's table. For the MLP, the convnet and the embedding model of ``bench_model.py`` this runs, under each
Keras (``TF_USE_LEGACY_KERAS`` set in the subprocess), every configuration in its own subprocess
(``bench_model.py --workload W --config C``):

* the non-private baselines: Keras ``fit`` with ``steps_per_execution`` 1 and 32, each without and with
  ``jit_compile=True`` (``nonprivate``, ``nonprivate_spe32``, ``nonprivate_xla``, ``nonprivate_spe32_xla``);
* ``ours`` (``PrivateKerasModel``, 32 DP steps per graph call) and, for the embedding model, ``ours_sparse``
  (``embedding_noise="sparse"``; reported as unavailable while the engine lacks the keyword);
* with ``--tfp`` (default), TF Privacy's fixed-batch paths (``tfp_xla``, ``tfp_noxla``, ``tfp_fast``,
  ``tfp_fast_noxla``, and the microbatched ``tfp_dpopt`` under its own, shorter ``--dpopt-timeout``). A path
  that fails (TF Privacy does not run on Keras 3) or times out is not run again in later rounds.

Rounds (``--rounds``) interleave every configuration, the best step time is kept (peak RSS: the largest over
rounds). One markdown table, the ratios against the old baseline (non-private, spe=1) and against the
fastest non-private configuration (named), TF Privacy's best path (named), peak RSS (``ru_maxrss`` of the
configuration's process, TensorFlow included) of ours against the fastest non-private's; then the issue's
goals, met or missed.

``.venv/bin/python bench/bench_stacks.py [--rounds 2] [--workload mlp ...] [--no-tfp] [--json out.json]``;
``--time-budget 10`` shortens every configuration's timed training (a quick run); on TF 2.15:
``.venv-tf215/bin/python bench/bench_stacks.py --stack native``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_model  # noqa: E402  (no TensorFlow at import: its constants only)

WORKLOADS = tuple(bench_model.WORKLOADS)
NONPRIVATE = tuple(bench_model.NONPRIVATE_CONFIGS)
TFP = tuple(bench_model.TFP_FIXED)
SHORT = {
    "nonprivate": "spe=1",
    "nonprivate_spe32": "spe=32",
    "nonprivate_xla": "XLA spe=1",
    "nonprivate_spe32_xla": "XLA spe=32",
}
# issue #14's goals: ours (dense noise) and ours_sparse against the fastest non-private configuration
GOAL_DENSE = {"mlp": 1.5, "conv": 1.3, "embed": 1.5}
GOAL_SPARSE = {"embed": 1.2}
GOAL_TFP = 2.0  # TF Privacy's best path / ours, at least
GOAL_MEMORY = 1.3  # peak RSS ours / fastest non-private, at most
# "native": whatever tf.keras is without the variable (e.g. Keras 2.15 on TF 2.15, which has no tf_keras)
STACKS = {"keras3": {"TF_USE_LEGACY_KERAS": "0"}, "tf_keras": {"TF_USE_LEGACY_KERAS": "1"}, "native": {}}


def configs_for(workload: str, tfp: bool) -> list[str]:
    return [*NONPRIVATE, "ours", *(["ours_sparse"] if workload == "embed" else []), *(TFP if tfp else [])]


def _env(stack: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    return {**base, **STACKS[stack], "TF_CPP_MIN_LOG_LEVEL": "3"}


def run(stack: str, workload: str, config: str, timeout: float, time_budget: float) -> dict:
    cmd = [sys.executable, os.path.join(HERE, "bench_model.py"), "--workload", workload, "--config", config]
    cmd += ["--time-budget", str(time_budget)]
    tic = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(stack))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "timed_out": True}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
            result["process_s"] = time.perf_counter() - tic
            return result
    return {"error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}


def stack_versions(stack: str) -> str:
    out = subprocess.run([sys.executable, "-m", "op_tensorflow.stack"], capture_output=True, text=True, env=_env(stack))
    return out.stdout.splitlines()[1] if out.returncode == 0 and len(out.stdout.splitlines()) > 1 else "?"


def _last_line(error: str) -> str:
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:160] if lines else "?"


def _ms(s) -> str:
    return "—" if s is None else f"{1e3 * s:.2f}"


def _ratio(a, b):
    return None if a is None or b is None else a / b


def _fmt(value, name: str | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" + (f" ({name})" if name else "")


def summarize(best: dict, errors: dict, stacks, workloads, tfp: bool) -> list[dict]:
    """One row per stack x workload: step times, the fastest baseline and TF Privacy's best path, the ratios."""
    rows = []
    for stack in stacks:
        for workload in workloads:

            def get(config, field="step_s", stack=stack, workload=workload):
                return best.get((stack, workload, config), {}).get(field)

            plain = [(get(c), c) for c in NONPRIVATE if get(c)]
            fast_s, fast_c = min(plain) if plain else (None, None)
            tfp_runs = [(get(c), c) for c in TFP if get(c)] if tfp else []
            tfp_s, tfp_c = min(tfp_runs) if tfp_runs else (None, None)
            ours, sparse = get("ours"), get("ours_sparse")
            rss_fast = get(fast_c, "peak_rss_kb") if fast_c else None
            rows.append(
                {
                    "stack": stack,
                    "workload": workload,
                    "step_s": {c: get(c) for c in configs_for(workload, tfp)},
                    "peak_rss_kb": {c: get(c, "peak_rss_kb") for c in configs_for(workload, tfp)},
                    "errors": {c: e for (s, w, c), e in errors.items() if s == stack and w == workload},
                    "fastest_nonprivate": fast_c,
                    "tfp_best": tfp_c,
                    "ours_over_old_baseline": _ratio(ours, get("nonprivate")),
                    "ours_over_fastest": _ratio(ours, fast_s),
                    "sparse_over_fastest": _ratio(sparse, fast_s),
                    "tfp_best_over_ours": _ratio(tfp_s, ours),
                    "rss_ours_over_fastest": _ratio(get("ours", "peak_rss_kb"), rss_fast),
                    "rss_sparse_over_fastest": _ratio(get("ours_sparse", "peak_rss_kb"), rss_fast),
                }
            )
    return rows


def print_table(rows: list[dict], versions: dict) -> None:
    for stack, version in versions.items():
        print(f"- {stack}: {version}")
    head = [
        "stack",
        "model",
        *(f"non-private {SHORT[c]} (ms)" for c in NONPRIVATE),
        "ours (ms)",
        "ours_sparse (ms)",
        "TFP best (ms)",
        "ours / non-private spe=1 (old baseline)",
        "ours / fastest non-private",
        "ours_sparse / fastest",
        "TFP best / ours",
        "peak RSS ours / fastest non-private",
    ]
    print("\n| " + " | ".join(head) + " |")
    print("|" + "---|" * 2 + "---:|" * (len(head) - 2))
    for r in rows:
        steps = r["step_s"]
        fast = SHORT.get(r["fastest_nonprivate"])
        sparse = _ms(steps.get("ours_sparse")) if r["workload"] == "embed" else "n/a"
        if r["workload"] == "embed" and steps.get("ours_sparse") is None and "ours_sparse" in r["errors"]:
            sparse = "unavailable" if "embedding_noise not available" in r["errors"]["ours_sparse"] else "error"
        tfp = f"{_ms(steps[r['tfp_best']])} ({r['tfp_best']})" if r["tfp_best"] else "—"
        cells = [
            r["stack"],
            r["workload"],
            *(_ms(steps.get(c)) for c in NONPRIVATE),
            _ms(steps.get("ours")),
            sparse,
            tfp,
            _fmt(r["ours_over_old_baseline"]),
            _fmt(r["ours_over_fastest"], fast),
            _fmt(r["sparse_over_fastest"]),
            _fmt(r["tfp_best_over_ours"]),
            _fmt(r["rss_ours_over_fastest"], fast),
        ]
        print("| " + " | ".join(cells) + " |")
    failed: dict = {}  # (stack, error) -> the workloads and configurations it stopped
    for r in rows:
        for config, error in r["errors"].items():
            failed.setdefault((r["stack"], _last_line(error)), []).append(f"{r['workload']} {config}")
    if failed:
        print("\nNot measured:")
        for (stack, error), where in failed.items():
            print(f"- {stack}: {', '.join(where)}: {error}")


def goal_lines(rows: list[dict], tfp: bool) -> list[str]:
    """Issue #14's goals, each "met" or "missed (x.xx)" (with the measured value beside "met" too)."""

    def verdict(value, ok) -> str:
        if value is None:
            return "n/a (not measured)"
        return f"met ({value:.2f})" if ok(value) else f"missed ({value:.2f})"

    lines = []
    for r in rows:
        w, where = r["workload"], f"{r['stack']} {r['workload']}"
        fast = r["fastest_nonprivate"]
        limit = GOAL_DENSE[w]
        noise = " (dense noise)" if w == "embed" else ""
        lines.append(
            f"{where}: ours{noise} / fastest non-private ({fast}) ≤ {limit}: "
            + verdict(r["ours_over_fastest"], lambda v, limit=limit: v <= limit)
        )
        if w in GOAL_SPARSE:
            limit = GOAL_SPARSE[w]
            line = f"{where}: ours (sparse noise) / fastest non-private ({fast}) ≤ {limit}: "
            error = r["errors"].get("ours_sparse", "")
            if r["sparse_over_fastest"] is None and error:
                line += f"n/a ({_last_line(error)})"
            else:
                line += verdict(r["sparse_over_fastest"], lambda v, limit=limit: v <= limit)
            lines.append(line)
        if tfp:
            if r["tfp_best"]:
                lines.append(
                    f"{where}: TF Privacy's best path ({r['tfp_best']}) / ours ≥ {GOAL_TFP}: "
                    + verdict(r["tfp_best_over_ours"], lambda v: v >= GOAL_TFP)
                )
            else:
                lines.append(f"{where}: TF Privacy's best path / ours ≥ {GOAL_TFP}: n/a (no TF Privacy path runs)")
        lines.append(
            f"{where}: peak RSS ours / fastest non-private ({fast}) ≤ {GOAL_MEMORY}: "
            + verdict(r["rss_ours_over_fastest"], lambda v: v <= GOAL_MEMORY)
        )
        if r["rss_sparse_over_fastest"] is not None:
            lines.append(
                f"{where}: peak RSS ours_sparse / fastest non-private ({fast}) ≤ {GOAL_MEMORY}: "
                + verdict(r["rss_sparse_over_fastest"], lambda v: v <= GOAL_MEMORY)
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=WORKLOADS, action="append")
    parser.add_argument("--stack", choices=list(STACKS), action="append")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; the best step time is kept")
    parser.add_argument(
        "--tfp", action=argparse.BooleanOptionalAction, default=True, help="TF Privacy's fixed-batch paths"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per-configuration subprocess timeout (s)")
    parser.add_argument(
        "--dpopt-timeout",
        type=float,
        default=240.0,
        help="timeout (s) of the slow microbatched tfp_dpopt path; 0 skips it",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=bench_model.TIME_BUDGET,
        help="seconds of timed training per configuration (bench_model.py --time-budget)",
    )
    parser.add_argument("--json", help="write the rows, the best results and every run to this JSON file")
    args = parser.parse_args()
    workloads, stacks = args.workload or list(WORKLOADS), args.stack or ["keras3", "tf_keras"]
    tic = time.perf_counter()
    best: dict = {}
    errors: dict = {}  # (stack, workload, config) -> error text of its last failed run
    skip: set = set()  # failed or timed out: not run again in later rounds
    runs = []
    for round_ in range(args.rounds):
        for workload in workloads:
            for stack in stacks:
                for config in configs_for(workload, args.tfp):
                    key = (stack, workload, config)
                    if key in skip or (config == "tfp_dpopt" and args.dpopt_timeout <= 0):
                        continue
                    timeout = min(args.timeout, args.dpopt_timeout) if config == "tfp_dpopt" else args.timeout
                    result = run(stack, workload, config, timeout, args.time_budget)
                    runs.append({"stack": stack, "round": round_ + 1, "workload": workload, "config": config, **result})
                    step = result.get("step_s")
                    if step is None:
                        if key not in best:  # a configuration measured in an earlier round keeps its best
                            errors[key] = result.get("error", "?")
                        skip.add(key)
                    else:
                        rss = max(result["peak_rss_kb"], best.get(key, {}).get("peak_rss_kb", 0))
                        if key not in best or step < best[key]["step_s"]:
                            best[key] = dict(result)
                        best[key]["peak_rss_kb"] = rss
                    status = f"{1e3 * step:.2f} ms/step" if step else _last_line(result.get("error", "?"))
                    elapsed = time.perf_counter() - tic
                    print(
                        f"[{elapsed:5.0f} s] round {round_ + 1} {stack:8s} {workload:5s} {config:20s} {status}",
                        flush=True,
                    )
    versions = {stack: stack_versions(stack) for stack in stacks}
    rows = summarize(best, errors, stacks, workloads, args.tfp)
    total = time.perf_counter() - tic
    print(f"\nIssue #14, {datetime.date.today().isoformat()}, {args.rounds} round(s), best kept:\n")
    print_table(rows, versions)
    goals = goal_lines(rows, args.tfp)
    print("\nGoals (issue #14):")
    for line in goals:
        print(f"- {line}")
    print(f"\ntotal {total / 60:.1f} min")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "versions": versions,
                    "rounds": args.rounds,
                    "time_budget_s": args.time_budget,
                    "rows": rows,
                    "goals": goals,
                    "best": [{"stack": s, **r} for (s, _, _), r in best.items()],
                    "runs": runs,
                    "total_s": total,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
