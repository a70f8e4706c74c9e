"""benchmarks/gpu_check.sh stops at the first thing that does not work:
exit 1 and one line naming it."""

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="on a GPU machine the script runs for real"
)


def gpu_check(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", str(tmp_path / "out"), *args],
        cwd=REPO,
        text=True,
        capture_output=True,
        env={**os.environ, "PYTHON": sys.executable, **env},
        timeout=120,
    )


def test_without_a_gpu_it_fails_at_once_with_one_line(tmp_path):
    proc = gpu_check(tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "gpu_check: FAILED at gpu: AssertionError: no CUDA GPU visible"
    ]


def test_missing_data_is_named(tmp_path):
    proc = gpu_check(tmp_path, str(tmp_path / "nowhere"), DEVICE="cpu")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("gpu_check: FAILED at data: ")
        and "MNIST/raw/train-images" in lines[0]
    )
