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

from gammasweep.adaptive import AdaptiveSettings, find_edge, statuses, train_window
from gammasweep.cells import write_cell
from gammasweep.checkpoints import DEFAULT_MINUTES, Checkpoint, Interrupted, stop_on_signals
from gammasweep.cube import build_cube, set_column_status, write_cube
from gammasweep.data import OnlineStream, image_writer, read_images, write_images
from gammasweep.download import Remote, fetch, file_digests
from gammasweep.formats import convert_cifar5m_part
from gammasweep.io import atomic_path, open_pool
from gammasweep.provenance import device_name, git_revision, resolve_device, versions
from gammasweep.quality import check_quality, classify, quality_report, train_reference_classifier
from gammasweep.sources import read_source
from gammasweep.theory import toy_cube
from gammasweep.train import Curves, Members, Setup, train


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


def run_cells(cells: Sequence[dict], pool: str | Sequence[str], test: str, label: str, steps: int | None = None,
              outs: Sequence[str | Path] = (), checkpoint: str | None = None,
              checkpoint_seconds: float = 60.0 * DEFAULT_MINUTES) -> Curves:
    """Train cells (every seed of each) as one batched model for their ``steps`` (or the first
    ``steps`` of them: a short run sees the same batches as the start of a full one), and write
    one HDF5 file per cell to ``outs`` if given.

    The cells must differ in gamma and eta only (one experiment, one dtype): they share the data
    stream, the seeds' initial networks and every other setting. With a ``checkpoint`` path the
    run resumes from it, saves it every ``checkpoint_seconds`` and on SIGTERM/SIGUSR1 (then exits
    non-zero), and deletes it once the cell files are written.
    """
    start = time.time()
    first = cells[0]
    shared = {k: v for k, v in first.items() if k not in ("gamma", "eta")}
    for cell in cells:
        if {k: v for k, v in cell.items() if k not in ("gamma", "eta")} != shared:
            raise ValueError(f"{label}: cells differ in more than gamma and eta: {first} vs {cell}")
    device = resolve_device(first["device"])
    steps = steps or first["steps"]
    seeds = first["seeds"]
    print(f"{label}: {len(cells)} cells of {first['experiment']} (gamma {min(c['gamma'] for c in cells):.3g}"
          f"..{max(c['gamma'] for c in cells):.3g}, eta {min(c['eta'] for c in cells):.3g}"
          f"..{max(c['eta'] for c in cells):.3g}) x {len(seeds)} seeds, {steps} steps, "
          f"{first['dtype']} on {device_name(device)}", flush=True)
    stream = OnlineStream(pool, first["batch_size"], steps, first["data_seed"], epochs=first.get("epochs", False))
    test_images, test_labels = read_images(test, limit=first["test_examples"])
    norm = first["normalization"]
    setup = Setup(model=first["model"], input_shape=tuple(first["input_shape"]), num_classes=first["num_classes"],
                  loss=first["loss"], steps=steps, mean=tuple(norm["mean"]), std=tuple(norm["std"]),
                  dtype=torch.float64 if first["dtype"] == "float64" else torch.float32, device=device,
                  divergence_cap=first["divergence_cap"], record_points=first["record_points"],
                  test_batch_size=first["test_batch_size"], probes=first.get("probes", {}),
                  optimizer=first.get("optimizer", {}), schedule=first.get("schedule", {}),
                  augment=first.get("augment", {}))
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
        raise SystemExit(f"{label}: {stop}") from None
    if outs:
        write_cells(curves, cells, outs, label, start)
    if saves:
        saves.remove()
    return curves


def per_cell(curves: Curves, cells: Sequence[dict]) -> list[Curves]:
    """Split a run's curves into one Curves per cell (its seeds)."""
    seeds = len(cells[0]["seeds"])
    return [curves.members(slice(i * seeds, (i + 1) * seeds)) for i in range(len(cells))]


def write_cells(curves: Curves, cells: Sequence[dict], outs: Sequence[str | Path], label: str, start: float) -> None:
    """Write one HDF5 file per cell, each with the job's provenance."""
    provenance = {"versions": versions(), "git": git_revision(), "device": device_name(resolve_device(cells[0]["device"])),
                  "host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                  "pack": {"rule": label, "cells": len(cells)}, "wall_time_s": time.time() - start}
    for cell_curves, cell, out in zip(per_cell(curves, cells), cells, outs, strict=True):
        write_cell(out, cell_curves, cell, provenance)
    print(f"{int(curves.diverged.sum())} of {len(curves.diverged)} members diverged; wrote {len(outs)} cell files "
          f"in {time.time() - start:.1f} s", flush=True)


def train_pack(cells: Sequence[dict], pool: str | Sequence[str], test: str, outs: Sequence[str], pack: str = "",
               checkpoint: str | None = None, checkpoint_seconds: float = 60.0 * DEFAULT_MINUTES) -> None:
    """Train a pack of cells (``run_cells``) and write one HDF5 file per cell."""
    run_cells(cells, pool, test, pack, outs=outs, checkpoint=checkpoint, checkpoint_seconds=checkpoint_seconds)


def bracket_eta(cells: Sequence[dict], pool: str | Sequence[str], test: str, settings: dict, start: int,
                out: str) -> None:
    """The bracketing stage of an adaptive column: find its divergence edge by short runs
    (``adaptive.find_edge``) and write what every short run did (JSON). Short runs only look for
    divergence: the probes are off in them."""
    began = time.time()
    adaptive = AdaptiveSettings(**settings)

    def run_short(indices: list[int]) -> dict[int, int]:
        chosen = [{**cells[i], "probes": {}} for i in indices]
        curves = run_cells(chosen, pool, test, "bracket", steps=adaptive.bracket_steps)
        return {i: first_diverged_step(c) for i, c in zip(indices, per_cell(curves, chosen), strict=True)}

    edge, trials = find_edge(len(cells), start, adaptive.window, run_short)
    etas = [c["eta"] for c in cells]
    record = {"experiment": cells[0]["experiment"], "gamma": cells[0]["gamma"], "etas": etas, "settings": settings,
              "start": start, "edge": edge, "eta_max_short": etas[edge - 1] if edge > 0 else None,
              "trials": {str(i): step for i, step in sorted(trials.items())}, "trial_steps": adaptive.bracket_steps,
              "versions": versions(), "wall_time_s": time.time() - began}
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1))
    print(f"gamma {record['gamma']:.3g}: edge at eta {etas[edge] if edge < len(etas) else 'beyond the grid'} "
          f"after {len(trials)} short runs of {adaptive.bracket_steps} steps", flush=True)


def join_brackets(brackets: Sequence[str], out: str) -> None:
    """The edge index of every bracketing record of an experiment, by record path (JSON)."""
    edges = {path: json.loads(Path(path).read_text())["edge"] for path in brackets}
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps({"edges": edges}, indent=1))
    print(f"{len(edges)} columns bracketed; {sum(e > 0 for e in edges.values())} have points to train")


def first_diverged_step(curves: Curves) -> int:
    """A cell's divergence step: its first diverged seed's, -1 if no seed diverged."""
    steps = curves.diverged_step[curves.diverged_step >= 0]
    return int(steps.min()) if len(steps) else -1


def train_column(cells: Sequence[dict], files: Sequence[str], pool: str | Sequence[str], test: str, bracket: str,
                 depth_steps: int | None, out_dir: str, checkpoint: str | None = None,
                 checkpoint_seconds: float = 60.0 * DEFAULT_MINUTES) -> None:
    """The training stage of an adaptive column: train the window of its bracketed edge at full length
    (``adaptive.train_window``: it grows on late divergence), the cell file of each trained point
    (``files``, one per cell, inside ``out_dir``), and ``out_dir/column.json``: the final edge and
    every point's status."""
    record = json.loads(Path(bracket).read_text())
    Path(out_dir).mkdir(parents=True, exist_ok=True)

    def run_full(indices: list[int]) -> dict[int, bool]:
        chosen = [cells[i] for i in indices]
        curves = run_cells(chosen, pool, test, f"column {out_dir}", outs=[files[i] for i in indices],
                           checkpoint=checkpoint, checkpoint_seconds=checkpoint_seconds)
        return {i: bool(c.diverged.any()) for i, c in zip(indices, per_cell(curves, chosen), strict=True)}

    edge, trained = train_window(len(cells), record["edge"], depth_steps, run_full)
    column = {"gamma": cells[0]["gamma"], "edge": edge, "bracket_edge": record["edge"], "depth_steps": depth_steps,
              "status": statuses(len(cells), edge, trained),
              "files": {str(i): Path(files[i]).name for i in sorted(trained)}}
    with atomic_path(Path(out_dir) / "column.json") as tmp:
        Path(tmp).write_text(json.dumps(column, indent=1))
    print(f"trained {len(trained)} of {len(cells)} grid points; edge index {edge} (bracket: {record['edge']})")


def aggregate(cell_files: Sequence[str], expected: Sequence[dict], experiment_config: dict, out: str) -> None:
    """Validate every cell file against the parameters its path names, then write the experiment's cube."""
    cube = build_cube(cell_files, experiment_config, expected)
    write_cube(cube, out)
    print(f"cube {out}: {dict(cube.sizes)}; {int(cube['diverged'].any('seed').sum())} diverged cells")


def aggregate_adaptive(brackets: Sequence[str], columns: Sequence[str], grid: tuple[list[float], list[float]],
                       experiment: str, experiment_config: dict, out: str) -> None:
    """The cube of an adaptive experiment from its bracketing records (one per gamma) and trained
    columns (the directories of the gammas with something to train): the trained cells, every
    point's ``cell_status``, and the bracketing cost (``bracket_cells`` short runs of ``bracket_steps``)."""
    gammas, etas = grid
    trials, status = {}, {}
    for path in brackets:
        record = json.loads(Path(path).read_text())
        trials[record["gamma"]] = {int(i): step for i, step in record["trials"].items()}
        status[record["gamma"]] = statuses(len(etas), record["edge"], {})
        bracket_steps = record["trial_steps"]
    files, expected = [], []
    for path in columns:
        column = json.loads((Path(path) / "column.json").read_text())
        status[column["gamma"]] = column["status"]
        for i, name in column["files"].items():
            files.append(str(Path(path) / name))
            expected.append({"experiment": experiment, "gamma": column["gamma"], "eta": etas[int(i)]})
    if missing := sorted(set(gammas) - set(trials)):
        raise ValueError(f"{out}: no bracketing record for gamma {missing}")
    cube = build_cube(files, experiment_config, expected, grid)
    for gamma in gammas:
        set_column_status(cube, gamma, status[gamma], trials[gamma])
    cube["bracket_cells"] = ("gamma", np.array([len(trials[g]) for g in cube["gamma"].values]))
    cube["bracket_cells"].attrs.update(long_name="short bracketing runs of the column (cells x bracket_steps)",
                                       units="1")
    cube.attrs["bracket_steps"] = bracket_steps
    write_cube(cube, out)
    counts = np.bincount(cube["cell_status"].values.ravel(), minlength=3)
    print(f"cube {out}: {dict(cube.sizes)}; trained {counts[0]}, inferred diverged {counts[1]}, skipped {counts[2]}")


def simulate_toy_cube(settings: dict, out: str) -> None:
    """Simulate the Section-4 toy over a (gamma, eta) grid (``theory.toy_cube``) and write its cube.

    settings: {"loss": "mse" | "cross_entropy", "depth": L, "steps": T, "gamma": grid spec,
    "eta": grid spec}, grid specs as experiments' ({min, max, per_decade} or a list).
    """
    from gammasweep.config import grid_values

    start = time.time()
    gammas, etas = grid_values(settings["gamma"], "gamma"), grid_values(settings["eta"], "eta")
    cube = toy_cube(gammas, etas, int(settings["depth"]), int(settings["steps"]), settings["loss"])
    cube.attrs.update(toy_settings=json.dumps(settings, sort_keys=True), versions=json.dumps(versions(), sort_keys=True))
    write_cube(cube, out)
    print(f"toy cube {out}: {settings['loss']}, L = {settings['depth']}, T = {settings['steps']}, "
          f"{len(gammas)} x {len(etas)} grid, {int(cube['diverged'].sum())} diverged, {time.time() - start:.1f} s",
          flush=True)


def simulate_related_cube(spec: dict, out: str) -> None:
    """Simulate a related experiment (config ``related:`` entry, ``gammasweep.related``) and write its cube."""
    from gammasweep.related import related_cube

    start = time.time()
    torch.set_num_threads(1)  # small nets: one thread is fastest (two were 2x slower per step)
    cube = related_cube(spec, log=lambda msg: print(msg, flush=True))
    cube.attrs.update(kind=spec["kind"], related_settings=json.dumps(spec, sort_keys=True),
                      versions=json.dumps(versions(), sort_keys=True))
    write_cube(cube, out)
    diverged = int((cube["diverged_step"] >= 0).sum())
    print(f"related cube {out}: {spec['kind']}, {cube.sizes['variant']} variants x {cube.sizes['seed']} seeds x "
          f"{spec['steps']} steps, {diverged} runs diverged, {time.time() - start:.1f} s", flush=True)
