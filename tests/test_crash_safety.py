"""Crash safety: a training process killed with SIGKILL never corrupts or under-reports.

tests/_crash_worker.py trains a PrivateKerasModel on a private frame with a file ledger and
saves the model before training and after every epoch. It is killed with SIGKILL at
random points: during start-up (ledger creation, model building, the first save, tracing),
during training, and in the middle of a save. The 10 trials share one directory, so each
starts from what the killed one before it left behind. After every kill:

* the ledger loads (``PrivacyBudget.load``: never corrupt), and ``spent()`` is at least the
  epsilon of every DP-SGD step the worker had started (the worker logs steps durably
  *before* running them), so the ledger never reports less than was consumed;
* the model file is absent (no save finished yet) or a complete model, the old or the new
  one: ``load_private_model`` succeeds and its weights are those of the last finished save
  or of a save that was interrupted after its atomic rename;
* no stray file that looks like the model or the ledger stays behind: a temporary left by a
  kill in the middle of a save is removed by the next save (checked after each trial that
  saved, and at the end, after a clean save and a clean ledger write).

The random kill plan is seeded; set OP_TF_CRASH_SEED to replay another one.
"""

import hashlib
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time

import dp_accounting
import numpy as np
import pytest

import op_tensorflow as ot
from op_tensorflow import accounting

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_crash_worker.py")
SEED = int(os.environ.get("OP_TF_CRASH_SEED", "20240611"))
ROUNDS, EPOCHS = 2, 3  # per worker: 2 fit calls of 3 epochs (7 saves) if never killed
KEPT = {"ledger.json", "ledger.json.lock", "model.optf", "progress.log", "worker.err"}
MODEL_TEMP, LEDGER_TEMP = ".model.optf.", "ledger.json."  # prefixes of the writers' temporaries


def weights_sha(weights) -> str:
    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def read_progress(directory) -> list[list[str]]:
    path = os.path.join(directory, "progress.log")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split() for line in f.read().splitlines() if line.strip()]


def started_event(lines) -> dp_accounting.DpEvent | None:
    """The DpEvent of every step the worker logged as started, fit call by fit call."""
    fits: dict[str, list] = {}
    for fields in lines:
        if fields[0] == "steps":
            fit_id, q, sigma, k = fields[1], float(fields[2]), float(fields[3]), int(fields[4])
            fits.setdefault(fit_id, [q, sigma, 0])[2] += k
    events = [accounting.dp_sgd_event(q, sigma, steps) for q, sigma, steps in fits.values()]
    return dp_accounting.ComposedDpEvent(events) if events else None


def acceptable_model_shas(lines) -> set[str]:
    """Weights the model file may hold: the last finished save, or any save interrupted after it."""
    last_finished, interrupted = None, []
    for fields in lines:
        if fields[0] == "save_begin":
            interrupted.append(fields[1])
        elif fields[0] == "save_end":
            last_finished, interrupted = fields[1], []
    return ({last_finished} if last_finished else set()) | set(interrupted)


def strays(directory) -> set[str]:
    return set(os.listdir(directory)) - KEPT


class Worker:
    """A worker process, started early: it imports TensorFlow, then waits for ``go()``."""

    def __init__(self, directory, trial):
        self.err = open(os.path.join(directory, "worker.err"), "ab")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
        self.proc = subprocess.Popen(
            [sys.executable, WORKER, directory, trial, str(ROUNDS), str(EPOCHS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            env=env,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for raw in self.proc.stdout:
            self.lines.put(raw.decode().strip())
        self.lines.put(None)

    def wait_for(self, phase, count=1, timeout=180.0) -> bool:
        """Waits for the count-th line ``phase``; False if the worker ended first."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if line is None:
                return False
            if line == phase:
                seen += 1
                if seen == count:
                    return True

    def go(self):
        assert self.wait_for("READY"), "the worker died while importing; see worker.err"
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def kill(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        rc = self.proc.wait(timeout=60)
        self.err.close()
        return rc


def kill_plan(rng: random.Random) -> list[tuple[str, float, int]]:
    """(phase, delay, n-th save) per trial: start-up, training and mid-save kills in random order."""
    kinds = ["startup"] * 2 + ["training"] * 4 + ["save"] * 4
    rng.shuffle(kinds)
    plan = []
    for kind in kinds:
        if kind == "startup":  # after the imports: ledger, data, model, first save, tracing
            plan.append((kind, rng.uniform(0.0, 5.0), 0))
        elif kind == "training":
            plan.append((kind, rng.uniform(0.0, 2.0), 0))
        else:  # inside a save: the first (before fit) or one at an epoch end inside fit
            plan.append((kind, rng.uniform(0.0, 0.08), rng.randint(1, 3)))
    return plan


def run_trial(worker: Worker, kind, delay, nth_save) -> int:
    worker.go()
    if kind == "startup":
        time.sleep(delay)
    elif kind == "training":
        worker.wait_for("TRAINING") and time.sleep(delay)
    else:
        worker.wait_for("SAVE_BEGIN", count=nth_save) and time.sleep(delay)
    return worker.kill()


def verify(directory, what, lines_before, strays_before) -> None:
    what = f"{what} (OP_TF_CRASH_SEED={SEED})"
    lines = read_progress(directory)
    new_lines = lines[len(lines_before) :]

    # -- the ledger: loads, and never reports less than the steps that started
    ledger_path = os.path.join(directory, "ledger.json")
    event = started_event(lines)
    if os.path.exists(ledger_path):
        budget = ot.PrivacyBudget.load(ledger_path)  # raises on a corrupt file
        assert budget.delta == 1e-5
        if event is not None:
            consumed = accounting.epsilon_for_event(event, budget.delta)
            assert budget.spent() >= consumed * (1 - 1e-9), f"{what}: the ledger under-reports"
    else:
        assert event is None, f"{what}: steps ran but there is no ledger"

    # -- the model file: absent, or a complete old/new model
    model_path = os.path.join(directory, "model.optf")
    if os.path.exists(model_path):
        loaded = ot.load_private_model(model_path)
        assert weights_sha(loaded.get_weights()) in acceptable_model_shas(lines), (
            f"{what}: the model file holds weights that no save wrote"
        )
        assert loaded.noise_multiplier == 1.1 and loaded.l2_norm_clip == 1.0
    else:
        assert not any(f[0] == "save_end" for f in lines), f"{what}: a finished save left no model file"

    # -- strays: only the writers' temporaries, and those of earlier kills are gone after a new write
    now = strays(directory)
    assert all(n.startswith((MODEL_TEMP, LEDGER_TEMP)) for n in now), f"{what}: unexpected files {sorted(now)}"
    saved = any(f[0] == "save_end" for f in new_lines)
    reserved = any(f[0] == "steps" for f in new_lines)  # fit wrote its reservation before these steps
    for name in strays_before & now:
        assert not (name.startswith(MODEL_TEMP) and saved), f"{what}: {name!r} survived a later save"
        assert not (name.startswith(LEDGER_TEMP) and reserved), f"{what}: {name!r} survived a later ledger write"


@pytest.mark.slow
def test_sigkill_never_corrupts_the_ledger_or_the_model(tmp_path):
    started = time.monotonic()
    directory = str(tmp_path)
    plan = kill_plan(random.Random(SEED))
    log = []
    worker = Worker(directory, "t0")
    try:
        for i, (kind, delay, nth_save) in enumerate(plan):
            lines_before, strays_before = read_progress(directory), strays(directory)
            rc = run_trial(worker, kind, delay, nth_save)
            if i + 1 < len(plan):
                worker = Worker(directory, f"t{i + 1}")  # imports while this trial is checked
            new_lines = read_progress(directory)[len(lines_before) :]
            mid_save = bool(new_lines) and new_lines[-1][0] == "save_begin"
            log.append((f"t{i}", kind, round(delay, 3), nth_save, rc, mid_save, sorted(strays(directory))))
            assert rc in (-signal.SIGKILL, 0), log
            verify(directory, f"trial {log[-1]}", lines_before, strays_before)
    finally:
        worker.kill()

    # The kills landed where they were aimed: some after training started, some mid-save.
    lines = read_progress(directory)
    assert any(f[0] == "steps" for f in lines) and any(f[0] == "save_begin" for f in lines)

    # A clean save and a clean ledger write after all the kills leave no temporary behind.
    model_path, ledger_path = os.path.join(directory, "model.optf"), os.path.join(directory, "ledger.json")
    if os.path.exists(model_path):
        ot.load_private_model(model_path).save(model_path)
    if os.path.exists(ledger_path):
        budget = ot.PrivacyBudget.load(ledger_path)
        before = budget.spent()
        budget.charge(dp_accounting.LaplaceDpEvent(1.0), "after the crashes")
        assert budget.spent() > before
    assert not strays(directory), f"left behind after clean writes: {sorted(strays(directory))}"
    print("crash trials (trial, phase, delay, n-th save, exit code, killed inside a save, temporaries left):")
    print("\n".join(map(str, log)))
    print(f"took {time.monotonic() - started:.1f} s")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_save_removes_temporaries_of_dead_savers_only(tmp_path):
    import tensorflow as tf

    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    dp_model = ot.PrivateKerasModel(model, l2_norm_clip=1.0, noise_multiplier=1.1)
    path = tmp_path / "model.optf"
    dead, alive = dead_pid(), os.getpid()
    stale = tmp_path / f".model.optf.{dead}.abcd1234.saving"  # what a save killed mid-way leaves
    in_progress = tmp_path / f".model.optf.{alive}.efgh5678.saving"  # a save running right now
    other_model = tmp_path / f".model.optf.5.{dead}.ijkl9012.saving"  # a killed save of "model.optf.5"
    for d in (stale, in_progress, other_model):
        d.mkdir()
        (d / "bundle.zip").write_bytes(b"partial")
    dp_model.save(path)
    assert sorted(os.listdir(tmp_path)) == sorted(["model.optf", in_progress.name, other_model.name])
    ot.load_private_model(path)


def test_save_from_another_thread_writes_the_native_keras_format(tmp_path):
    import zipfile

    import tensorflow as tf

    path = tmp_path / "model.optf"
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    ot.PrivateKerasModel(model, l2_norm_clip=1.0, noise_multiplier=1.1).save(path)
    errors = []

    def reload_and_save():  # Keras 2.15 keeps its saving format in a thread-local flag
        try:
            ot.load_private_model(path).save(tmp_path / "again.optf")
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=reload_and_save)
    thread.start()
    thread.join()
    assert not errors
    with zipfile.ZipFile(tmp_path / "again.optf") as bundle:
        assert bundle.read("model.keras")[:2] == b"PK"  # a .keras zip, not HDF5


def test_ledger_write_removes_temporaries_of_killed_writers(tmp_path):
    path = tmp_path / "ledger.json"
    budget = ot.PrivacyBudget(5.0, 1e-6, path=path)
    stale = tmp_path / "ledger.json.k2j4_x9q.tmp"  # what a writer killed between mkstemp and rename leaves
    stale.write_bytes(b'{"partial": ')
    unrelated = tmp_path / "ledger.json.backup.tmp"
    unrelated.write_bytes(b"keep me")
    budget.charge(dp_accounting.LaplaceDpEvent(1.0), "query")
    assert not stale.exists() and unrelated.exists()
    assert ot.PrivacyBudget.load(path).spent() == budget.spent() > 0
