"""What each workflow rule does, as plain functions: ``workflow/scripts/*.py`` only unpack the
``snakemake`` object and call one of these. Each writes its outputs atomically and prints progress."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Sequence

import numpy as np
import torch

from gammasweep.cells import write_cell
from gammasweep.checkpoints import Checkpoint, Interrupted, stop_on_signals
from gammasweep.cube import build_cube, write_cube
from gammasweep.data import OnlineStream, fetch_sklearn_digits, read_images, write_images
from gammasweep.provenance import device_name, git_revision, resolve_device, versions
from gammasweep.train import Members, Setup, train

DIGITS_TEST_SIZE = 397  # real 8x8 digits held out as the test set (the other 1400 train the generator)


def fetch_source(source: str, train_out: str, test_out: str) -> None:
    """Write a real dataset's train and test images as HDF5."""
    if source != "sklearn_digits":
        raise NotImplementedError(
            f"source {source!r}: fetching it is not built yet (the real-datasets issue adds MNIST); "
            "the default config uses 'sklearn_digits'")
    train, test = fetch_sklearn_digits(DIGITS_TEST_SIZE, seed=0)
    for path, (images, labels) in ((train_out, train), (test_out, test)):
        write_images(path, images, labels, {"source": source})
        print(f"wrote {len(labels)} images to {path}")


def shard_sizes(images: int, shards: int) -> list[int]:
    """Split ``images`` into ``shards`` near-equal parts."""
    return [images // shards + (k < images % shards) for k in range(shards)]


def shard_seed(seed: int, shard: int) -> int:
    """An independent sampling seed per shard, derived from the dataset's seed."""
    return int(np.random.SeedSequence([seed, shard]).generate_state(1)[0])


def train_generator(train_images: str, source: str, generator: dict, checkpoint: str, device: str) -> None:
    """Train a generated dataset's diffusion model on its real source (resumes from its checkpoint)."""
    from gammasweep.config import generator_config
    from gammasweep.diffusion import train_generator as train_ddpm

    images, labels = read_images(train_images)
    train_ddpm(images, labels, generator_config(source, generator), checkpoint, device=str(resolve_device(device)))


def sample_shard(checkpoint: str, sampling: dict, shard: int, out: str, device: str) -> None:
    """Sample one shard of a generated pool, class-balanced, with explicit labels."""
    from gammasweep.diffusion import sample_labelled

    count = shard_sizes(sampling["images"], sampling["shards"])[shard]
    seed = shard_seed(sampling["seed"], shard)
    images, labels = sample_labelled(checkpoint, count, seed=seed, guidance_weight=sampling["guidance_weight"],
                                     sampling_steps=sampling.get("sampling_steps"),
                                     batch_size=sampling.get("batch_size", 256), device=str(resolve_device(device)))
    write_images(out, images, labels, {"shard": shard, "seed": seed})


def merge_pool(shards: Sequence[str], out: str) -> None:
    """Concatenate the shards into one chunked pool; record each shard's sha256."""
    import hashlib

    parts = [read_images(p) for p in shards]
    digests = {str(p): hashlib.sha256(open(p, "rb").read()).hexdigest() for p in shards}
    images, labels = np.concatenate([i for i, _ in parts]), np.concatenate([lab for _, lab in parts])
    write_images(out, images, labels, {"shards_sha256": json.dumps(digests, sort_keys=True),
                                       "class_counts": json.dumps(np.bincount(labels).tolist())})
    print(f"pool {out}: {len(labels)} images, class counts {np.bincount(labels).tolist()}")


def train_pack(cells: Sequence[dict], pool: str, test: str, outs: Sequence[str], pack: str = "",
               checkpoint: str | None = None, checkpoint_seconds: float = 600.0) -> None:
    """Train a pack of cells (every seed of each) as one batched model; write one HDF5 file per cell.

    The cells must differ in gamma and eta only (one experiment, one dtype): they share the data
    stream, the seeds' initial networks and every other setting. With a ``checkpoint`` path the
    job resumes from it, saves it every ``checkpoint_seconds`` and on SIGTERM/SIGUSR1 (then exits
    non-zero), and deletes it once the cell files are written.
    """
    start = time.time()
    first = cells[0]
    shared = {k: v for k, v in first.items() if k not in ("gamma", "eta")}
    for cell in cells:
        if {k: v for k, v in cell.items() if k not in ("gamma", "eta")} != shared:
            raise ValueError(f"pack {pack}: cells differ in more than gamma and eta: {first} vs {cell}")
    device = resolve_device(first["device"])
    dtype = torch.float64 if first["dtype"] == "float64" else torch.float32
    seeds = first["seeds"]
    print(f"pack {pack}: {len(cells)} cells of {first['experiment']} (gamma {min(c['gamma'] for c in cells):.3g}"
          f"..{max(c['gamma'] for c in cells):.3g}) x {len(seeds)} seeds, {first['steps']} steps, "
          f"{first['dtype']} on {device_name(device)}", flush=True)
    stream = OnlineStream(pool, first["batch_size"], first["steps"], first["data_seed"])
    test_images, test_labels = read_images(test, limit=first["test_examples"])
    norm = first["normalization"]
    setup = Setup(model=first["model"], input_shape=tuple(first["input_shape"]), num_classes=first["num_classes"],
                  loss=first["loss"], steps=first["steps"], mean=tuple(norm["mean"]), std=tuple(norm["std"]),
                  dtype=dtype, device=device, divergence_cap=first["divergence_cap"],
                  record_points=first["record_points"], test_batch_size=first["test_batch_size"])
    members = Members(seeds=[s for _ in cells for s in seeds], gammas=[c["gamma"] for c in cells for _ in seeds],
                      etas=[c["eta"] for c in cells for _ in seeds])
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    saves = Checkpoint(checkpoint, checkpoint_seconds, log) if checkpoint else None
    if saves:
        stop_on_signals()
    try:
        curves = train(setup, members, stream, torch.from_numpy(test_images), torch.from_numpy(test_labels),
                       log=log, checkpoint=saves)
    except Interrupted as stop:
        raise SystemExit(f"pack {pack}: {stop}") from None
    provenance = {"versions": versions(), "git": git_revision(), "device": device_name(device),
                  "host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                  "pack": {"rule": pack, "cells": len(cells)}, "wall_time_s": time.time() - start}
    for i, (cell, out) in enumerate(zip(cells, outs, strict=True)):
        write_cell(out, curves.members(slice(i * len(seeds), (i + 1) * len(seeds))), cell, provenance)
    if saves:
        saves.remove()
    print(f"{int(curves.diverged.sum())} of {len(curves.diverged)} members diverged; wrote {len(outs)} cell files "
          f"in {time.time() - start:.1f} s")


def aggregate(cell_files: Sequence[str], expected: Sequence[dict], experiment_config: dict, out: str) -> None:
    """Validate every cell file against the parameters its path names, then write the experiment's cube."""
    cube = build_cube(cell_files, experiment_config, expected)
    write_cube(cube, out)
    print(f"cube {out}: {dict(cube.sizes)}; {int(cube['diverged'].any('seed').sum())} diverged cells")

