"""Distributed DP-SGD on tf.distribute: MirroredStrategy on 2 logical CPUs, MultiWorkerMirroredStrategy on 2 processes.

conftest.py splits the CPU into 2 logical devices before TensorFlow initializes them.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import keras2_only, keras3_only

import op_tensorflow as opt
from op_tensorflow import accounting, clipping, coordination, distributed

DEVICES = ["/cpu:0", "/cpu:1"]
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def mirrored():
    assert len(tf.config.list_logical_devices("CPU")) >= 2, "conftest.py must split the CPU into 2 logical devices"
    return tf.distribute.MirroredStrategy(DEVICES)


def _classifier_data(n=300, features=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, features)).astype("float32")
    return x, (x[:, 0] + x[:, 1] > 0).astype("float32")


def _dp_model(strategy, *, optimizer=None, sigma=1.1, seed=3, layers=None):
    scope = strategy.scope() if strategy is not None else tf.init_scope()
    with scope:
        tf.keras.utils.set_random_seed(1)
        model = tf.keras.Sequential(
            layers or [tf.keras.Input((5,)), tf.keras.layers.Dense(8, activation="relu"), tf.keras.layers.Dense(1)]
        )
        dp_model = opt.PrivateKerasModel(model, l2_norm_clip=1.0, noise_multiplier=sigma, seed=seed)
        dp_model.compile(
            optimizer=optimizer() if optimizer else tf.keras.optimizers.Adam(0.01),
            loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
        )
    return dp_model


def _loader(x, y, batch_size, seed=7):
    return opt.PrivateDataLoader.from_arrays(
        x, y, batch_size, feature_bounds=(-1, 1), label_categories=[0, 1], epsilon=60.0, delta=1e-5, seed=seed
    )


# -- MirroredStrategy ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [40, 1])
def test_two_replicas_give_the_one_device_run(mirrored, batch_size):
    """Same seeds: the same samples, clipped sums and noise, so the same weights; the same epsilon and ledger.

    Batch size 1 (q = 1/150) leaves most replicas without an example in most steps.
    """
    x, y = _classifier_data(150 if batch_size == 1 else 300)
    runs = {}
    for name, strategy in (("one", None), ("two", mirrored)):
        dp_model = _dp_model(strategy)
        loader = _loader(x, y, batch_size)
        history = dp_model.fit(loader, epochs=2, verbose=0, steps_per_execution=8)
        runs[name] = (dp_model, loader, history)
    (one, one_loader, one_history), (two, two_loader, two_history) = runs["one"], runs["two"]
    assert two._run.replicas == 2 and one._run.strategy is None
    for a, b in zip(one.get_weights(), two.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5)
    assert not np.allclose(one.get_weights()[0], _dp_model(None).get_weights()[0])  # it did train
    assert two_history.history["epsilon"] == one_history.history["epsilon"]
    assert two_loader.budget.spent() == pytest.approx(one_loader.budget.spent(), rel=1e-12)
    planned = opt.get_privacy_budget(len(x), batch_size, 2, 1.1, 1e-5, verbose=False)
    assert two_loader.budget.spent() == pytest.approx(planned, rel=1e-9)
    assert two._trace_count == 1  # Poisson shards of every size (0 included) ran through one trace


def test_two_replicas_one_device_differ_when_seeds_differ(mirrored):
    """The comparison above can fail: another noise seed changes the run (so equal weights mean equal steps)."""
    x, y = _classifier_data()
    a, b = _dp_model(None, seed=3), _dp_model(mirrored, seed=4)
    a.fit(_loader(x, y, 40), epochs=1, verbose=0)
    b.fit(_loader(x, y, 40), epochs=1, verbose=0)
    assert not np.allclose(a.get_weights()[0], b.get_weights()[0], atol=2e-5)


def _noise_only_update(strategy, steps_x_rows=(1000, 100)):
    """The update of one epoch of SGD(lr=1) on a model whose every per-example gradient is 0: pure DP noise.

    A bias-free Dense on all-zero inputs has zero gradients, so w_after - w_before is minus the sum over the
    epoch's steps of noise / (q n): per coordinate N(0, steps (C sigma / (q n))^2) if the noise is counted once.
    """
    n, batch_size = steps_x_rows
    layers = [
        tf.keras.Input((50,)),
        tf.keras.layers.Dense(100, use_bias=False),  # 5000 values: drawn alone
        tf.keras.layers.Dense(1, use_bias=False),  # 100 values: a fused group of its own
    ]
    dp_model = _dp_model(strategy, optimizer=lambda: tf.keras.optimizers.SGD(1.0), sigma=1.0, layers=layers)
    before = np.concatenate([w.ravel() for w in dp_model.get_weights()])
    loader = opt.PrivateDataLoader.from_arrays(
        np.zeros((n, 50), "float32"), np.zeros(n, "float32"), batch_size, feature_bounds=(-1, 1),
        label_categories=[0, 1], seed=1,
    )  # fmt: skip
    dp_model.fit(loader, epochs=1, verbose=0)
    after = np.concatenate([w.ravel() for w in dp_model.get_weights()])
    expected_std = np.sqrt(loader.steps_in_epoch(0)) * 1.0 * 1.0 / batch_size  # C = sigma = 1, q n = batch_size
    return after - before, expected_std


def _std_matches(update: np.ndarray, expected_std: float) -> bool:
    """A chi-square test of the per-coordinate variance (mean 0 known): |z| < 5 over thousands of coordinates."""
    k = update.size
    chi2 = float(np.sum((update / expected_std) ** 2))
    return abs(chi2 - k) / np.sqrt(2 * k) < 5.0


def test_noise_is_counted_once_per_global_step(mirrored, monkeypatch):
    update, expected_std = _noise_only_update(mirrored)
    assert update.size == 50 * 100 + 100
    assert _std_matches(update, expected_std), np.std(update) / expected_std
    one_device, _ = _noise_only_update(None)
    assert _std_matches(one_device, expected_std)

    # The test can fail: with every replica drawing the step's noise (as TF Privacy's optimizers do in each
    # replica), the aggregated update's noise is counted twice and the same check rejects it.
    monkeypatch.setattr(distributed, "is_replica", lambda index: True)
    overcounted, _ = _noise_only_update(mirrored)
    assert np.std(overcounted) / expected_std > 1.35
    assert not _std_matches(overcounted, expected_std)


def test_noise_work_is_spread_over_the_chiefs_replicas():
    """Each variable's noise has exactly one owner; the largest go first, each to the least-loaded replica."""
    assert clipping.noise_groups([5000, 100]) == [[0], [1]]  # the model of the noise test: both replicas draw
    assert distributed.noise_owners([5000, 100], 2) == [0, 1]
    assert distributed.noise_owners([10, 10, 10, 10], 1) == [0, 0, 0, 0]
    sizes = [640, 64, 64 * 64, 64, 64 * 10, 10]
    owners = distributed.noise_owners(sizes, 3)
    loads = [sum(s for s, o in zip(sizes, owners, strict=True) if o == r) for r in range(3)]
    assert sorted(loads) == [704, 714, 4096] and set(owners) == {0, 1, 2}


def test_poisson_sample_is_shared_exactly_across_replicas(mirrored):
    """Per step: disjoint shards whose union is the one-device sample; rows at rate q, independent across steps."""
    n, batch_size, steps = 300, 30, 400
    q = batch_size / n
    rows = np.arange(n, dtype="float32")[:, None]
    loader = opt.PrivateDataLoader.from_arrays(
        rows, np.zeros(n, "float32"), batch_size, feature_bounds=(0, n), label_categories=[0, 1], seed=2
    )
    sample = loader._graph_sampler()
    seeds = tf.constant(np.random.default_rng(5).integers(0, 2**62, (steps, 2)), tf.int64)

    @tf.function
    def replica_rows(seed):
        return tf.cast(sample(seed)[0][:, 0], tf.int64)

    inclusion = np.zeros((steps, n), dtype=bool)
    empty_shards = 0
    for t in range(steps):
        shards = [r.numpy() for r in mirrored.experimental_local_results(mirrored.run(replica_rows, (seeds[t],)))]
        whole = replica_rows(seeds[t]).numpy()  # one device, same seed
        union = np.concatenate(shards)
        assert len(union) == len(set(union.tolist())), "shards overlap"
        np.testing.assert_array_equal(np.sort(union), whole)
        assert abs(len(shards[0]) - len(shards[1])) <= 1
        empty_shards += sum(len(s) == 0 for s in shards)
        inclusion[t, whole] = True
    total = inclusion.sum()
    assert abs(total - n * steps * q) < 5 * np.sqrt(n * steps * q * (1 - q))
    per_row = inclusion.sum(axis=0)  # each ~ Binomial(steps, q)
    chi2 = float(np.sum((per_row - steps * q) ** 2 / (steps * q * (1 - q))))
    assert abs(chi2 - n) < 5 * np.sqrt(2 * n)
    both = float(np.sum(inclusion[1:] & inclusion[:-1]))  # in step t and t + 1: q^2 per row and pair of steps
    pairs = n * (steps - 1)
    assert abs(both - pairs * q * q) < 5 * np.sqrt(pairs * q * q * (1 - q * q))
    assert empty_shards == 0  # at 15 examples per replica per step; the batch_size=1 fit covers empty shards


def test_callbacks_early_stop_and_predict_on_two_replicas(mirrored):
    """Callbacks see the epochs; a stop after 2 of 5 epochs charges exactly the steps that ran."""

    class StopAfterTwo(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 1

    x, y = _classifier_data()
    dp_model, loader = _dp_model(mirrored), _loader(x, y, 40)
    history = dp_model.fit(loader, epochs=5, verbose=0, callbacks=[StopAfterTwo()], validation_data=(x[:50], y[:50]))
    assert len(history.history["epsilon"]) == 2 and "val_loss" in history.history
    ran = loader.steps_in_epoch(0) + loader.steps_in_epoch(1)
    assert dp_model.privacy["steps"] == ran
    expected = accounting.epsilon_for_event(accounting.dp_sgd_event(loader.sampling_rate, 1.1, ran), 1e-5, "rdp")
    assert loader.budget.spent() == pytest.approx(expected, rel=1e-9)
    private_x, _ = opt.private_arrays(x[:20], y[:20], feature_bounds=(-1, 1), label_categories=[0, 1])
    assert isinstance(dp_model.predict(private_x), opt.PrivateDataFrame)  # private in, private out, as on one device


@keras3_only
@pytest.mark.parametrize("option", [{"clipnorm": 1.0}, {"global_clipnorm": 1.0}, {"clipvalue": 0.1}])
def test_keras3_optimizer_clipping_per_replica_is_refused(mirrored, option):
    """Keras 3 clips each replica's share before the sum: un-noised shares would leak through the clip."""
    x, y = _classifier_data()
    loader = _loader(x, y, 40)
    dp_model = _dp_model(mirrored, optimizer=lambda: tf.keras.optimizers.SGD(0.1, **option))
    with pytest.raises(ValueError, match=f"{next(iter(option))} cannot be used with 2 replicas on Keras 3"):
        dp_model.fit(loader, epochs=1, verbose=0)
    assert loader.budget.spent() == 0.0
    one_device = _dp_model(None, optimizer=lambda: tf.keras.optimizers.SGD(0.1, **option))
    one_device.fit(loader, epochs=1, verbose=0)  # on one device the option acts on the noisy update: allowed
    assert loader.budget.spent() > 0.0


@keras2_only
def test_keras2_optimizer_clipping_acts_after_the_sum(mirrored):
    """Keras 2 optimizers sum the replicas' shares first, then clip: the run equals the one-device run."""
    x, y = _classifier_data()
    weights = []
    for strategy in (None, mirrored):
        dp_model = _dp_model(strategy, optimizer=lambda: tf.keras.optimizers.SGD(0.5, clipnorm=0.05))
        dp_model.fit(_loader(x, y, 40), epochs=1, verbose=0)
        weights.append(dp_model.get_weights())
    for a, b in zip(*weights, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-6)


def test_run_settings_describe_models_keras_cannot_serialize():
    """The settings the workers compare: a custom layer without get_config still gets a description."""

    class NoConfig(tf.keras.layers.Layer):
        def __init__(self, other, **kwargs):  # a non-serializable argument: Keras cannot make its config
            super().__init__(**kwargs)
            self.other = other

        def call(self, inputs):
            return inputs

    layers = [tf.keras.Input((5,)), NoConfig(object()), tf.keras.layers.Dense(1)]
    x, y = _classifier_data()
    loader = _loader(x, y, 40)
    a, b = _dp_model(None, layers=list(layers)), _dp_model(None, layers=list(layers))
    b.l2_norm_clip = 2.0
    with pytest.raises(NotImplementedError):
        a.model.to_json()
    settings = coordination.run_settings(a, loader, 1, 8)
    assert "NoConfig" in settings["model"] and settings["l2_norm_clip"] == 1.0
    assert settings != coordination.run_settings(b, loader, 1, 8)
    a.fit(loader, epochs=1, verbose=0)  # one device never computes them


def test_unsupported_strategy_is_refused_before_the_ledger(mirrored):
    strategy = tf.distribute.experimental.CentralStorageStrategy(DEVICES, parameter_device="/cpu:0")
    x, y = _classifier_data()
    loader = _loader(x, y, 40)
    try:
        dp_model = _dp_model(strategy)
    except ValueError as err:  # refused as early as compile on this Keras
        message = str(err)
    else:
        with pytest.raises(ValueError) as caught:
            dp_model.fit(loader, epochs=1, verbose=0)
        message = str(caught.value)
    assert "CentralStorageStrategy" in message and "MirroredStrategy" in message
    assert loader.budget.spent() == 0.0


# -- MultiWorkerMirroredStrategy: 2 processes on 127.0.0.1 ----------------------------------------------------------
def _free_ports(k):
    sockets = [socket.socket() for _ in range(k)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _run_workers(tmp_path, mode, timeout=240):
    """Runs the two workers of tests/_multiworker.py; returns their return codes, outputs and JSON results."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    out = tmp_path / mode
    procs = []
    try:
        for index in range(2):
            config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            env = dict(os.environ, TF_CONFIG=json.dumps(config), TF_CPP_MIN_LOG_LEVEL="2")
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(HERE / "_multiworker.py"), str(out), mode],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    results = [json.loads(Path(f"{out}.{i}.json").read_text()) if Path(f"{out}.{i}.json").exists() else None
               for i in range(2)]  # fmt: skip
    return [p.returncode for p in procs], logs, results


def test_multi_worker_run_trains_and_only_the_chief_charges(tmp_path):
    codes, logs, (chief, worker) = _run_workers(tmp_path, "train")
    assert codes == [0, 0], logs
    # 1. one worker's data differ: all refuse before anything is spent
    for result in (chief, worker):
        assert result["mismatch"].startswith("ValueError") and "same private source" in result["mismatch"]
        assert result["mismatch_spent"] == 0.0
        assert result["other_clip"].startswith("ValueError") and "different settings" in result["other_clip"]
        assert result["other_clip_spent"] == 0.0
    # 2. the chief's reservation is refused: the worker refuses too, nothing is spent
    assert chief["too_large"].startswith("BudgetExceededError")
    assert worker["too_large"].startswith("DistributedTrainingError") and "did not reserve" in worker["too_large"]
    assert chief["too_large_spent"] == worker["too_large_spent"] == 0.0
    # 3. trains; the chief's ledger holds exactly the planned epsilon, the worker's ledger is never written
    assert chief["error"] is None and worker["error"] is None
    assert chief["accuracy"] >= 0.85 and worker["accuracy"] == chief["accuracy"]
    assert chief["spent"] == pytest.approx(chief["planned"], rel=1e-9)
    assert worker["spent"] == 0.0
    assert chief["privacy"]["epsilon"] == pytest.approx(chief["planned"], rel=1e-9)


def test_killed_worker_leaves_the_chiefs_ledger_charged_in_full(tmp_path):
    codes, logs, (chief, worker) = _run_workers(tmp_path, "die")
    assert codes[1] == -9 and worker is None  # SIGKILL mid-run
    assert codes[0] == 0, logs[0]
    assert chief["error"].startswith("DistributedTrainingError"), chief["error"]
    assert "failed or stopped responding during steps" in chief["error"]
    assert "stays charged" in chief["error"]
    assert chief["spent"] == pytest.approx(chief["planned"], rel=1e-9)  # the whole planned run
    assert chief["privacy"]["epsilon"] == pytest.approx(chief["planned"], rel=1e-9)


def test_readme_mirrored_example_runs(tmp_path):
    """The README's MirroredStrategy example, as written, in a fresh process (it configures the devices)."""
    readme = (HERE.parent / "README.md").read_text()
    section = readme.split("## Several devices and machines", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "MirroredStrategy" in code
    script = tmp_path / "mirrored_example.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    epsilon, accuracy = (float(v) for v in done.stdout.strip().splitlines()[-1].split())
    assert 0 < epsilon <= 3.0 and accuracy > 0.8
