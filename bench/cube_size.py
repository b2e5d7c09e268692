"""File size and peak memory of a paper-size cube: the aggregation job that builds it and the figure jobs
that read it.

For one experiment of a config (default: config/paper.yaml's mlp3_mnist1m_mse, 21 gamma x 49 eta x 3
seeds with every probe), synthetic cell files of its whole grid go through the real writer
(``results.cells.write_cell``), with the records the real probes make on the config's model
(``probes.recorder.ProbeRecorder``: their dimensions and labels) and synthetic values: cells above the
theory's guess of eta_max (``Plan.bracket_start``) diverge, earlier the further above, and their
records are NaN from then on; the others carry random numbers (incompressible mantissas, as measured
ones). Then, each in a fresh process that reports its peak resident memory (VmHWM, ``PEAK``):

- ``aggregate``: the aggregation job (``jobs.aggregate.aggregate``: every cell file checked against the
  plan's params, the cube built and written);
- one job per figure of the config that reads the experiment (``figures.render``); a figure that also
  reads other experiments reads this cube in their place, an upper bound (theirs are adaptive sweeps
  with fewer probes);
- the heaviest figure once more with its cubes loaded whole, as ``open_cube`` did before it opened lazily;
- ``import only``: a process that imports the figure code and stops, the floor under every figure job.

    python bench/cube_size.py                  # the full grid: ~2 GB of cell files in a temporary folder
    python bench/cube_size.py --gammas 5       # the first 5 gammas only; size and build memory extrapolated
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gammasweep.plan.plan import Plan, cell_path
from gammasweep.probes.recorder import Network, ProbeRecorder
from gammasweep.results.cells import write_cell
from gammasweep.results.curves import Curves, eval_steps, record_steps
from gammasweep.sweep.models import build_model

REPO = Path(__file__).resolve().parents[1]
# A job's own peak: VmHWM, the high-water mark of its address space's resident set. Not getrusage's ru_maxrss,
# which Linux carries over an exec from the forking process (here, this one with its gigabytes of cells).
PEAK = "import sys; print('PEAK', open('/proc/self/status').read().split('VmHWM:')[1].split()[0], file=sys.stderr)"


def recorder(params: dict) -> ProbeRecorder:
    """The probe records of a cell of ``params``, NaN: the real recorder on the config's model, its probe
    batches zeros (the dims and labels of each record depend on the model and settings, not on data)."""
    seeds, classes, shape = params["seeds"], params["num_classes"], tuple(params["input_shape"])
    model = build_model(params["model"], shape, classes, seeds=seeds)
    examples = max([1] + [s.get("examples", 0) for s in params["probes"].values()])
    net = Network(
        model=model,
        loss=None,
        centered=None,
        initial=None,
        initial_output=lambda x: torch.zeros(len(seeds), len(x), classes),
        lr_unit=float(model.width),
    )
    x, y = torch.zeros(examples, *shape), torch.zeros(examples, dtype=torch.long)
    return ProbeRecorder(params["probes"], net, x, y, seeds, len(eval_steps(params["steps"])), classes)


def synthetic_curves(probes: ProbeRecorder, params: dict, above_edge: int, rng: np.random.Generator) -> Curves:
    """A cell ``above_edge`` grid steps above eta_max (<= 0: it trains) with every record of ``probes``:
    losses falling the faster the nearer the edge; a diverged cell (above it) at step T / 10^(above - 1),
    NaN from then on."""
    steps, seeds = params["steps"], len(params["seeds"])
    rec, evals = record_steps(steps, params["record_points"]), eval_steps(steps)
    diverged_step = int(steps / 10.0 ** (above_edge - 1)) if above_edge > 0 else -1
    rate = 10.0 ** min(above_edge, 0) / 100.0
    alive = lambda t: (diverged_step < 0) | (t < diverged_step)  # noqa: E731

    def loss(t: np.ndarray) -> np.ndarray:
        clean = 0.1 + 0.9 * np.exp(-rate * t) * rng.uniform(0.9, 1.1, (seeds, len(t)))
        return np.where(alive(t), clean, np.nan)

    for name, values in probes.records.items():
        draw = rng.standard_normal(tuple(values.shape), dtype=np.float32)
        mask = alive(evals) if name not in probes.final else np.array(alive(np.array(steps)))
        mask = mask.reshape((1, -1) + (1,) * (draw.ndim - 2)) if mask.ndim else mask
        probes.records[name] = torch.from_numpy(np.where(mask, draw, np.float32(np.nan)))
    test_loss = loss(evals)
    return Curves(
        step=rec,
        train_loss=loss(rec),
        train_loss_at_step=loss(rec),
        eval_step=evals,
        test_loss=test_loss,
        test_accuracy=1.0 - 0.9 * test_loss,
        diverged=np.full(seeds, diverged_step >= 0),
        diverged_step=np.full(seeds, diverged_step),
        probes=probes.curves(evals),
    )


def write_cells(plan: Plan, experiment: str, gammas: int, root: Path) -> tuple[list[str], list[dict]]:
    """The synthetic cell files of the first ``gammas`` gammas (every eta) under ``root``: (files, params)."""
    keys = list(plan.grids[experiment][0])[:gammas]
    cells = [cell for cell in plan.cells(experiment) if cell[0] in keys]
    params = [plan.cell_params(experiment, *cell) for cell in cells]
    probes, rng = recorder(params[0]), np.random.default_rng(0)
    etas = list(plan.grids[experiment][1])
    files = []
    for (gamma_key, eta_key), cell in zip(cells, params):
        above = etas.index(eta_key) - (plan.bracket_start(experiment, gamma_key) + 1)
        path = root / cell_path(experiment, gamma_key, eta_key)
        write_cell(path, synthetic_curves(probes, cell, above, rng), cell, {"wall_time_s": 1.0})
        files.append(str(path))
    return files, params


def job(name: str, code: str) -> tuple[str, float, float]:
    """Run ``code`` in a fresh Python process: (``name``, its peak resident memory in GB, its wall time in
    s); a failed job's peak is NaN and its name says why."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", f"{code}\n{PEAK}"], capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return f"{name}: failed, {done.stderr.strip().splitlines()[-1]}", np.nan, wall
    peak = next(line for line in done.stderr.splitlines() if line.startswith("PEAK "))
    print(f"{name}: {int(peak.split()[1]) / 1e6:.2f} GB, {wall:.0f} s", flush=True)
    return name, int(peak.split()[1]) / 1e6, wall  # VmHWM: kB


def figure_code(plot: str, cubes: list[str], options: dict, out: Path, whole: bool = False) -> str:
    """A figure job (what workflow/scripts/plot_figure.py runs); ``whole``: cubes loaded whole first."""
    outputs = {fmt: str(out / f"{plot}.{fmt}") for fmt in ("pdf", "png", "csv")}
    load = "F.open_cube = lambda p: xr.open_dataset(p, engine='h5netcdf').load()"
    patch = f"import xarray as xr, gammasweep.figures as F\n{load}\n" if whole else ""
    return f"{patch}from gammasweep.figures import render\nrender({plot!r}, {cubes!r}, {options!r}, {outputs!r})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "config" / "paper.yaml"))
    parser.add_argument("--experiment", default="mlp3_mnist1m_mse")
    parser.add_argument("--gammas", type=int, help="the first GAMMAS gammas only (default: all)")
    args = parser.parse_args()
    plan = Plan.from_files(args.config, REPO / "config" / "schema.yaml")
    all_gammas = len(plan.grids[args.experiment][0])
    gammas = min(args.gammas or all_gammas, all_gammas)
    scale = all_gammas / gammas
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        files, params = write_cells(plan, args.experiment, gammas, root)
        cell_bytes = sum(Path(f).stat().st_size for f in files)
        print(
            f"{args.experiment}: {gammas} of {all_gammas} gammas x {len(plan.grids[args.experiment][1])} etas x "
            f"{len(params[0]['seeds'])} seeds, probes {sorted(params[0]['probes'])}; {len(files)} cell files, "
            f"{cell_bytes / 1e9:.2f} GB, written in {time.perf_counter() - start:.0f} s\n"
        )
        cube = root / "cube.nc"
        (root / "job.json").write_text(json.dumps([files, params, plan.config["experiments"][args.experiment]]))
        build = (
            f"import json; from gammasweep.jobs.aggregate import aggregate\n"
            f"files, expected, config = json.load(open({str(root / 'job.json')!r}))\n"
            f"aggregate(files, expected, config, {str(cube)!r})"
        )
        rows = [job("aggregate (build and write the cube)", build)]
        size = cube.stat().st_size
        figures = {
            name: figure
            for name, figure in plan.config["figures"].items()
            if args.experiment in figure.get("experiments", [])
        }
        for name, figure in figures.items():
            cubes = [str(cube)] * len(figure["experiments"])
            rows.append(job(f"figure {name}", figure_code(figure["plot"], cubes, figure.get("options", {}), root)))
        heaviest = max((row for row in rows[1:] if np.isfinite(row[1])), key=lambda row: row[1])[0]
        heaviest = heaviest.removeprefix("figure ")
        figure = figures[heaviest]
        cubes = [str(cube)] * len(figure["experiments"])
        code = figure_code(figure["plot"], cubes, figure.get("options", {}), root, whole=True)
        rows.append(job(f"figure {heaviest}, cubes loaded whole (as before)", code))
        rows.append(job("import only (the floor of a figure job)", "import gammasweep.figures"))
    note = "" if scale == 1 else f" (measured on {gammas} of {all_gammas} gammas)"
    print(f"cube file: {size / 1e9:.3f} GB{note}; cell files: {cell_bytes / 1e9:.2f} GB\n")
    print("| job | peak RSS GB | wall s |")
    print("|---|---|---|")
    for name, peak, wall in rows:
        print(f"| {name} | {peak:.2f} | {wall:.0f} |")
    if scale != 1:
        floor = rows[-1][1]
        print(
            f"\nextrapolated to all {all_gammas} gammas (x {scale:.2f} per cell): cube file ~{size * scale / 1e9:.2f} "
            f"GB, aggregate ~{floor + (rows[0][1] - floor) * scale:.2f} GB (the floor plus the arrays, "
            "which grow with the cells)"
        )


if __name__ == "__main__":
    main()
