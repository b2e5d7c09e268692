"""The online data stream over a pool (``gammasweep.data.pools``).

The online stream reads a pool in a fixed order set by a data
seed: step t gets samples ``order[B t : B (t + 1)]`` -- one pass, no sample is ever reused, and
every cell of a sweep sees the same stream. The stream serves its batches on the training device
(``OnlineStream.to_device``): the whole pass held there when it fits, else in large windows.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gammasweep.data.pools import open_pool


def normalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype
) -> torch.Tensor:
    """uint8 (B, H, W, C) in 0..255 (or float in [0, 1], e.g. augmented) -> float (B, H, W, C), per
    channel (x - mean) / std of x in [0, 1]."""
    x = images.to(dtype) / 255.0 if images.dtype == torch.uint8 else images.to(dtype)
    return (x - torch.tensor(mean, dtype=dtype, device=x.device)) / torch.tensor(std, dtype=dtype, device=x.device)


DEVICE_POOL_FRACTION = 0.25  # of a GPU's free memory, for the held pass; the rest is the pack's
MAX_WINDOW_BYTES = 2**30  # a window large enough to amortize its transfer, small enough to pin on the host


def device_budget(device: torch.device) -> float:
    """Bytes of ``device`` memory the stream may take by default: ``DEVICE_POOL_FRACTION`` of a GPU's
    free memory; unlimited (``math.inf``) elsewhere, where the device is the host that holds the pass."""
    if device.type == "cuda":
        return DEVICE_POOL_FRACTION * torch.cuda.mem_get_info(device)[0]
    return math.inf


def megabytes(size: float) -> str:
    """A byte count for the log, e.g. '12.3 MB'; 'no limit' for ``math.inf``."""
    return "no limit" if math.isinf(size) else f"{size / 1e6:,.1f} MB"


class OnlineStream:
    """Batch t holds samples ``order[B t : B (t + 1)]`` of a seeded order of a pool.

    Online (the default): one pass, no sample reused; a run longer than the pool is an error.
    With ``epochs=True`` (a finite real dataset trained for several epochs) the order is one fresh
    seeded permutation per epoch; its first epoch is the one-pass order.

    A pool is one HDF5 file or several (the parts of a fetched dataset), indexed one after another.
    The rows the run reads are loaded once into host memory as stored (``images`` (N, H, W, C), uint8
    0..255 or float32 on the [0, 1] scale; ``labels`` (N,) int64; ``slot`` (steps x B,) maps each
    stream position to its row), block by block, so any subset of a large pool is read at the disk's
    speed and a multi-epoch run holds the pool only once. ``batch`` serves from the host until
    ``to_device`` places the stream elsewhere.
    """

    def __init__(
        self,
        pool: str | Path | Sequence[str | Path],
        batch_size: int,
        steps: int,
        data_seed: int,
        block_rows: int = 65536,
        epochs: bool = False,
    ) -> None:
        paths = [Path(pool)] if isinstance(pool, (str, Path)) else [Path(p) for p in pool]
        with contextlib.ExitStack() as stack:
            files = [stack.enter_context(open_pool(path)) for path in paths]
            stats = [path.stat() for path in paths]  # as opened: ``identity``
            self.files = tuple((str(path), st.st_size, st.st_mtime_ns) for path, st in zip(paths, stats, strict=True))
            sizes = [len(f["labels"]) for f in files]
            needed, total = batch_size * steps, sum(sizes)
            if needed > total and not epochs:
                raise ValueError(
                    f"online training needs steps x batch = {steps} x {batch_size} = {needed} samples, "
                    f"but the pool {', '.join(map(str, paths))} holds {total}: enlarge the pool or shorten the run"
                )
            rng = np.random.default_rng(data_seed)
            order = np.concatenate([rng.permutation(total) for _ in range(-(-needed // total))])[:needed]
            rows = np.unique(order)  # the pool rows the run reads, ascending
            stored = files[0]["images"]
            if any(f["images"].dtype != stored.dtype for f in files):
                raise ValueError(f"the parts {', '.join(map(str, paths))} store their images with different dtypes")
            self.images = torch.from_numpy(np.empty((len(rows), *stored.shape[1:]), dtype=stored.dtype))
            self.labels = torch.empty(len(rows), dtype=torch.int64)
            start = 0
            for f, size in zip(files, sizes, strict=True):
                for block in range(start, start + size, block_rows):
                    lo, hi = np.searchsorted(rows, [block, min(block + block_rows, start + size)])
                    if hi > lo:
                        local = rows[lo:hi] - start
                        first, last = int(local[0]), int(local[-1]) + 1
                        self.images[lo:hi] = torch.from_numpy(f["images"][first:last][local - first])
                        self.labels[lo:hi] = torch.from_numpy(f["labels"][first:last][local - first])
                start += size
        self.slot = torch.from_numpy(np.searchsorted(rows, order))  # stream position -> row of self.images
        self.batch_size, self.steps, self.data_seed = batch_size, steps, data_seed
        self.device = torch.device("cpu")  # where ``batch`` returns its tensors
        self.window_steps: int | None = None  # steps per window when streamed in windows; None: held whole
        self._held: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = (self.images, self.labels, self.slot)
        self._windows: StepWindows | None = None
        self._placed_for: tuple[torch.device, float | None] | None = None  # to_device's last arguments

    @property
    def identity(self) -> dict[str, Any]:
        """What fixes the batches of every step, for a checkpoint to match (``gammasweep.sweep.checkpoints``):
        ``data_seed``, ``batch_size`` and ``pool``, each pool file as (path, bytes, modification time in ns)
        when opened. A rewritten file (a pool sampled again, a part converted again) has a new modification
        time, Snakemake's own test of a changed file; hashing the files instead would read gigabytes on every
        run. (A file copied without its times counts as rewritten: its checkpoints are ignored, never misused.)
        The number of steps and ``epochs`` are left out: a shorter stream's batches are the first of a longer
        one's, and the first epoch's order is the one-pass order."""
        return {"data_seed": self.data_seed, "batch_size": self.batch_size, "pool": self.files}

    def head(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``count`` samples of the pass in stream order, on the host: images (n, H, W, C), as
        stored, and labels (n,), n = min(count, steps x B). A fixed batch of the training data, the same for
        every cell of the data seed (the probes of the training objective read it)."""
        rows = self.slot[:count]
        return self.images[rows], self.labels[rows]

    @property
    def held_bytes(self) -> int:
        """Bytes of the held pass: images, labels and slots (what ``to_device`` moves if it fits)."""
        return sum(t.nbytes for t in (self.images, self.labels, self.slot))

    def to_device(
        self, device: torch.device | str, budget_bytes: float | None = None, log: Callable[[str], None] = print
    ) -> None:
        """Serve every batch on ``device`` from now on, and log one line saying how.

        If ``held_bytes`` fits ``budget_bytes`` (bytes of device memory; default ``device_budget``),
        the pass is moved there once and a batch is indexed there. Otherwise it stays on the host
        and batches come from windows of ``window_steps`` consecutive steps (as many as fit the
        budget, at most ``MAX_WINDOW_BYTES``), each gathered on the host (into pinned memory for a
        GPU) and copied in one transfer. Either way ``batch(t)`` returns the same values for any t.
        Called again with the same arguments, it does nothing.
        """
        device = torch.device(device)
        if self._placed_for == (device, budget_bytes):
            return
        budget = device_budget(device) if budget_bytes is None else budget_bytes
        pool = f"training pool of {len(self.images):,} images {'x'.join(map(str, self.images.shape[1:]))}"
        if self.held_bytes <= budget:
            self._held = (self.images.to(device), self.labels.to(device), self.slot.to(device))
            self._windows, self.window_steps = None, None
            log(f"{pool}: {megabytes(self.held_bytes)} held on {device} (budget {megabytes(budget)})")
        else:
            step_bytes = self.batch_size * (self.images[0].nbytes + self.labels.element_size())
            self.window_steps = max(1, min(self.steps, int(min(budget, MAX_WINDOW_BYTES) // step_bytes)))
            self._held, self._windows = (
                None,
                StepWindows(self.images, self.labels, self.slot, self.batch_size * self.window_steps, device),
            )
            log(
                f"{pool}: {megabytes(self.held_bytes)} over the budget of {megabytes(budget)} for {device}, "
                f"streamed in windows of {self.window_steps} steps ({megabytes(self.window_steps * step_bytes)} "
                f"per transfer)"
            )
        self.device, self._placed_for = device, (device, budget_bytes)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch of step t on ``device``: images (B, H, W, C) as stored and int64 labels (B,)."""
        if not 0 <= step < self.steps:
            raise IndexError(f"step {step} is outside the stream's {self.steps} steps")
        if self._windows is not None:
            return self._windows.batch(step * self.batch_size, self.batch_size)
        images, labels, slot = self._held
        rows = slot[step * self.batch_size : (step + 1) * self.batch_size]
        return images.index_select(0, rows), labels.index_select(0, rows)  # (6x faster than images[rows])


class StepWindows:
    """A host-held pass served from a device-resident window of ``rows`` consecutive stream
    positions (a whole number of steps), refilled on demand: gathered on the host into a staging
    buffer (pinned for a GPU) and copied to the device in one transfer. On the CPU the staging
    buffer is the window."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, slot: torch.Tensor, rows: int, device: torch.device
    ) -> None:
        self.host_images, self.host_labels, self.slot, self.rows = images, labels, slot, rows
        pin = device.type == "cuda"
        self.staging_images = torch.empty((rows, *images.shape[1:]), dtype=images.dtype, pin_memory=pin)
        self.staging_labels = torch.empty(rows, dtype=labels.dtype, pin_memory=pin)
        self.images, self.labels = (
            (s if device.type == "cpu" else torch.empty_like(s, device=device))
            for s in (self.staging_images, self.staging_labels)
        )
        self.first = -1  # stream position of the window's first row; -1 before the first fill
        self.copied: torch.cuda.Event | None = None  # the last transfer out of the staging buffers

    def batch(self, position: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of stream positions ``position`` .. ``position + size`` (within one
        window), as new tensors on the device: the window is refilled in place later."""
        first = position - position % self.rows
        if first != self.first:
            self.fill(first)
        lo = position - first
        return self.images[lo : lo + size].clone(), self.labels[lo : lo + size].clone()

    def fill(self, first: int) -> None:
        """Load the window that starts at stream position ``first``."""
        rows = self.slot[first : first + self.rows]
        if self.copied is not None:
            self.copied.synchronize()  # the previous transfer has left the staging buffers
        torch.index_select(self.host_images, 0, rows, out=self.staging_images[: len(rows)])
        torch.index_select(self.host_labels, 0, rows, out=self.staging_labels[: len(rows)])
        if self.images is not self.staging_images:
            self.images[: len(rows)].copy_(self.staging_images[: len(rows)], non_blocking=True)
            self.labels[: len(rows)].copy_(self.staging_labels[: len(rows)], non_blocking=True)
            if self.images.is_cuda:
                self.copied = torch.cuda.Event()
                self.copied.record()
        self.first = first
