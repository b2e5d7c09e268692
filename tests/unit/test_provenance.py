"""Provenance: the versions an output records (the CUDA stack only where torch is loaded already), and the
device 'auto' resolves to: never a silent CPU run in a job that was given a GPU torch cannot use."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import metadata

import pytest
import torch

from gammasweep.results.provenance import resolve_device, versions


def test_versions_name_torchvision_and_the_slurm_executor_plugin():
    found = versions()
    for package in ("torch", "torchvision", "snakemake", "snakemake-executor-plugin-slurm"):
        assert found[package] == metadata.version(package)


def test_a_job_with_torch_loaded_records_its_cuda_stack():
    found = versions()  # torch is loaded here (conftest), never used with CUDA on this machine
    assert found["cuda"] == (torch.version.cuda or "none")
    if not torch.cuda.is_initialized():
        assert found["cudnn"] == "unused"
    if shutil.which("nvidia-smi") is None:
        assert found["nvidia_driver"] == "none"


def test_a_job_without_torch_records_no_cuda_stack_and_never_loads_torch():
    code = (
        "import json, sys; from gammasweep.results.provenance import versions; "
        "print(json.dumps([versions(), 'torch' in sys.modules]))"
    )
    found, loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout)
    assert not loaded
    assert "torchvision" in found and not {"cuda", "cudnn", "nvidia_driver"} & set(found)


@pytest.mark.parametrize("visible", [None, "", "-1", "NoDevFiles"])
def test_auto_is_the_cpu_where_the_job_has_no_gpu(monkeypatch, visible):
    if torch.cuda.is_available():
        pytest.skip("this machine has a usable GPU")
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_fails_loudly_in_a_job_given_a_gpu_that_torch_cannot_use(monkeypatch):
    """SLURM gave the job GPU 0; this machine has no NVIDIA driver (or torch is a CPU build): the error
    names the GPU, torch's reason, and the way to train on the CPU anyway."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a usable GPU")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(RuntimeError) as error:
        resolve_device("auto")
    message = str(error.value)
    assert "GPU 0 (CUDA_VISIBLE_DEVICES)" in message and "`device: cpu`" in message
    if torch.version.cuda is None:
        assert "CPU-only build" in message
    else:  # torch's own error, from initialising CUDA here
        assert f"built for CUDA {torch.version.cuda}" in message and "NVIDIA driver" in message
    assert resolve_device("cpu") == torch.device("cpu")  # asked for explicitly, the CPU is fine
