"""The compute_dp_sgd_privacy console script, run as an installed command."""

import os
import shutil
import subprocess
import sys

import pytest

BLOG_ARGS = ["--N=3989", "--batch_size=32", "--noise_multiplier=1.1", "--epochs=20"]


def run_cli(*args):
    exe = shutil.which("compute_dp_sgd_privacy", path=os.path.dirname(sys.executable))
    assert exe, "console script compute_dp_sgd_privacy is not installed next to this python"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


def test_blog_sentence_current_conversion():
    res = run_cli(*BLOG_ARGS)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == (
        "DP-SGD with sampling rate = 0.802% and noise_multiplier = 1.1 iterated over 2494 steps "
        "satisfies differential privacy with eps = 2.37 and delta = 1e-06."
    )
    assert lines[1].startswith("(RDP accountant, current RDP-to-DP conversion")


def test_blog_sentence_classic_conversion_reproduces_273():
    res = run_cli(*BLOG_ARGS, "--conversion=classic", "--delta=1e-6")
    assert res.returncode == 0, res.stderr
    assert "eps = 2.73 and delta = 1e-06." in res.stdout
    assert "classic" in res.stdout


def test_pld_accountant():
    res = run_cli(*BLOG_ARGS, "--accountant=pld")
    assert res.returncode == 0, res.stderr
    assert "eps = 2.17 and delta = 1e-06." in res.stdout
    assert "(PLD accountant)" in res.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--N=10", "--batch_size=32", "--noise_multiplier=1.1", "--epochs=20"], "batch_size must be <= sample_size"),
        ([*BLOG_ARGS, "--delta=2"], "target_delta"),
        (["--N=3989", "--batch_size=32", "--noise_multiplier=-1", "--epochs=20"], "noise_multiplier"),
        ([*BLOG_ARGS, "--accountant=moments"], "accountant"),
    ],
)
def test_bad_input_exits_2_with_message(args, needle):
    res = run_cli(*args)
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
