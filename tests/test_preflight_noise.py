"""Fitting many models in one session logs no tf.function retracing warning about the preflight's checks.

TensorFlow counts traces per Python function across closures and warns from the sixth: each fit of a new
model traces the preflight's checks once, by design. The warning is counted per process, so the fits run
in a fresh interpreter; a retracing function of the script's own afterwards shows that the capture sees
the warning.
"""

import subprocess
import sys

import pytest

SCRIPT = r"""
import sys
import numpy as np, pandas as pd, tensorflow as tf
import op_tensorflow as ot

rng = np.random.default_rng(0)
frame = pd.DataFrame(rng.normal(size=(60, 3)), columns=list("abc")).assign(y=rng.normal(size=60))
pdf = ot.PrivateDataFrame(frame, budget=(1000.0, 1e-6))
loader = ot.PrivateDataLoader(pdf[list("abc")], pdf["y"], batch_size=20, seed=0)
for i in range(7):
    inputs = tf.keras.Input((3,))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(1)(tf.keras.layers.Dense(4)(inputs)))
    dp_model = ot.PrivateKerasModel(model, 1.0, 1.1, seed=i)
    dp_model.compile(optimizer="sgd", loss="mse")
    dp_model.fit(loader, epochs=1, verbose=0)
print("FITS DONE", dp_model.clipping_plan.path, flush=True)
print("-- MARK --", file=sys.stderr, flush=True)
for shape in range(1, 9):
    tf.function(lambda v: v * 2)(tf.zeros([shape]))
"""


@pytest.mark.slow
def test_seven_fits_log_no_retracing_warning_about_the_preflight(tmp_path):
    script = tmp_path / "fits.py"
    script.write_text(SCRIPT)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "FITS DONE ghost" in run.stdout
    during_fits, after = run.stderr.split("-- MARK --")
    assert "triggered tf.function retracing" not in during_fits, during_fits[-3000:]
    assert "triggered tf.function retracing" in after  # other retracing warnings still show
