"""Shared fixtures of the interop tests: paths of what they drive, and safetensors' numpy loader
taught the OCP 8-bit float dtypes (it looks them up on numpy, which has none; ml_dtypes has them)."""
import os
import subprocess

import ml_dtypes
import numpy as np
import pytest

np.float8_e4m3fn = ml_dtypes.float8_e4m3fn
np.float8_e8m0fnu = ml_dtypes.float8_e8m0fnu


@pytest.fixture(scope="session")
def fp8rl_bin():
    path = os.environ.get("FP8RL")
    if not path or not os.path.exists(path):
        pytest.fail("FP8RL (path of the fp8rl binary) is not set; run through ctest / make test")
    return path


@pytest.fixture
def run(fp8rl_bin):
    """Runs `fp8rl ARGS...`; returns the CompletedProcess (text mode)."""

    def _run(*args, check=True):
        p = subprocess.run([fp8rl_bin, *map(str, args)], capture_output=True, text=True, timeout=600)
        if check and p.returncode != 0:
            raise AssertionError(f"fp8rl {' '.join(map(str, args))} failed ({p.returncode}):\n"
                                 f"{p.stdout}\n{p.stderr}")
        return p

    return _run
