"""Resumable training: periodic checkpoints, and a clean stop on SLURM's signals.

A training job saves its whole state (weights, divergence bookkeeping, curves so far, the next
step of the data stream) every ``every_seconds`` and when it receives SIGTERM or SIGUSR1 (what
SLURM sends before a time limit or a preemption); it then exits non-zero, and the rerun resumes
from the checkpoint. Training is deterministic (no RNG after initialization, the data order
fixed by the data seed), so a resumed run is bit-identical to an uninterrupted one on a CPU.
Checkpoints live outside the declared outputs (``results/checkpoints/``): Snakemake never
deletes them, and a partial result can never be taken for a finished one.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch

from gammasweep.results.io import atomic_path

DEFAULT_MINUTES = 10.0  # the config's `checkpoint_minutes` when it sets none
STOP = threading.Event()  # set by the signal handlers; the trainer checkpoints and stops at the next step


class Interrupted(RuntimeError):
    """Training stopped on a signal after writing its checkpoint; rerunning the job resumes it."""


def stop_on_signals(signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1)) -> None:
    """Make these signals request a checkpoint-and-stop instead of killing the process."""
    for sig in signals:
        signal.signal(sig, lambda number, frame: STOP.set())


def fingerprint(*parts: Any) -> str:
    """What a checkpoint must match to be resumed: a hash of the run's full settings."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()


class Checkpoint:
    """The checkpoint file of one training job."""

    def __init__(self, path: str | Path, every_seconds: float = 600.0, log=print) -> None:
        self.path, self.every_seconds, self.log = Path(path), every_seconds, log
        self.last = time.monotonic()

    def due(self) -> bool:
        """Time for a periodic save, or a stop was requested."""
        return STOP.is_set() or time.monotonic() - self.last >= self.every_seconds

    def save(self, state: dict[str, Any], key: str) -> None:
        with atomic_path(self.path) as tmp:
            torch.save({"fingerprint": key, **state}, tmp)
        self.last = time.monotonic()
        self.log(f"checkpoint: step {state['step']} saved to {self.path}")

    def load(self, key: str) -> dict[str, Any] | None:
        """The saved state if there is a readable checkpoint of this very run, else None (said why)."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, weights_only=True)
        except Exception as err:  # a truncated or corrupt file: start afresh, never use it
            self.log(f"checkpoint {self.path} is unreadable ({type(err).__name__}: {err}); starting from step 0")
            return None
        if state.get("fingerprint") != key:
            self.log(f"checkpoint {self.path} belongs to other settings; starting from step 0")
            return None
        self.log(f"checkpoint: resuming from step {state['step']} of {self.path}")
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
