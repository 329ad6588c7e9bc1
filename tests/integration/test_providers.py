"""Execution providers: the check says passed, failed or not run, never a silent pass; fallback is reported."""

from __future__ import annotations

import subprocess
import sys

import onnxruntime as ort
import pytest

from plantwatch.inference.providers import check


def test_cpu_provider_passes_its_own_check():
    assert check("cpu")["result"] == "passed"


@pytest.mark.parametrize("provider, ort_name", [("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")])
def test_gpu_provider_check(provider, ort_name):
    verdict = check(provider)
    if ort_name not in ort.get_available_providers():
        assert verdict["result"] == "not run" and "falls back to cpu" in verdict["reason"]
        pytest.skip(f"{provider}: not run, no {ort_name} in this onnxruntime ({ort.get_available_providers()})")
    assert verdict["result"] == "passed", verdict


def test_the_command_exits_4_when_a_provider_was_not_run():
    proc = subprocess.run([sys.executable, "-m", "plantwatch.inference.providers", "cpu", "cuda"], capture_output=True, text=True)
    results = [line for line in proc.stdout.splitlines() if line]
    assert '"result": "passed"' in results[0]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert proc.returncode == 0
    else:
        assert proc.returncode == 4 and '"result": "not run"' in results[1]
