"""Wearable heart-rate data in the layout of PPG-DaLiA's ``S1.pkl``, and the R blog's preprocessing.

The RStudio blog post "Differential Privacy with TensorFlow" (2019) trains a 1-D convnet to
estimate heart rate from the wrist signals of subject S1 of PPG-DaLiA (Reiss et al. 2019). The
real ``S1.pkl`` is 1.4 GB and needs a download, so :func:`synthetic_s1` generates a stand-in with
the same layout, sampling rates and units:

* ``signal/wrist/ACC``: accelerometer, 32 Hz, 3 axes, in 1/64 g (gravity has norm 64);
* ``signal/wrist/BVP``: blood volume pulse (PPG), 64 Hz;
* ``signal/wrist/EDA``: electrodermal activity, 4 Hz, in microsiemens;
* ``signal/wrist/TEMP``: skin temperature, 4 Hz, in degrees Celsius;
* ``label``: heart rate in bpm, one value every 2 s (from the ECG in the real data);
* ``activity``: the protocol's activity id at 4 Hz (0 transition, 1 sitting, 2 stairs,
  3 table soccer, 4 cycling, 5 driving, 6 lunch, 7 walking, 8 working), as in the real file.

:func:`load_s1` reads a real ``S1.pkl`` unchanged and :func:`make_sequences` is the blog's
preprocessing (2-s window averages, 12-step sliding sequences, a train/test split in time).

The synthetic subject follows PPG-DaLiA's protocol order with jittered durations. Heart rate is
a lagged response to activity intensity plus a slow "arousal" random walk, within 60-170 bpm.
The blog's features are 2-s *averages*, which keep only the slow part of each signal, so the
generator makes the slow parts informative, as they are physiologically: wrist posture (the
gravity direction in ACC) depends on the activity, the PPG baseline drops as heart rate rises
(vascular tone), EDA rises with arousal and exertion, and skin temperature falls with sustained
exertion. The pulse in BVP beats at the labelled heart rate (its phase integrates the
instantaneous frequency) and carries motion artefacts correlated with ACC during activity.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
from scipy import signal as sps

from op_tensorflow import _checks

__all__ = ["FEATURES", "RATES", "WINDOWS", "load_s1", "make_sequences", "sequences_to_frame", "synthetic_s1"]

#: Sampling rates (Hz) of the wrist signals; labels come every 2 s.
RATES = {"ACC": 32, "BVP": 64, "EDA": 4, "TEMP": 4}
#: Samples per 2-s label window, the blog's averaging windows.
WINDOWS = {"ACC": 64, "BVP": 128, "EDA": 8, "TEMP": 8}
#: Names of the 6 averaged features, in the blog's order (ACC, BVP, EDA, TEMP).
FEATURES = ["acc_x", "acc_y", "acc_z", "bvp", "eda", "temp"]
LABEL_SECONDS = 2

# Activity id -> (intensity for heart rate, wrist posture (gravity direction), cadence in Hz,
# motion amplitude in 1/64 g, irregularity of the motion, nominal minutes in the protocol).
_ACTIVITIES = {
    0: (0.40, (0.90, 0.15, 0.35), 1.7, 14.0, 0.2, 4.0),  # transition (walking between stations)
    1: (0.00, (0.10, 0.35, 0.93), 0.0, 1.0, 0.5, 10.0),  # sitting
    2: (0.85, (0.85, -0.20, 0.45), 1.6, 24.0, 0.3, 5.0),  # ascending/descending stairs
    3: (0.45, (0.15, 0.90, 0.35), 2.4, 28.0, 1.0, 5.0),  # table soccer
    4: (0.70, (0.45, 0.55, 0.70), 1.2, 7.0, 0.3, 8.0),  # cycling
    5: (0.10, (0.30, 0.70, 0.60), 0.0, 3.0, 1.0, 15.0),  # driving
    6: (0.15, (0.05, 0.55, 0.83), 0.3, 6.0, 0.8, 30.0),  # lunch break
    7: (0.55, (0.95, 0.05, 0.25), 1.8, 18.0, 0.2, 10.0),  # walking
    8: (0.05, (0.00, 0.20, 0.98), 0.0, 2.0, 0.6, 20.0),  # working at a desk
}
_PROTOCOL = [1, 2, 3, 4, 5, 6, 7, 8]


MAX_LABELS = 10**6  # about 23 days of 2-s labels, 1 GB of signals: far beyond a PPG-DaLiA subject (4603)


def _count(name: str, value, minimum: int, maximum: int = _checks.MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__}).")
    if not math.isfinite(value) or not float(value).is_integer() or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be an integer in [{minimum}, {maximum}], got {value!r}.")
    return int(value)


def _lowpass(x: np.ndarray, tau: float, axis: int = 0) -> np.ndarray:
    """First-order lag with time constant ``tau`` samples, started at the first value."""
    a = 1.0 / max(tau, 1.0)
    x = np.asarray(x, dtype=float)
    first = np.take(x, [0], axis=axis)
    return sps.lfilter([a], [1.0, a - 1.0], x - first, axis=axis) + first


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float, size=()) -> np.ndarray:
    """A stationary AR(1) process of ``n`` steps with innovation sd ``sd``."""
    shocks = rng.normal(0.0, sd, (n, *size))
    shocks[0] /= np.sqrt(1.0 - phi**2)  # start in the stationary distribution
    return sps.lfilter([1.0], [1.0, -phi], shocks, axis=0)


def _at_rate(per_label: np.ndarray, rate: int) -> np.ndarray:
    """Linear interpolation of per-label values (at window centres) to ``rate`` Hz samples."""
    n = per_label.shape[0]
    centres = LABEL_SECONDS * np.arange(n) + LABEL_SECONDS / 2
    t = (np.arange(n * LABEL_SECONDS * rate) + 0.5) / rate
    if per_label.ndim == 1:
        return np.interp(t, centres, per_label)
    return np.stack([np.interp(t, centres, per_label[:, j]) for j in range(per_label.shape[1])], axis=1)


def _schedule(rng: np.random.Generator, n: int) -> np.ndarray:
    """Activity id per label: the protocol in order, transitions between stations, walks at work."""
    ids, minutes = [], []
    for k, act in enumerate(_PROTOCOL):
        if k:
            ids.append(0)
            minutes.append(rng.uniform(2.0, 6.0))
        ids.append(act)
        minutes.append(_ACTIVITIES[act][5] * rng.uniform(0.8, 1.2))
    ends = np.round(np.cumsum(minutes) / np.sum(minutes) * n).astype(int)
    starts = np.concatenate([[0], ends[:-1]])
    schedule = np.repeat(np.array(ids), ends - starts)
    # People get up at work: two short walks (about 1-2 minutes each) during the last phase.
    work = starts[-1]
    span = n - work
    for _ in range(2):
        length = int(min(span // 4, rng.integers(30, 60)))
        if length > 0 and span > length:
            begin = work + int(rng.integers(0, span - length))
            schedule[begin : begin + length] = 7
    return schedule


def synthetic_s1(*, n_labels: int = 4603, seed: int = 0) -> dict:
    """A synthetic subject in PPG-DaLiA's ``S1.pkl`` layout, learnable by the blog's convnet.

    Args:
        n_labels: Number of 2-s heart-rate labels (S1 has 4603, about 2.5 hours), at most 10**6.
        seed: Seed of the generator; the same seed gives identical data.

    Returns:
        ``{"signal": {"wrist": {"ACC": (n*64, 3), "BVP": (n*128, 1), "EDA": (n*8, 1),
        "TEMP": (n*8, 1)}}, "label": (n,), "activity": (n*8, 1), "subject": "S1 (synthetic)"}``,
        float64 arrays at 32, 64, 4 and 4 Hz; ``label`` is the heart rate in bpm.
    """
    n = _count("n_labels", n_labels, 1, MAX_LABELS)
    seed = _count("seed", seed, 0)
    rng = np.random.default_rng(seed)
    schedule = _schedule(rng, n)
    ids = np.arange(len(_ACTIVITIES))
    intensity, cadence, amplitude, irregular = (
        np.array([_ACTIVITIES[a][j] for a in ids], dtype=float)[schedule] for j in (0, 2, 3, 4)
    )
    postures = np.array([_ACTIVITIES[a][1] for a in ids], dtype=float)

    # Posture: the activity's typical wrist orientation, jittered per bout and drifting within it.
    bout = np.concatenate([[0], np.cumsum(schedule[1:] != schedule[:-1])])
    bout_jitter = rng.normal(0.0, 0.12, (bout[-1] + 1, 3))
    posture = postures[schedule] + bout_jitter[bout]
    posture += _ar1(rng, n, 0.98, 0.015, (3,))
    posture = _lowpass(posture, 2.0)
    gravity = 64.0 * posture / np.linalg.norm(posture, axis=1, keepdims=True)

    # Heart rate (bpm per label): lagged exertion (30-s time constant) plus a slow arousal process.
    exertion = _lowpass(intensity * rng.uniform(0.9, 1.1, bout[-1] + 1)[bout], 15.0)
    arousal = _ar1(rng, n, 0.99, 0.7)
    heart_rate = np.clip(68.0 + 95.0 * exertion + arousal + rng.normal(0.0, 1.0, n), 60.0, 170.0)

    # ACC at 32 Hz: gravity plus periodic motion at the activity's cadence, irregular motion, sensor noise.
    fs = RATES["ACC"]
    cad = _at_rate(_lowpass(cadence, 2.0), fs)
    amp = _at_rate(_lowpass(amplitude, 2.0), fs)
    irr = _at_rate(irregular, fs)
    phase = 2 * np.pi * np.cumsum(cad) / fs
    periodic = np.stack(
        [
            0.8 * np.sin(phase) + 0.3 * np.sin(2 * phase + 0.7),
            0.5 * np.sin(phase + 1.1) + 0.25 * np.sin(2 * phase + 2.0),
            0.6 * np.sin(phase + 2.3) + 0.2 * np.sin(2 * phase + 0.3),
        ],
        axis=1,
    )
    jerky = sps.lfilter([0.3], [1.0, -0.7], rng.normal(0.0, 1.0, (len(phase), 3)), axis=0)
    motion = amp[:, None] * ((cad > 0.05)[:, None] * periodic + (0.3 + irr[:, None]) * jerky)
    acc = _at_rate(gravity, fs) + motion + rng.normal(0.0, 0.6, motion.shape)

    # BVP at 64 Hz: a pulse wave whose phase integrates the heart rate, respiration, a baseline that
    # falls as heart rate rises (vascular tone), and motion artefacts correlated with ACC.
    fs = RATES["BVP"]
    hr = _at_rate(heart_rate, fs)
    beat = np.mod(2 * np.pi * np.cumsum(hr / 60.0) / fs + rng.uniform(0, 2 * np.pi), 2 * np.pi)
    theta = np.linspace(0, 2 * np.pi, 256, endpoint=False)

    def template(x):
        return np.exp(-((x - 1.3) ** 2) / (2 * 0.35**2)) + 0.45 * np.exp(-((x - 3.3) ** 2) / (2 * 0.5**2))

    pulse = template(beat) - template(theta).mean()
    ex64 = _at_rate(exertion, fs)
    pulse_amp = 110.0 * (1.0 - 0.35 * ex64) * np.exp(_at_rate(_ar1(rng, n, 0.995, 0.02), fs))
    breathing = 2 * np.pi * np.cumsum(0.25 + 0.2 * ex64) / fs
    baseline = -0.45 * (hr - 75.0) + _at_rate(_ar1(rng, n, 0.98, 1.5), fs)
    artefact = np.repeat(motion[:, 0] + 0.5 * motion[:, 2], 2) * 1.2 * (0.2 + ex64)
    bvp = pulse_amp * pulse + 12.0 * np.sin(breathing) + baseline + artefact + rng.normal(0.0, 2.0, len(hr))

    # EDA and skin temperature at 4 Hz.
    fs = RATES["EDA"]
    tonic = 0.6 * np.exp(0.06 * arousal) + 1.4 * _lowpass(intensity, 60.0) + 0.3 * np.exp(_ar1(rng, n, 0.999, 0.01))
    scr_rate = (0.03 + 0.05 * _at_rate(exertion, fs) + 0.01 * np.clip(_at_rate(arousal, fs), 0, None)) / fs
    impulses = (rng.random(n * LABEL_SECONDS * fs) < scr_rate) * rng.gamma(2.0, 0.08, n * LABEL_SECONDS * fs)
    kernel = np.exp(-np.arange(0, 20 * fs) / (4.0 * fs)) - np.exp(-np.arange(0, 20 * fs) / (0.8 * fs))
    phasic = sps.lfilter(kernel / kernel.max(), [1.0], impulses)
    eda = np.clip(_at_rate(tonic, fs) + phasic + rng.normal(0.0, 0.005, len(phasic)), 0.01, None)
    skin = 33.4 + np.cumsum(rng.normal(0.0, 0.004, n)) - 1.6 * _lowpass(intensity, 150.0) + 0.04 * arousal / 5.0
    temp = _at_rate(skin, fs) + rng.normal(0.0, 0.01, n * LABEL_SECONDS * fs)

    activity = np.repeat(schedule, LABEL_SECONDS * RATES["EDA"]).astype(float)
    return {
        "signal": {
            "wrist": {
                "ACC": acc,
                "BVP": bvp[:, None],
                "EDA": eda[:, None],
                "TEMP": temp[:, None],
            }
        },
        "label": heart_rate,
        "activity": activity[:, None],
        "subject": "S1 (synthetic)",
    }


def load_s1(path) -> dict:
    """Loads a PPG-DaLiA subject file (e.g. ``S1.pkl``) unchanged.

    The files are Python 2 pickles, hence ``encoding="latin1"``. From R, reticulate's
    ``py_load_object(path, encoding = "latin1")`` (the blog's way) gives the same content.
    Unpickling runs code chosen by whoever wrote the file: load only files you trust, such as
    the dataset from the UCI Machine Learning Repository.

    Raises:
        ValueError: The file does not hold the S1 layout (``signal/wrist`` and ``label``).
    """
    path = _checks.file_path("path", path, "S1.pkl file")
    with open(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")  # noqa: S301 - the user's own data file
    _check_layout(data, f"path {path!r}")
    return data


def _check_layout(s1, what: str) -> None:
    if not isinstance(s1, dict) or "label" not in s1 or not isinstance(s1.get("signal"), dict):
        raise ValueError(f"{what} does not hold a PPG-DaLiA subject (a dict with 'signal' and 'label').")
    wrist = s1["signal"].get("wrist")
    missing = [k for k in WINDOWS if not isinstance(wrist, dict) or k not in wrist]
    if missing:
        raise ValueError(
            f"{what}: signal['wrist'] lacks {missing}; expected the PPG-DaLiA wrist signals {list(WINDOWS)}."
        )


def window_averages(s1: dict) -> np.ndarray:
    """The blog's downsampling: one row per 2-s label, averages of 64/128/8/8 ACC/BVP/EDA/TEMP samples.

    Signals longer than ``len(label)`` windows are cut to that length (the real S1 has a few
    seconds more signal than labels). Returns a float32 array ``(n_labels, 6)`` with columns
    :data:`FEATURES`.
    """
    _check_layout(s1, "s1")
    n = np.asarray(s1["label"]).size
    parts = []
    for key, window in WINDOWS.items():
        raw = np.asarray(s1["signal"]["wrist"][key], dtype=np.float64)
        raw = raw.reshape(raw.shape[0], -1) if raw.ndim > 1 else raw.reshape(-1, 1)
        if raw.shape[0] < n * window:
            raise ValueError(
                f"signal['wrist'][{key!r}] has {raw.shape[0]} samples, fewer than {n} labels x {window} samples "
                "per 2-s window; the signals and labels do not match."
            )
        parts.append(raw[: n * window].reshape(n, window, raw.shape[1]).mean(axis=1))
    return np.concatenate(parts, axis=1).astype(np.float32)


def _sequences(features: np.ndarray, num_timesteps: int) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(features, num_timesteps, axis=0)  # (m, 6, T)
    return np.ascontiguousarray(windows.transpose(0, 2, 1))


def make_sequences(s1: dict, *, num_timesteps: int = 12, train_max: int = 4000) -> dict:
    """The blog's preprocessing of a PPG-DaLiA subject for a 1-D convnet.

    2-s window averages of ACC (64 samples), BVP (128), EDA (8) and TEMP (8) give one row of 6
    features per label. The first ``train_max`` rows are the training part and the rest the test
    part; each part is cut into sliding sequences of ``num_timesteps`` rows (shift 1) on its own,
    so no sequence spans both. A sequence's target is the label of its last step, so the first
    ``num_timesteps - 1`` labels of each part have no sequence: with S1's 4603 labels there are
    ``4000 - 12 + 1 = 3989`` training and ``603 - 12 + 1 = 592`` test sequences.

    Args:
        s1: A subject as returned by :func:`load_s1` or :func:`synthetic_s1` (arrays or nested lists).
        num_timesteps: Sequence length (>= 1).
        train_max: Number of 2-s observations used for training.

    Returns:
        A dict of float32 arrays ``x_train (n_train, T, 6)``, ``y_train (n_train,)``,
        ``x_test (n_test, T, 6)``, ``y_test (n_test,)``, and ``feature_names``.
    """
    num_timesteps = _count("num_timesteps", num_timesteps, 1)
    train_max = _count("train_max", train_max, 1)
    features = window_averages(s1)
    label = np.asarray(s1["label"], dtype=np.float64).reshape(-1).astype(np.float32)
    n = len(label)
    if train_max < num_timesteps or n - train_max < num_timesteps:
        raise ValueError(
            f"train_max must leave at least num_timesteps={num_timesteps} observations on each side of the split "
            f"(there are {n}), got train_max={train_max}."
        )
    return {
        "x_train": _sequences(features[:train_max], num_timesteps),
        "y_train": label[num_timesteps - 1 : train_max].copy(),
        "x_test": _sequences(features[train_max:], num_timesteps),
        "y_test": label[train_max + num_timesteps - 1 :].copy(),
        "feature_names": list(FEATURES),
    }


def _float_array(name: str, values) -> np.ndarray:
    try:
        with np.errstate(over="raise"):
            return np.asarray(values, dtype=np.float32)
    except FloatingPointError:
        raise ValueError(f"{name} holds values beyond float32's range (about 3.4e38).") from None
    except (TypeError, ValueError, OverflowError) as err:
        raise TypeError(f"{name} must be a numeric array, got {type(values).__name__} ({err}).") from None


def sequences_to_frame(x, y, *, label: str = "heart_rate"):
    """Flattens sequences ``(n, T, k)`` to a pandas DataFrame of ``T*k`` columns plus the label.

    Columns are in row-major order (``t01_acc_x, t01_acc_y, ..., t12_temp``), so
    ``PrivateDataLoader(..., feature_shape=(T, k))`` restores the sequences.
    """
    import pandas as pd

    if not isinstance(label, str):
        raise TypeError(f"label must be a str naming the label column, got {type(label).__name__}.")
    x, y = _float_array("x", x), _float_array("y", y)
    if x.ndim != 3:
        raise ValueError(f"x must have 3 dimensions (n, timesteps, features), got shape {x.shape}.")
    y = y.reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"x has {len(x)} sequences but y has {len(y)} labels.")
    n, steps, k = x.shape
    names = FEATURES if k == len(FEATURES) else [f"f{j + 1}" for j in range(k)]
    width = max(2, len(str(steps)))
    columns = [f"t{t + 1:0{width}d}_{name}" for t in range(steps) for name in names]
    frame = pd.DataFrame(x.reshape(n, steps * k), columns=columns)
    frame[label] = y
    return frame
