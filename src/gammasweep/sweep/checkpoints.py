"""Resumable training: periodic checkpoints, and a clean stop on SLURM's signals.

A training job saves its whole state (weights, divergence bookkeeping, curves so far, the next
step of the data stream) every ``every_seconds`` and when it receives SIGTERM or SIGUSR1 (what
SLURM sends before a time limit or a preemption); it then exits non-zero, and the rerun resumes
from the checkpoint. Training is deterministic (no RNG after initialization, the data order
fixed by the data seed), so a resumed run is bit-identical to an uninterrupted one on a CPU.
Checkpoints live outside the declared outputs (``results/checkpoints/``): Snakemake never
deletes them, and a partial result can never be taken for a finished one.

A checkpoint's path is the same whatever the data, so it records two things a rerun must match
before it resumes (``Checkpoint.load``; anything else is reported in the job log and ignored, and
the run starts from step 0): the *settings* (``fingerprint``: the setup, the members, everything that
shapes the numbers given the data) and the *data* (a dict: the stream's data seed, batch size and
pool files, ``OnlineStream.identity``, and the test set's content, ``tensor_digest``). Both fix the
trajectory: resuming a checkpoint of other data would join two runs into one result.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def resumable(
    path: str | Path | None, every_seconds: float, label: str, log: Callable[[str], None] = print
) -> Iterator[Checkpoint | None]:
    """A job's checkpoint at ``path`` (None without one), saved every ``every_seconds``, with SIGTERM and
    SIGUSR1 asking it to save and stop; the stop ends the job non-zero, its message prefixed by ``label``."""
    if path is None:
        yield None
        return
    stop_on_signals()
    try:
        yield Checkpoint(path, every_seconds, log)
    except Interrupted as stop:
        raise SystemExit(f"{label}: {stop}") from None


def fingerprint(*parts: Any) -> str:
    """What a checkpoint must match to be resumed: a hash of the run's full settings."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def tensor_digest(*tensors: torch.Tensor) -> str:
    """sha256 (hex) of tensors' dtypes, shapes and values: the identity of data small enough to hash
    on every run (a test set: 5000 CIFAR images are 15 MB)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(repr((tensor.dtype, tuple(tensor.shape))).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy())
    return digest.hexdigest()


class Checkpoint:
    """The checkpoint file of one training job."""

    def __init__(self, path: str | Path, every_seconds: float = 600.0, log=print) -> None:
        self.path, self.every_seconds, self.log = Path(path), every_seconds, log
        self.last = time.monotonic()

    def due(self) -> bool:
        """Time for a periodic save, or a stop was requested."""
        return STOP.is_set() or time.monotonic() - self.last >= self.every_seconds

    def save(self, state: dict[str, Any], key: str, data: dict[str, Any]) -> None:
        """Write ``state`` (with its ``step``) for a run of settings ``key`` (``fingerprint``) on ``data``
        (name -> identity, e.g. ``{"data_seed": 0, "test_set": tensor_digest(...)}``; ints, strings, tuples)."""
        with atomic_path(self.path) as tmp:
            torch.save({"fingerprint": key, "data": data, **state}, tmp)
        self.last = time.monotonic()
        self.log(f"checkpoint: step {state['step']} saved to {self.path}")

    def load(self, key: str, data: dict[str, Any]) -> dict[str, Any] | None:
        """The saved state if there is a readable checkpoint of this very run (settings ``key``) on this very
        ``data`` (as ``save``), else None (said why; a checkpoint that does not say its data counts as other data)."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, weights_only=True)
        except Exception as err:  # a truncated or corrupt file: start afresh, never use it
            self.log(f"checkpoint {self.path} is unreadable ({type(err).__name__}: {err}); starting from step 0")
            return None
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            self.log(f"checkpoint {self.path} holds no training state with a step; starting from step 0")
            return None
        if state.get("fingerprint") != key:
            self.log(f"checkpoint {self.path} belongs to other settings; starting from step 0")
            return None
        saved = state.get("data", {})
        if changed := sorted(name for name in data.keys() | saved.keys() if saved.get(name) != data.get(name)):
            self.log(
                f"checkpoint {self.path} was written for other data ({', '.join(changed)}): "
                "ignored, starting from step 0"
            )
            return None
        self.log(f"checkpoint: resuming from step {state['step']} of {self.path}")
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
