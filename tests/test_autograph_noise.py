"""fit logs no AutoGraph warning about ``os.path.commonprefix`` (from tensorflow-privacy's einsum utilities).

AutoGraph warns once per process, so the fit runs in a fresh interpreter; the same interpreter then converts
a function calling ``commonprefix`` itself, which shows that the warning would be seen in its stderr.
"""

import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import os, sys
import numpy as np, pandas as pd, tensorflow as tf
import op_tensorflow as ot

rng = np.random.default_rng(0)
frame = pd.DataFrame(rng.normal(size=(120, 4)), columns=list("abcd")).assign(y=rng.normal(size=120))
pdf = ot.PrivateDataFrame(frame, budget=(100.0, 1e-6))
loader = ot.PrivateDataLoader(pdf[list("abcd")], pdf["y"], batch_size=20, seed=0)
inputs = tf.keras.Input((4,))
hidden = tf.keras.layers.EinsumDense("ab,bc->ac", output_shape=8, bias_axes="c")(inputs)
model = tf.keras.Model(inputs, tf.keras.layers.Dense(1)(tf.keras.layers.Dense(8)(hidden)))
dp_model = ot.PrivateKerasModel(model, 1.0, 1.1, seed=0)
dp_model.compile(optimizer="sgd", loss="mse")
dp_model.fit(loader, epochs=1, verbose=0)
print("FIT DONE", dp_model.clipping_plan.path, flush=True)
print("-- MARK --", file=sys.stderr, flush=True)

@tf.function
def control(x):
    os.path.commonprefix(["ab", "ac"])
    return x

control(tf.constant(1.0))
"""


@pytest.mark.slow
def test_fit_logs_no_autograph_warning_about_commonprefix(tmp_path):
    script = tmp_path / "fit_once.py"  # a file: AutoGraph converts only functions whose source it can read
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOGRAPH")}
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "FIT DONE ghost" in run.stdout  # the Dense layers took the registry (einsum) path
    during_fit, after = run.stderr.split("-- MARK --")
    assert "commonprefix" not in during_fit, during_fit[-3000:]
    assert "AutoGraph could not transform" not in during_fit
    assert "AutoGraph could not transform <function commonprefix" in after  # the capture sees the warning
