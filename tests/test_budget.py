"""The privacy-budget ledger: composition, refusal, reservations, persistence, concurrency."""

import hashlib
import json
import math
import os
import signal
import subprocess
import sys

import dp_accounting
import pytest
from dp_accounting import pld, rdp

from op_tensorflow import accounting
from op_tensorflow.budget import LedgerEntry, PrivacyBudget, Reservation, as_budget
from op_tensorflow.errors import BudgetExceededError

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ledger_worker.py")
DELTA = 1e-5
TRAIN = accounting.dp_sgd_event(0.01, 1.1, 1000)  # 10 epochs at q = 1%
SMALL_TRAIN = accounting.dp_sgd_event(0.01, 1.1, 300)  # the same run stopped early
LAPLACE = dp_accounting.LaplaceDpEvent(20.0)


def rdp_epsilon(*events, delta=DELTA):
    """Epsilon straight from dp_accounting's RDP accountant, independent of op_tensorflow."""
    acc = rdp.RdpAccountant()
    for e in events:
        acc.compose(e)
    return acc.get_epsilon(delta)


def run_worker(*args, timeout=60):
    res = subprocess.run(
        [sys.executable, WORKER, *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def ledger_path(tmp_path):
    return str(tmp_path / "ledger.json")


# --- composition ------------------------------------------------------------------------


def test_empty_ledger_spends_nothing():
    b = PrivacyBudget(1.0, DELTA)
    assert b.spent() == 0.0
    assert b.remaining() == 1.0
    assert b.entries == []


def test_rdp_composition_matches_dp_accounting():
    b = PrivacyBudget(10.0, DELTA)
    b.charge(TRAIN, "training")
    b.charge(LAPLACE, "mean age")
    b.charge(LAPLACE, "mean income")
    expected = rdp_epsilon(TRAIN, LAPLACE, LAPLACE)
    assert b.spent() == pytest.approx(expected, rel=1e-12)
    assert b.remaining() == pytest.approx(10.0 - expected, rel=1e-12)
    assert len(b.entries) == 3


def test_pld_composition_matches_dp_accounting_within_one_percent():
    b = PrivacyBudget(10.0, DELTA, accountant="pld")
    b.charge(TRAIN, "training")
    b.charge(LAPLACE, "mean age")
    b.charge(LAPLACE, "mean income")
    acc = pld.PLDAccountant(value_discretization_interval=1e-4)
    for e in (TRAIN, LAPLACE, LAPLACE):
        acc.compose(e)
    assert b.spent() == pytest.approx(acc.get_epsilon(DELTA), rel=0.01)


@pytest.mark.parametrize("eps", [30.0, 1000.0])
def test_pld_ledger_survives_large_pure_dp_queries(eps):
    """dp_accounting's PLD raises at eps=30 (fine discretization) and returns inf at eps=1000."""
    b = PrivacyBudget(math.inf, DELTA, accountant="pld")
    b.charge(dp_accounting.LaplaceDpEvent(1.0 / eps), "a sharp count")
    assert math.isfinite(b.spent()) and eps * (1 - 1e-4) <= b.spent() <= rdp_epsilon(
        dp_accounting.LaplaceDpEvent(1.0 / eps)
    ) * (1 + 1e-12)


def test_composition_is_tighter_than_adding_epsilons():
    gaussian = dp_accounting.GaussianDpEvent(8.0)
    b = PrivacyBudget(100.0, DELTA)
    for _ in range(5):
        b.charge(gaussian, "noisy count")
    assert b.spent() == pytest.approx(rdp_epsilon(*[gaussian] * 5), rel=1e-12)
    assert b.spent() < 5 * rdp_epsilon(gaussian)


def test_epsilon_after_and_can_afford_do_not_record():
    b = PrivacyBudget(2.0, DELTA)
    b.charge(TRAIN, "training")
    assert b.epsilon_after(LAPLACE) == pytest.approx(rdp_epsilon(TRAIN, LAPLACE), rel=1e-12)
    assert b.can_afford(LAPLACE)
    assert not b.can_afford(dp_accounting.GaussianDpEvent(0.5))
    assert len(b.entries) == 1


# --- refusal ----------------------------------------------------------------------------


def test_refused_charge_changes_nothing(ledger_path):
    b = PrivacyBudget(1.0, DELTA, path=ledger_path)
    b.charge(dp_accounting.GaussianDpEvent(8.0), "noisy count")
    spent, before = b.spent(), read_bytes(ledger_path)
    with pytest.raises(BudgetExceededError) as info:
        b.charge(TRAIN, "training")
    message = str(info.value)
    for word in ("Requested", "spent", "remaining", "budget epsilon=1"):
        assert word in message
    assert b.spent() == spent
    assert read_bytes(ledger_path) == before
    assert len(b.entries) == 1
    with pytest.raises(BudgetExceededError):
        b.reserve(TRAIN, "training")
    assert read_bytes(ledger_path) == before


def test_unlimited_budget_records_everything():
    b = as_budget(None, default_delta=DELTA)
    assert b.epsilon == math.inf
    for _ in range(3):
        b.charge(TRAIN, "training")
    assert b.remaining() == math.inf
    assert b.spent() == pytest.approx(rdp_epsilon(TRAIN, TRAIN, TRAIN), rel=1e-12)
    assert b.report()["n_entries"] == 3


# --- reservations -----------------------------------------------------------------------


def test_reservation_counts_and_commit_with_smaller_event_lowers_spent():
    b = PrivacyBudget(5.0, DELTA)
    r = b.reserve(TRAIN, "training")
    assert isinstance(r, Reservation)
    assert b.spent() == pytest.approx(rdp_epsilon(TRAIN), rel=1e-12)
    assert [e.status for e in b.entries] == ["reserved"]
    r.commit(SMALL_TRAIN)
    assert b.spent() == pytest.approx(rdp_epsilon(SMALL_TRAIN), rel=1e-12)
    assert b.spent() < rdp_epsilon(TRAIN)
    (entry,) = b.entries
    assert entry.status == "committed"
    assert entry.event["count"] == 300
    assert entry.reserved_event["count"] == 1000  # the replacement is recorded as such
    with pytest.raises(RuntimeError, match="already committed"):
        r.commit()


def test_commit_replacement_that_does_not_fit_is_refused():
    b = PrivacyBudget(1.2, DELTA)
    r = b.reserve(SMALL_TRAIN, "training")
    with pytest.raises(BudgetExceededError):
        r.commit(TRAIN)
    assert r.status == "reserved"
    assert b.spent() == pytest.approx(rdp_epsilon(SMALL_TRAIN), rel=1e-12)


def test_cancel_removes_the_reservation():
    b = PrivacyBudget(5.0, DELTA)
    b.charge(LAPLACE, "mean")
    r = b.reserve(TRAIN, "training")
    r.cancel()
    assert r.status == "cancelled"
    assert b.spent() == pytest.approx(rdp_epsilon(LAPLACE), rel=1e-12)
    assert len(b.entries) == 1
    with pytest.raises(RuntimeError, match="already cancelled"):
        r.commit()


def test_context_manager_commits_on_normal_exit_and_on_exception(ledger_path):
    b = PrivacyBudget(5.0, DELTA, path=ledger_path)
    with b.reserve(LAPLACE, "mean"):
        assert b.entries[0].status == "reserved"
    assert b.entries[0].status == "committed"
    with pytest.raises(ZeroDivisionError), b.reserve(TRAIN, "training that crashes"):
        1 / 0  # noqa: B018
    assert [e.status for e in b.entries] == ["committed", "committed"]
    assert b.spent() == pytest.approx(rdp_epsilon(LAPLACE, TRAIN), rel=1e-12)


def test_commit_inside_context_manager_with_replacement():
    b = PrivacyBudget(5.0, DELTA)
    with b.reserve(TRAIN, "training") as r:
        r.commit(SMALL_TRAIN)  # early stopping
    assert b.spent() == pytest.approx(rdp_epsilon(SMALL_TRAIN), rel=1e-12)


# --- persistence ------------------------------------------------------------------------


def _fill(b):
    b.charge(TRAIN, "training")
    b.charge(LAPLACE, "mean age")
    b.reserve(SMALL_TRAIN, "fine-tuning").commit(dp_accounting.NoOpDpEvent())
    b.reserve(LAPLACE, "pending query")


def test_reload_round_trip_in_process(ledger_path):
    b = PrivacyBudget(5.0, DELTA, path=ledger_path)
    _fill(b)
    again = PrivacyBudget(5.0, DELTA, path=ledger_path)
    assert again.spent() == b.spent()
    assert again.entries == b.entries
    assert all(isinstance(e, LedgerEntry) for e in again.entries)
    assert [e.status for e in again.entries] == ["committed", "committed", "committed", "reserved"]
    assert PrivacyBudget.load(ledger_path).report() == b.report()


def test_reload_round_trip_in_subprocess(ledger_path):
    b = PrivacyBudget(5.0, DELTA, path=ledger_path)
    _fill(b)
    out = json.loads(run_worker("report", ledger_path))
    assert out["spent"] == b.spent()
    assert out["entries"] == [e.to_dict() for e in b.entries]


def test_pld_ledger_round_trip(ledger_path):
    b = PrivacyBudget(5.0, DELTA, path=ledger_path, accountant="pld")
    b.charge(TRAIN, "training")
    assert PrivacyBudget(5.0, DELTA, path=ledger_path, accountant="pld").spent() == b.spent()


def test_reopening_with_different_settings_is_refused(ledger_path):
    PrivacyBudget(5.0, DELTA, path=ledger_path).charge(LAPLACE, "mean")
    before = read_bytes(ledger_path)
    for kwargs in ({"epsilon": 6.0}, {"delta": 1e-6}, {"accountant": "pld"}):
        args = {"epsilon": 5.0, "delta": DELTA, "accountant": "rdp", **kwargs}
        name = next(iter(kwargs))
        with pytest.raises(ValueError, match=f"different budget: .*{name}="):
            PrivacyBudget(args["epsilon"], args["delta"], path=ledger_path, accountant=args["accountant"])
    assert read_bytes(ledger_path) == before


def test_reservation_of_killed_process_stays_and_counts(ledger_path):
    q, sigma, steps = 0.01, 1.1, 1000
    proc = subprocess.Popen(
        [sys.executable, WORKER, *map(str, ["reserve-and-hang", ledger_path, 5.0, DELTA, q, sigma, steps])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "RESERVED", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    b = PrivacyBudget(5.0, DELTA, path=ledger_path)
    (entry,) = b.entries
    assert entry.status == "reserved"
    assert entry.description == "training run"
    assert b.spent() >= rdp_epsilon(accounting.dp_sgd_event(q, sigma, steps)) * (1 - 1e-12)


def test_concurrent_processes_never_overspend(ledger_path):
    epsilon, sigma, n_workers, attempts = 1.5, 8.0, 3, 6
    gaussian = dp_accounting.GaussianDpEvent(sigma)
    affordable = 0
    while rdp_epsilon(*[gaussian] * (affordable + 1)) <= epsilon:
        affordable += 1
    assert 0 < affordable < n_workers * attempts  # the workers must run out together
    PrivacyBudget(epsilon, DELTA, path=ledger_path)
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, *map(str, ["charge", ledger_path, epsilon, DELTA, sigma, attempts])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n_workers)
    ]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "READY", p.stderr.read()
        for p in procs:  # release them all at once
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    accepted = sum(json.loads(out)["accepted"] for out, _ in outputs)
    assert accepted == affordable
    b = PrivacyBudget(epsilon, DELTA, path=ledger_path)
    assert len(b.entries) == affordable
    assert b.spent() <= epsilon + 1e-9
    assert b.spent() == pytest.approx(rdp_epsilon(*[gaussian] * affordable), rel=1e-12)


# --- corrupt and edited files -----------------------------------------------------------

CORRUPT = "is corrupt or was edited by hand; refusing to load it"


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # truncated
        lambda raw: b"this is not json",
        lambda raw: b"",
        lambda raw: b"[]",
    ],
    ids=["truncated", "not-json", "empty", "not-an-object"],
)
def test_corrupt_file_is_refused_and_left_alone(ledger_path, damage):
    PrivacyBudget(5.0, DELTA, path=ledger_path).charge(TRAIN, "training")
    with open(ledger_path, "wb") as f:
        f.write(damage(read_bytes(ledger_path)))
    before = read_bytes(ledger_path)
    with pytest.raises(ValueError, match=CORRUPT) as info:
        PrivacyBudget(5.0, DELTA, path=ledger_path)
    assert "restore it from backup" in str(info.value).lower()
    assert read_bytes(ledger_path) == before


def test_hand_edited_file_is_refused(ledger_path):
    b = PrivacyBudget(5.0, DELTA, path=ledger_path)
    b.charge(TRAIN, "training")
    state = json.loads(read_bytes(ledger_path))
    state["entries"][0]["event"]["count"] = 10  # pretend training was shorter
    edited = json.dumps(state).encode()
    with open(ledger_path, "wb") as f:
        f.write(edited)
    with pytest.raises(ValueError, match=CORRUPT + ".*checksum"):
        PrivacyBudget(5.0, DELTA, path=ledger_path)
    # An open ledger refuses too, for reads and for charges, and never rewrites the file.
    with pytest.raises(ValueError, match=CORRUPT):
        b.spent()
    with pytest.raises(ValueError, match=CORRUPT):
        b.charge(LAPLACE, "mean")
    assert read_bytes(ledger_path) == edited


def test_unknown_event_type_with_valid_checksum_is_refused(ledger_path):
    PrivacyBudget(5.0, DELTA, path=ledger_path).charge(LAPLACE, "mean")
    state = json.loads(read_bytes(ledger_path))
    state["entries"][0]["event"] = {"type": "MysteryDpEvent"}
    del state["sha256"]
    canonical = json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    state["sha256"] = hashlib.sha256(canonical.encode()).hexdigest()
    with open(ledger_path, "w") as f:
        json.dump(state, f)
    with pytest.raises(ValueError, match=CORRUPT + ".*MysteryDpEvent"):
        PrivacyBudget(5.0, DELTA, path=ledger_path)


# --- the file holds no data -------------------------------------------------------------


def test_file_holds_only_ledger_fields(ledger_path):
    b = PrivacyBudget(5.0, DELTA, path=ledger_path)
    b.charge(TRAIN, "DP-SGD training, 10 epochs")
    b.reserve(LAPLACE, "mean of column age")
    state = json.loads(read_bytes(ledger_path))
    assert set(state) == {"format", "version", "epsilon", "delta", "accountant", "entries", "sha256"}
    entry_keys = {"id", "status", "description", "timestamp", "committed_at", "event", "reserved_event"}
    assert all(set(e) == entry_keys for e in state["entries"])

    def leaves(event):
        for key, value in event.items():
            if isinstance(value, dict):
                yield from leaves(value)
            elif isinstance(value, list):
                for v in value:
                    yield from leaves(v)
            else:
                yield key, value

    for e in state["entries"]:
        for key, value in leaves(e["event"]):
            assert key in {"type", "noise_multiplier", "sampling_probability", "count"}
            assert isinstance(value, str if key == "type" else int | float)
    assert [e["description"] for e in state["entries"]] == ["DP-SGD training, 10 epochs", "mean of column age"]


def test_repr_and_report():
    b = PrivacyBudget(3.0, DELTA)
    b.charge(LAPLACE, "secret-looking description")
    text = repr(b)
    for part in ("epsilon=3", "delta=1e-05", "spent=", "remaining=", "accountant='rdp'"):
        assert part in text
    assert "secret-looking" not in text
    report = b.report()
    assert {"epsilon", "delta", "accountant", "spent", "remaining", "n_entries"} <= set(report)
    assert report["spent"] == b.spent() and report["n_entries"] == 1


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "name"),
    [
        ((0, DELTA), {}, ValueError, "epsilon"),
        ((-1.0, DELTA), {}, ValueError, "epsilon"),
        ((math.nan, DELTA), {}, ValueError, "epsilon"),
        (("1", DELTA), {}, TypeError, "epsilon"),
        ((True, DELTA), {}, TypeError, "epsilon"),
        ((1.0, 0.0), {}, ValueError, "delta"),
        ((1.0, 1.0), {}, ValueError, "delta"),
        ((1.0, "x"), {}, TypeError, "delta"),
        ((1.0, DELTA), {"accountant": "gdp"}, ValueError, "accountant"),
        ((1.0, DELTA), {"path": 3}, TypeError, "path"),
    ],
)
def test_bad_arguments_are_named(args, kwargs, error, name):
    with pytest.raises(error, match=f"^{name} must be"):
        PrivacyBudget(*args, **kwargs)


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(ValueError, match="path .*directory .* does not exist"):
        PrivacyBudget(1.0, DELTA, path=tmp_path / "no" / "such" / "ledger.json")


def test_bad_events_and_descriptions():
    b = PrivacyBudget(1.0, DELTA)
    with pytest.raises(TypeError, match="^event must be"):
        b.charge("gaussian")
    with pytest.raises(TypeError, match="^event must be"):
        b.charge(dp_accounting.NonPrivateDpEvent())
    with pytest.raises(TypeError, match="not supported by the 'rdp' accountant"):
        b.charge(dp_accounting.PoissonSampledDpEvent(0.1, LAPLACE))
    with pytest.raises(TypeError, match="^description must be"):
        b.charge(LAPLACE, description=42)
    with pytest.raises(ValueError, match="^description must be at most"):
        b.charge(LAPLACE, description="x" * 10_000)
    assert b.entries == []


def test_as_budget():
    b = PrivacyBudget(1.0, DELTA)
    assert as_budget(b, default_delta=1e-6) is b
    unlimited = as_budget(None, default_delta=1e-6)
    assert (unlimited.epsilon, unlimited.delta) == (math.inf, 1e-6)
    pair = as_budget((2.0, 1e-7), default_delta=1e-6)
    assert (pair.epsilon, pair.delta, pair.accountant) == (2.0, 1e-7, "rdp")
    for bad in (3.0, "eps", (1.0,), {"epsilon": 1}):
        with pytest.raises(TypeError, match="^budget must be"):
            as_budget(bad, default_delta=1e-6)
    with pytest.raises(ValueError, match="^delta must be"):
        as_budget((1.0, 2.0), default_delta=1e-6)
