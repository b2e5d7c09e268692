"""What produced an output: package versions, git revision, device. Only the device functions
import torch, when called: figures record their provenance without loading it."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import gammasweep

if TYPE_CHECKING:
    import torch

_PACKAGES = ("torch", "numpy", "h5py", "xarray", "h5netcdf", "snakemake", "denoising-diffusion-pytorch", "seaborn")


def git_revision(where: str | Path = ".") -> str:
    """The git commit of ``where`` (with '-dirty' if modified), or 'unknown' outside a checkout."""
    try:
        rev = subprocess.run(["git", "-C", str(where), "describe", "--always", "--dirty", "--abbrev=40"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return rev or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    """Versions of Python, gammasweep and the libraries that shape results."""
    found = {"python": platform.python_version(), "gammasweep": gammasweep.__version__}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def device_name(device: torch.device) -> str:
    """A human-readable device name, e.g. 'cpu (x86_64)' or 'cuda: NVIDIA H100'."""
    import torch

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"{device.type} ({platform.machine()})"


def resolve_device(requested: str) -> torch.device:
    """'auto' -> the first CUDA GPU if there is one, else the CPU; anything else as given."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)
