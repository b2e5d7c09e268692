"""What each workflow rule does, as plain functions: ``workflow/scripts/*.py`` only unpack the
``snakemake`` object and call one of these. Each writes its outputs atomically and prints progress."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from gammasweep.cells import write_cell
from gammasweep.checkpoints import DEFAULT_MINUTES, Checkpoint, Interrupted, stop_on_signals
from gammasweep.cube import build_cube, write_cube
from gammasweep.data import OnlineStream, image_writer, open_pool, read_images, write_images
from gammasweep.download import Remote, fetch, file_digests
from gammasweep.formats import convert_cifar5m_part
from gammasweep.io import atomic_path
from gammasweep.provenance import device_name, git_revision, resolve_device, versions
from gammasweep.quality import check_quality, classify, quality_report, train_reference_classifier
from gammasweep.sources import read_source
from gammasweep.train import Members, Setup, train


def fetch_downloads(downloads: dict[str, dict]) -> dict[str, Path]:
    """Fetch (or re-verify) each download ``{name: {"remote": config entry, "path": where}}``; a
    truncated or corrupt copy is reported and fetched again, never used."""
    return {name: fetch(Remote(**entry["remote"]), entry["path"]) for name, entry in downloads.items()}


def fetch_source(source: str, downloads: dict[str, dict], train_out: str, test_out: str) -> None:
    """Write a real dataset's train and test images as HDF5, from its downloads."""
    splits = read_source(source, fetch_downloads(downloads))
    for path, (images, labels) in zip((train_out, test_out), splits, strict=True):
        write_images(path, images, labels, {"source": source})
        print(f"wrote {len(labels)} images to {path}")


def fetch_part(downloads: dict[str, dict], out: str) -> None:
    """Fetch one part of a fetched dataset (CIFAR-5M's ``partK.npz``) and convert it to an HDF5 pool part."""
    (path,) = fetch_downloads(downloads).values()
    convert_cifar5m_part(path, out)


def quality_gate(pool: str, train: str, test: str, gate: dict, num_classes: int, out: str, device: str) -> None:
    """Check a generated pool: a classifier trained on the real source must label the generated
    images as their conditioning class, and the classes must balance. Writes the report (JSON) if
    the pool passes; otherwise prints it and fails, so that training never reads a broken pool."""
    (train_images, train_labels), (test_images, test_labels) = read_images(train), read_images(test)
    images, labels = read_images(pool)
    start = time.time()
    model = train_reference_classifier(train_images, train_labels, num_classes, steps=gate["classifier_steps"],
                                       batch_size=gate.get("classifier_batch_size", 64), seed=gate.get("seed", 0),
                                       device=str(resolve_device(device)))
    accuracy = float((classify(model, test_images) == test_labels).mean())
    print(f"reference classifier: {accuracy:.4f} accuracy on the real test set ({time.time() - start:.1f} s)")
    report = quality_report(model, images, labels, num_classes, min_agreement=gate["min_agreement"],
                            max_imbalance=gate["max_imbalance"], reference_accuracy=accuracy,
                            min_class_agreement=gate.get("min_class_agreement"))
    print(json.dumps(report, indent=1))
    check_quality(report)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=1))
    print(f"{pool} passes: agreement {report['agreement']:.4f}, imbalance {report['imbalance']:.4f}")


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


def merge_pool(shards: Sequence[str], out: str, manifest: str) -> None:
    """Concatenate the shards into one chunked pool; write a manifest (JSON) with the sha256 of every
    shard and of the pool, and the pool's class counts."""
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open_pool(Path(p))) for p in shards]
        sizes = [len(f["labels"]) for f in files]
        labels = np.concatenate([f["labels"][()] for f in files])
        counts = np.bincount(labels).tolist()
        with image_writer(out, sum(sizes), files[0]["images"].shape[1:], {"class_counts": json.dumps(counts)}) as pool:
            for f in files:
                pool.write(f["images"][()], f["labels"][()])
    record = {"pool": {"path": out, "sha256": file_digests(out)["sha256"], "images": int(sum(sizes)),
                       "class_counts": counts},
              "shards": [{"path": p, "sha256": file_digests(p)["sha256"], "images": n}
                         for p, n in zip(shards, sizes, strict=True)]}
    with atomic_path(manifest) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1))
    print(f"pool {out}: {sum(sizes)} images, class counts {counts}; manifest {manifest}")


def train_pack(cells: Sequence[dict], pool: str | Sequence[str], test: str, outs: Sequence[str], pack: str = "",
               checkpoint: str | None = None, checkpoint_seconds: float = 60.0 * DEFAULT_MINUTES) -> None:
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

