"""The training rules (workflow/rules/train.smk, adaptive.smk): packs of cells, and adaptive eta's bracketing
and column jobs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from gammasweep.data.pools import read_images
from gammasweep.data.stream import OnlineStream
from gammasweep.plan.plan import pack_groups, shared_params
from gammasweep.results.cells import write_cell
from gammasweep.results.io import atomic_path
from gammasweep.results.provenance import device_name, git_revision, resolve_device, versions
from gammasweep.sweep.adaptive import AdaptiveSettings, find_edges, statuses, train_window
from gammasweep.sweep.checkpoints import DEFAULT_MINUTES, fingerprint, resumable
from gammasweep.sweep.train import Curves, Members, Setup, train


def run_cells(
    cells: Sequence[dict],
    pool: str | Sequence[str],
    test: str,
    label: str,
    steps: int | None = None,
    outs: Sequence[str | Path] = (),
    checkpoint: str | None = None,
    checkpoint_seconds: float = 60.0 * DEFAULT_MINUTES,
) -> Curves:
    """Train cells (every seed of each) as one batched model for their ``steps`` (or the first
    ``steps`` of them: a short run sees the same batches as the start of a full one), and write
    one HDF5 file per cell to ``outs`` if given.

    The cells must differ in gamma and eta only (one experiment, one dtype): they share the data
    stream, the seeds' initial networks and every other setting. With a ``checkpoint`` path the
    run resumes from it (if it was written for these settings and this data: the pool files, the
    data seed, the batch size and the test set; else the log says why it was ignored), saves it every
    ``checkpoint_seconds`` and on SIGTERM/SIGUSR1 (then exits non-zero), and deletes it once the cell
    files are written.
    """
    start = time.time()
    first = cells[0]
    for cell in cells:
        if shared_params(cell) != shared_params(first):
            raise ValueError(f"{label}: cells differ in more than gamma and eta: {first} vs {cell}")
    device = resolve_device(first["device"])
    steps = steps or first["steps"]
    seeds = first["seeds"]
    print(
        f"{label}: {len(cells)} cells of {first['experiment']} (gamma {min(c['gamma'] for c in cells):.3g}"
        f"..{max(c['gamma'] for c in cells):.3g}, eta {min(c['eta'] for c in cells):.3g}"
        f"..{max(c['eta'] for c in cells):.3g}) x {len(seeds)} seeds, {steps} steps, "
        f"{first['dtype']} on {device_name(device)}",
        flush=True,
    )
    stream = OnlineStream(pool, first["batch_size"], steps, first["data_seed"], epochs=first.get("epochs", False))
    test_images, test_labels = read_images(test, limit=first["test_examples"])
    norm = first["normalization"]
    setup = Setup(
        model=first["model"],
        input_shape=tuple(first["input_shape"]),
        num_classes=first["num_classes"],
        loss=first["loss"],
        steps=steps,
        mean=tuple(norm["mean"]),
        std=tuple(norm["std"]),
        dtype=torch.float64 if first["dtype"] == "float64" else torch.float32,
        device=device,
        divergence_cap=first["divergence_cap"],
        record_points=first["record_points"],
        test_batch_size=first["test_batch_size"],
        probes=first.get("probes", {}),
        optimizer=first.get("optimizer", {}),
        schedule=first.get("schedule", {}),
        augment=first.get("augment", {}),
    )
    members = Members(
        seeds=[s for _ in cells for s in seeds],
        gammas=[c["gamma"] for c in cells for _ in seeds],
        etas=[c["eta"] for c in cells for _ in seeds],
    )
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    with resumable(checkpoint, checkpoint_seconds, label, log) as saves:
        curves = train(
            setup,
            members,
            stream,
            torch.from_numpy(test_images),
            torch.from_numpy(test_labels),
            log=log,
            checkpoint=saves,
        )
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
    provenance = {
        "versions": versions(),
        "git": git_revision(),
        "device": device_name(resolve_device(cells[0]["device"])),
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "pack": {"rule": label, "cells": len(cells)},
        "wall_time_s": time.time() - start,
    }
    for cell_curves, cell, out in zip(per_cell(curves, cells), cells, outs, strict=True):
        write_cell(out, cell_curves, cell, provenance)
    print(
        f"{int(curves.diverged.sum())} of {len(curves.diverged)} members diverged; wrote {len(outs)} cell files "
        f"in {time.time() - start:.1f} s",
        flush=True,
    )


def train_pack(
    cells: Sequence[dict],
    pool: str | Sequence[str],
    test: str,
    outs: Sequence[str],
    pack: str = "",
    checkpoint: str | None = None,
    checkpoint_seconds: float = 60.0 * DEFAULT_MINUTES,
) -> None:
    """Train a pack of cells (``run_cells``) and write one HDF5 file per cell."""
    run_cells(cells, pool, test, pack, outs=outs, checkpoint=checkpoint, checkpoint_seconds=checkpoint_seconds)


def bracket_eta(
    columns: Mapping[str, Sequence[dict]],
    starts: Mapping[str, int],
    pool: str | Sequence[str],
    test: str,
    settings: dict,
    pack_size: int,
    out: str,
) -> None:
    """The bracketing stage of an adaptive experiment: find the divergence edge of every gamma column
    (``columns``: gamma key -> its cells, eta ascending; searched from grid index ``starts[key]``) by short
    runs (``adaptive.find_edges``), each round's runs of all columns trained together in packs of at most
    ``pack_size`` cells, and write what every short run did (JSON, one record per gamma key). Short runs
    only look for divergence: the probes are off in them."""
    began = time.time()
    adaptive = AdaptiveSettings(**settings)

    def run_short(trials: dict[str, list[int]]) -> dict[str, dict[int, int]]:
        chosen = [(key, i) for key, indices in trials.items() for i in indices]
        cells = [{**columns[key][i], "probes": {}} for key, i in chosen]
        found: dict[str, dict[int, int]] = {key: {} for key in trials}
        for group in pack_groups(cells, pack_size):
            packed = [cells[k] for k in group]
            curves = run_cells(packed, pool, test, "bracket", steps=adaptive.bracket_steps)
            for k, cell_curves in zip(group, per_cell(curves, packed), strict=True):
                key, i = chosen[k]
                found[key][i] = first_diverged_step(cell_curves)
        return found

    edges = find_edges({key: (len(cells), starts[key]) for key, cells in columns.items()}, adaptive.window, run_short)
    records = {}
    for key, (edge, trials) in edges.items():
        etas = [c["eta"] for c in columns[key]]
        records[key] = {
            "gamma": columns[key][0]["gamma"],
            "etas": etas,
            "start": starts[key],
            "edge": edge,
            "eta_max_short": etas[edge - 1] if edge > 0 else None,
            "trials": {str(i): step for i, step in sorted(trials.items())},
        }
        print(
            f"gamma {records[key]['gamma']:.3g}: edge at eta {etas[edge] if edge < len(etas) else 'beyond the grid'}"
            f" after {len(trials)} short runs",
            flush=True,
        )
    record = {
        "experiment": next(iter(columns.values()))[0]["experiment"],
        "settings": settings,
        "trial_steps": adaptive.bracket_steps,
        "columns": records,
        "versions": versions(),
        "wall_time_s": time.time() - began,
    }
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1))
    print(f"{len(records)} columns bracketed; {sum(r['edge'] > 0 for r in records.values())} have points to train")


def first_diverged_step(curves: Curves) -> int:
    """A cell's divergence step: its first diverged seed's, -1 if no seed diverged."""
    steps = curves.diverged_step[curves.diverged_step >= 0]
    return int(steps.min()) if len(steps) else -1


def train_column(
    cells: Sequence[dict],
    files: Sequence[str],
    pool: str | Sequence[str],
    test: str,
    brackets: str,
    gamma_key: str,
    depth_steps: int | None,
    out_dir: str,
    rounds: str,
    checkpoint: str | None = None,
    checkpoint_seconds: float = 60.0 * DEFAULT_MINUTES,
) -> None:
    """The training stage of an adaptive column: train the window of its bracketed edge (its record in the
    experiment's ``brackets`` at ``gamma_key``) at full length (``adaptive.train_window``: it grows on late
    divergence); write the cell file of each trained point (``files``, one per cell, inside ``out_dir``), and
    ``out_dir/column.json``: the final edge and every point's status.

    Each round's cell files are written to ``rounds`` (a directory outside the output, which Snakemake
    deletes when the job fails; ``KeptRounds``) and move into ``out_dir`` at the end: a rerun trains only
    the rounds not yet finished, the current one from its ``checkpoint`` (see ``run_cells``)."""
    record = json.loads(Path(brackets).read_text())["columns"][gamma_key]
    pools = [pool] if isinstance(pool, str) else list(pool)
    data = [
        (str(path), os.stat(path).st_size, os.stat(path).st_mtime_ns) for path in (*pools, test)
    ]  # rewritten: new data
    kept = KeptRounds(rounds, files, fingerprint(cells, files, data, record["edge"], depth_steps))

    def run_full(indices: list[int]) -> dict[int, bool]:
        if (finished := kept.finished(indices)) is not None:
            print(f"grid points {indices}: trained before, kept in {rounds}", flush=True)
            return finished
        chosen = [cells[i] for i in indices]
        curves = run_cells(
            chosen,
            pool,
            test,
            f"column {out_dir}",
            outs=[kept.path(i) for i in indices],
            checkpoint=checkpoint,
            checkpoint_seconds=checkpoint_seconds,
        )
        diverged = {i: bool(c.diverged.any()) for i, c in zip(indices, per_cell(curves, chosen), strict=True)}
        kept.add(diverged)
        return diverged

    edge, trained = train_window(len(cells), record["edge"], depth_steps, run_full)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for i in sorted(trained):
        shutil.move(kept.path(i), files[i])
    column = {
        "gamma": cells[0]["gamma"],
        "edge": edge,
        "bracket_edge": record["edge"],
        "depth_steps": depth_steps,
        "status": statuses(len(cells), edge, trained),
        "files": {str(i): Path(files[i]).name for i in sorted(trained)},
    }
    with atomic_path(Path(out_dir) / "column.json") as tmp:
        Path(tmp).write_text(json.dumps(column, indent=1))
    shutil.rmtree(rounds, ignore_errors=True)
    print(f"trained {len(trained)} of {len(cells)} grid points; edge index {edge} (bracket: {record['edge']})")


class KeptRounds:
    """The finished rounds of an adaptive column, kept in their own directory: each trained point's cell
    file (named as in the output) and diverged flag, in ``rounds.json`` with the column's settings ``key``.
    Rounds of other settings or other data are reported and discarded."""

    def __init__(self, directory: str | Path, files: Sequence[str], key: str) -> None:
        self.directory, self.names, self.key = Path(directory), [Path(f).name for f in files], key
        self.record = self.directory / "rounds.json"
        self.diverged: dict[int, bool] = {}
        if self.record.exists():
            saved = json.loads(self.record.read_text())
            if saved["key"] == key:
                self.diverged = {int(i): flag for i, flag in saved["diverged"].items()}
            else:
                print(f"finished rounds in {self.directory} belong to other settings or data; discarded", flush=True)
                shutil.rmtree(self.directory)

    def path(self, i: int) -> Path:
        """Where grid point ``i``'s cell file is written."""
        return self.directory / self.names[i]

    def finished(self, indices: list[int]) -> dict[int, bool] | None:
        """The diverged flags of a round whose every point was trained and kept, else None."""
        if all(i in self.diverged and self.path(i).exists() for i in indices):
            return {i: self.diverged[i] for i in indices}
        return None

    def add(self, diverged: dict[int, bool]) -> None:
        """Record a round whose cell files are written."""
        self.diverged |= diverged
        with atomic_path(self.record) as tmp:
            Path(tmp).write_text(json.dumps({"key": self.key, "diverged": self.diverged}, indent=1))
