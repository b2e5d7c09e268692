"""What produced an output: package versions, the CUDA stack, git revision, device. Only the device
functions import torch, when called, and ``versions`` reads torch's CUDA builds only in a job that has
imported it already: figures record their provenance without loading it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import gammasweep

if TYPE_CHECKING:
    import torch

_PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "h5py",
    "xarray",
    "h5netcdf",
    "snakemake",
    "snakemake-executor-plugin-slurm",
    "denoising-diffusion-pytorch",
    "seaborn",
)
# CUDA_VISIBLE_DEVICES values that give a job no GPU: unset or empty, CUDA's -1, SLURM's NoDevFiles
_NO_GPU = ("", "-1", "NoDevFiles")


def git_revision(where: str | Path = ".") -> str:
    """The git commit of ``where`` (with '-dirty' if modified), or 'unknown' outside a checkout."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(where), "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return rev or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    """Versions of Python, gammasweep and the libraries that shape results; in a job that has imported
    torch also its CUDA stack (``cuda_versions``)."""
    found = {"python": platform.python_version(), "gammasweep": gammasweep.__version__}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    if "torch" in sys.modules:
        found |= cuda_versions()
    return found


def cuda_versions() -> dict[str, str]:
    """The CUDA version torch was built for ('none': a CPU build), the cuDNN version it runs with ('unused'
    until the process has used CUDA) and the NVIDIA driver's ('none' without one)."""
    import torch

    used = torch.cuda.is_initialized() and torch.backends.cudnn.is_available()
    return {
        "cuda": torch.version.cuda or "none",
        "cudnn": str(torch.backends.cudnn.version()) if used else "unused",
        "nvidia_driver": nvidia_driver() or "none",
    }


def nvidia_driver() -> str | None:
    """The NVIDIA driver's version as nvidia-smi reports it, or None without nvidia-smi or a working driver."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


def device_name(device: torch.device) -> str:
    """A human-readable device name, e.g. 'cpu (x86_64)' or 'cuda: NVIDIA H100'."""
    import torch

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"{device.type} ({platform.machine()})"


def resolve_device(requested: str) -> torch.device:
    """'auto' -> the first CUDA GPU if there is one, else the CPU; anything else as given. 'auto' in a job
    that was given a GPU (CUDA_VISIBLE_DEVICES, as SLURM sets it) that torch cannot use is an error: a job
    on a GPU node never trains on its CPU unasked."""
    import torch

    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible not in _NO_GPU:
        raise RuntimeError(
            f"this job was given GPU {visible} (CUDA_VISIBLE_DEVICES) but torch cannot use CUDA: {cuda_failure()}. "
            "To train on the CPU anyway set `device: cpu` under `training:` in the config."
        )
    return torch.device("cpu")


def cuda_failure() -> str:
    """Why torch cannot use CUDA here: a CPU build, or the error of CUDA's initialisation (no driver, a
    driver too old for torch's CUDA, ...), with the versions involved."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build (README.md, 'Installs': a CUDA build)"
    try:
        torch.cuda.init()
        reason = "torch.cuda.is_available() is False"
    except RuntimeError as error:
        reason = str(error)
    return (
        f"torch {torch.__version__} is built for CUDA {torch.version.cuda}, the NVIDIA driver is "
        f"{nvidia_driver() or 'not found (no working nvidia-smi)'}: {reason}"
    )
