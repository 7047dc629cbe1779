"""op_tensorflow.ppg: the synthetic PPG-DaLiA subject, load_s1 and the blog's preprocessing."""

import pickle
import warnings

import numpy as np
import pytest

from op_tensorflow import ppg

N = 4603


@pytest.fixture(scope="module")
def s1():
    return ppg.synthetic_s1()


@pytest.fixture(scope="module")
def seqs(s1):
    return ppg.make_sequences(s1)


def test_layout_shapes_and_rates(s1):
    wrist = s1["signal"]["wrist"]
    assert set(wrist) == {"ACC", "BVP", "EDA", "TEMP"}
    assert wrist["ACC"].shape == (N * 64, 3)
    assert wrist["BVP"].shape == (N * 128, 1)
    assert wrist["EDA"].shape == (N * 8, 1)
    assert wrist["TEMP"].shape == (N * 8, 1)
    assert s1["label"].shape == (N,)
    assert s1["activity"].shape == (N * 8, 1)
    assert s1["subject"] == "S1 (synthetic)"
    for key, window in ppg.WINDOWS.items():
        assert window == ppg.RATES[key] * 2  # samples per 2-s label
        assert wrist[key].dtype == np.float64 and np.isfinite(wrist[key]).all()
    # Physiological ranges: heart rate, gravity in 1/64 g, EDA in microsiemens, skin temperature.
    assert 60 <= s1["label"].min() and s1["label"].max() <= 170
    assert s1["label"].max() - s1["label"].min() > 50  # rest and exertion
    mean_norm = np.linalg.norm(wrist["ACC"].reshape(N, 64, 3).mean(axis=1), axis=1)
    assert np.median(mean_norm) == pytest.approx(64, rel=0.1)
    assert 0 < wrist["EDA"].min() and wrist["EDA"].max() < 10
    assert 30 < wrist["TEMP"].min() and wrist["TEMP"].max() < 36
    assert set(np.unique(s1["activity"])) <= set(range(9))


def test_small_sizes_and_argument_checks():
    small = ppg.synthetic_s1(n_labels=50, seed=3)
    assert small["signal"]["wrist"]["BVP"].shape == (50 * 128, 1)
    assert small["label"].shape == (50,)
    with pytest.raises(ValueError, match="n_labels"):
        ppg.synthetic_s1(n_labels=0)
    with pytest.raises(TypeError, match="seed"):
        ppg.synthetic_s1(seed="a")


def test_deterministic_by_seed(s1):
    again = ppg.synthetic_s1(seed=0)
    other = ppg.synthetic_s1(seed=1)
    for key in ppg.WINDOWS:
        np.testing.assert_array_equal(again["signal"]["wrist"][key], s1["signal"]["wrist"][key])
    np.testing.assert_array_equal(again["label"], s1["label"])
    assert not np.allclose(other["label"], s1["label"])


def test_bvp_pulse_follows_the_label(s1):
    """At rest the dominant BVP frequency is the labelled heart rate."""
    bvp = s1["signal"]["wrist"]["BVP"][:, 0]
    activity = s1["activity"][::8, 0]
    errors = []
    for i in range(8, N - 8, 37):
        if activity[i - 4 : i + 4].max() not in (1, 5, 8) or activity[i - 4 : i + 4].min() != activity[i]:
            continue  # sitting, driving, working only: little motion
        seg = bvp[(i - 3) * 128 : (i + 4) * 128]  # 14 s centred on label i
        seg = (seg - seg.mean()) * np.hanning(len(seg))
        spectrum = np.abs(np.fft.rfft(seg, n=16384))
        freqs = np.fft.rfftfreq(16384, 1 / 64)
        band = (freqs > 0.9) & (freqs < 3.0)
        errors.append(abs(60 * freqs[band][np.argmax(spectrum[band])] - s1["label"][i]))
    assert len(errors) > 20
    assert np.median(errors) < 3


def test_motion_artefacts_follow_acc_in_activity(s1):
    acc = s1["signal"]["wrist"]["ACC"].reshape(N, 64, 3)
    activity = s1["activity"][::8, 0]
    motion = acc.std(axis=1).sum(axis=1)
    moving, still = np.isin(activity, (2, 7)), np.isin(activity, (1, 8))
    assert motion[moving].mean() > 5 * motion[still].mean()
    # Within each 2-s window, BVP follows the ACC motion while moving (artefacts), not at rest.
    bvp = s1["signal"]["wrist"]["BVP"][:, 0].reshape(N, 128)
    motion_64hz = np.repeat(acc[:, :, 0] + 0.5 * acc[:, :, 2], 2, axis=1)  # 32 Hz -> 64 Hz
    bvp = bvp - bvp.mean(axis=1, keepdims=True)
    motion_64hz = motion_64hz - motion_64hz.mean(axis=1, keepdims=True)
    active = np.isin(activity, (2, 3, 7))
    assert np.corrcoef(bvp[active].ravel(), motion_64hz[active].ravel())[0, 1] > 0.3
    assert abs(np.corrcoef(bvp[still].ravel(), motion_64hz[still].ravel())[0, 1]) < 0.1


def test_load_s1_round_trip(tmp_path, s1):
    path = tmp_path / "S1.pkl"
    with open(path, "wb") as f:
        pickle.dump(s1, f, protocol=2)
    loaded = ppg.load_s1(path)
    assert loaded["subject"] == s1["subject"]
    for key in ppg.WINDOWS:
        np.testing.assert_array_equal(loaded["signal"]["wrist"][key], s1["signal"]["wrist"][key])
    np.testing.assert_array_equal(loaded["label"], s1["label"])
    bad = tmp_path / "bad.pkl"
    with open(bad, "wb") as f:
        pickle.dump({"label": [1.0]}, f)
    with pytest.raises(ValueError, match="PPG-DaLiA"):
        ppg.load_s1(bad)


def test_make_sequences_shapes_and_targets(s1, seqs):
    assert seqs["x_train"].shape == (3989, 12, 6)
    assert seqs["y_train"].shape == (3989,)
    assert seqs["x_test"].shape == (592, 12, 6)
    assert seqs["y_test"].shape == (592,)
    assert all(seqs[k].dtype == np.float32 for k in ("x_train", "y_train", "x_test", "y_test"))
    assert seqs["feature_names"] == ["acc_x", "acc_y", "acc_z", "bvp", "eda", "temp"]
    avg = ppg.window_averages(s1)
    label = s1["label"].astype(np.float32)
    # The target is the label of each sequence's last step; sequences slide by one.
    np.testing.assert_array_equal(seqs["y_train"], label[11:4000])
    np.testing.assert_array_equal(seqs["y_test"], label[4011:])
    np.testing.assert_array_equal(seqs["x_train"][0], avg[:12])
    np.testing.assert_array_equal(seqs["x_train"][-1, -1], avg[3999])
    np.testing.assert_array_equal(seqs["x_train"][5, 1:], seqs["x_train"][6, :-1])
    # Test sequences start after the split: no overlap with training.
    np.testing.assert_array_equal(seqs["x_test"][0], avg[4000:4012])
    np.testing.assert_array_equal(seqs["x_test"][-1, -1], avg[-1])
    # The window averages are the blog's: ACC over 64 samples, BVP over 128.
    acc = s1["signal"]["wrist"]["ACC"]
    np.testing.assert_allclose(avg[7, :3], acc[7 * 64 : 8 * 64].mean(axis=0), rtol=1e-5)
    bvp = s1["signal"]["wrist"]["BVP"][:, 0]
    np.testing.assert_allclose(avg[7, 3], bvp[7 * 128 : 8 * 128].mean(), rtol=1e-4, atol=1e-4)


def test_make_sequences_cuts_longer_signals_and_checks_sizes(s1):
    longer = {"signal": {"wrist": {}}, "label": s1["label"]}
    for key, window in ppg.WINDOWS.items():  # the real S1 has ~3 windows more signal than labels
        sig = s1["signal"]["wrist"][key]
        longer["signal"]["wrist"][key] = np.concatenate([sig, sig[: 3 * window]])
    out = ppg.make_sequences(longer, num_timesteps=5, train_max=100)
    assert out["x_train"].shape == (96, 5, 6) and out["x_test"].shape == (N - 100 - 4, 5, 6)
    shorter = {"signal": {"wrist": dict(s1["signal"]["wrist"])}, "label": s1["label"]}
    shorter["signal"]["wrist"]["EDA"] = shorter["signal"]["wrist"]["EDA"][:-1]
    with pytest.raises(ValueError, match="EDA"):
        ppg.make_sequences(shorter)
    with pytest.raises(ValueError, match="train_max"):
        ppg.make_sequences(s1, train_max=N - 3)
    with pytest.raises(ValueError, match="signal"):
        ppg.make_sequences({"label": [1.0]})


def test_sequences_to_frame_feeds_the_loader(seqs):
    import op_tensorflow as ot
    from op_tensorflow.frame import _raw

    frame = ppg.sequences_to_frame(seqs["x_train"], seqs["y_train"])
    assert frame.shape == (3989, 73)
    first = ["t01_acc_x", "t01_acc_y", "t01_acc_z", "t01_bvp", "t01_eda", "t01_temp", "t02_acc_x"]
    assert list(frame.columns[:7]) == first
    assert frame.columns[-1] == "heart_rate"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ot.PrivacyWarning)
        pdf = ot.PrivateDataFrame(frame)
        loader = ot.PrivateDataLoader(pdf[list(frame.columns[:-1])], pdf["heart_rate"], 32, feature_shape=(12, 6))
    assert loader.input_shape == (12, 6)
    np.testing.assert_array_equal(loader._x, seqs["x_train"])  # row-major flattening restores the sequences
    np.testing.assert_array_equal(_raw(pdf["heart_rate"]).to_numpy(), seqs["y_train"])


@pytest.mark.slow
def test_a_small_convnet_learns(seqs):
    """A short non-private fit of a small convnet beats predicting the mean heart rate."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    layers = tf.keras.layers
    norm = layers.Normalization(axis=-1)
    norm.adapt(seqs["x_train"].reshape(-1, 6))
    model = tf.keras.Sequential(
        [
            layers.Input((12, 6)),
            norm,
            layers.Conv1D(32, 3, activation="relu"),
            layers.Conv1D(64, 5, activation="relu"),
            layers.GlobalAveragePooling1D(),
            layers.Dense(64, activation="relu"),
            layers.Dense(1),
        ]
    )
    mean, sd = seqs["y_train"].mean(), seqs["y_train"].std()
    model.compile(loss="mse", optimizer="adam")
    model.fit(seqs["x_train"], (seqs["y_train"] - mean) / sd, batch_size=32, epochs=5, verbose=0)
    predicted = model.predict(seqs["x_test"], verbose=0)[:, 0] * sd + mean
    mae = np.abs(predicted - seqs["y_test"]).mean()
    trivial = np.abs(mean - seqs["y_test"]).mean()  # predicting the training mean: about 19 bpm
    oracle_mean = np.abs(seqs["y_test"].mean() - seqs["y_test"]).mean()  # knowing the test mean: about 10 bpm
    assert mae < 0.5 * trivial
    assert mae < 0.7 * oracle_mean  # about 3.5-4.5 bpm over seeds
