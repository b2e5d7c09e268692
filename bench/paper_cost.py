"""What a config costs at paper scale, on paper: per experiment, cells, cell-steps, FLOPs and GPU-hours,
as this config plans it, as the authors' protocol would, and as the full grid would.

FLOPs of a model are counted, not typed in: torch's ``FlopCounterMode`` over one forward, and one forward
and backward, of one member of the experiment's model (``sweep.models.build_model``) on the meta device
(matrix products and convolutions, 2 FLOPs a multiply-add; elementwise work is not counted). An
experiment's FLOPs are
- training: members x steps x batch x (forward + backward), a member one (gamma, eta, seed) network;
- the centering's frozen theta_0: a forward of each batch per seed and step in each job (a pack, or an
  adaptive column); in the authors' code a frozen copy per member;
- the test evaluations: members x eval steps x test examples x forward;
- the probes, an estimate (``probe_flops``: Hessian-vector products ~ two gradients each, ...), not counted.
The same pass counts the model's ops (aten operations: a GPU kernel launch each), whatever the batch or
the members packed.

The protocols, each over every experiment of the config:
- planned: this config; a full-grid experiment trains every cell, an adaptive one what
  ``adaptive_budget.budget`` estimates (the edge where the theory guesses it: the window from the edge
  down ``depth_decades`` at full length, plus the bracketing runs, which run no probes). Packs in parallel;
- authors: adaptive eta in every sweep, as the authors' code, one job per experiment training its
  cells one after another (that job's wall time is its GPU-hours);
- full grid: every cell of every experiment at full length.
Every cell is counted at full length, also one that diverges early (a pack drops it then): an upper bound,
most so for the full grids, whose cells above the edge diverge within a few steps.

GPU-hours are an estimate, no GPU having been lent: FLOPs at ``FRACTION`` of ``GPU``'s peak in the cells'
dtypes, but a training step takes at least its ops at ``OP_SECONDS`` each (eager PyTorch launches kernels
one by one): a small model trained alone, as in the authors' loop, is launch-bound; a pack of many members
is not. With ``--cpu`` a column is measured: ``packed_cells.measure`` on the paper MLP (width 512, 28 x 28,
K = 8) counts the packed trainer's FLOP/s on this machine; CPU-hours at that rate.

    python bench/paper_cost.py                     # config/paper.yaml, about a minute
    python bench/paper_cost.py --cpu               # and the CPU-hours at the packed trainer's rate here
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from adaptive_budget import budget
from packed_cells import BATCH, CLASSES, measure
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from gammasweep.data.pools import write_images
from gammasweep.plan.config import load_schema
from gammasweep.plan.plan import Plan
from gammasweep.probes.recorder import Probe, make_probes
from gammasweep.results.curves import eval_steps
from gammasweep.sweep.models import build_model

REPO = Path(__file__).resolve().parents[1]
GPU = "NVIDIA H100 SXM"
# Dense peaks from the H100 datasheet: float32 without tensor cores (PyTorch leaves TF32 off for matrix
# products, and this code does not switch it on; TF32 would be 495 TFLOP/s), float64 on its tensor cores.
PEAK_TFLOPS = {"float32": 67.0, "float64": 67.0}
FRACTION = 0.3  # an assumed achieved fraction of that peak: an estimate, until a GPU run measures it
HVP = 2.0  # a Hessian-vector product (reverse over reverse) costs about two gradients
OP_SECONDS = 10e-6  # an eager PyTorch op's launch on a GPU, host side (typically 5-20 us): an estimate


@dataclass(frozen=True)
class ModelCost:
    """One member's FLOPs per example: ``forward``, ``train`` (forward + backward); its ``params``; the ``ops``
    (kernels) of one forward and backward, whatever the batch or the number of members packed."""

    forward: float
    train: float
    params: int
    ops: int


class OpCounter(TorchDispatchMode):
    """Counts the aten operations dispatched inside it: on a GPU, one kernel launch each."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def model_cost(params: dict) -> ModelCost:
    """Count a cell's model on the meta device: one forward, then one forward + backward of an MSE loss, on
    a batch of 4 (FLOPs per example are the same at any batch)."""
    model = build_model(params["model"], tuple(params["input_shape"]), params["num_classes"], seeds=[0]).to("meta")
    x = torch.zeros(4, *params["input_shape"], device="meta")
    with FlopCounterMode(display=False) as forward:
        model(x)
    with FlopCounterMode(display=False) as train, OpCounter() as ops:
        model(x).square().mean().backward()
    count = sum(p.numel() for p in model.parameters())
    return ModelCost(forward.get_total_flops() / 4, train.get_total_flops() / 4, count, ops.ops)


def probe_flops(probe: Probe, model: ModelCost, classes: int) -> float:
    """An estimate of one member's FLOPs for ``probe`` at one eval step, from its settings: power iteration
    and Lanczos steps are Hessian-vector products (``HVP`` gradients) on its examples, a Gauss-Newton product
    a forward and a backward mode pass; the alignment probe's per-example Jacobians are classes backward
    passes per example, then their Gram matrix. Final-only probes (one forward after the last step) and
    those that read only weights are left out."""
    p, step = probe.examples, model.train
    match probe.name:
        case "sharpness" | "readout_sharpness":
            return 2 * probe.iterations * HVP * p * step  # two phases of power iteration
        case "hessian_trace":
            return probe.vectors * HVP * p * step
        case "spectrum":
            return probe.vectors * probe.iterations * HVP * p * step
        case "ntk_spectrum":
            return probe.iterations * 2 * p * step
        case "alignment":
            return classes * p * step + 2 * p * p * classes * model.params
        case "feature_sparsity":
            return p * model.forward
    return 0.0


@dataclass(frozen=True)
class Work:
    """What a protocol trains of one experiment: full-length ``cells`` in ``runs`` (batched models trained side
    by side, each evaluating theta_0 once per seed and step: packs or columns; in the authors' code one per
    member), short ``bracket_cells`` of ``bracket_steps`` (no probes, FLOP-bound), and the cells of its
    ``largest_job``."""

    cells: int
    runs: int
    largest_job: int
    bracket_cells: int = 0
    bracket_steps: int = 0


def works(plan: Plan, name: str) -> dict[str, Work]:
    """The work of experiment ``name`` under each protocol (see the module doc)."""
    gammas, etas = plan.grids[name]
    full, size, seeds = len(gammas) * len(etas), plan.pack_size(name), plan.config["experiments"][name]["seeds"]
    if len(etas) < 2:  # one eta (A-DEEP's runs): nothing to adapt
        adaptive = Work(full, full, 1)
    else:
        b = budget(plan, name, 0.0)
        per_column = math.ceil(b["trained_cells"] / len(gammas))  # a column job trains its window
        bracket_steps = plan.adaptive_settings(name).bracket_steps
        adaptive = Work(b["trained_cells"], len(gammas), per_column, b["bracket_cells"], bracket_steps)
    packed = Work(full, math.ceil(full / size), min(size, full))
    one_by_one = Work(
        adaptive.cells, adaptive.cells * seeds, adaptive.cells, adaptive.bracket_cells, adaptive.bracket_steps
    )
    return {"planned": adaptive if plan.is_adaptive(name) else packed, "authors": one_by_one, "full grid": packed}


def cost(
    work: Work, params: dict, model: ModelCost, probes: list[Probe], rate: float
) -> tuple[dict[str, float], float]:
    """(FLOPs of ``work`` by part: training with theta_0's forwards, test evaluations, probes (estimated);
    its GPU-seconds at ``rate`` FLOP/s). A run's training step takes the longer of its FLOPs at ``rate`` and
    its ops at ``OP_SECONDS`` each (the launch-bound floor of a small model trained alone); the bracketing
    runs (batched), evaluations and probes take their FLOPs at ``rate``."""
    seeds, steps, batch = len(params["seeds"]), params["steps"], params["batch_size"]
    members, short, evals = work.cells * seeds, work.bracket_cells * seeds, len(eval_steps(steps))
    per_run = members / work.runs
    step = batch * (per_run * model.train + min(seeds, per_run) * model.forward)  # one run's step, theta_0 included
    flops = {
        "train": work.runs * steps * step + short * work.bracket_steps * batch * model.train,
        "evals": (members * evals + short * (len(eval_steps(work.bracket_steps)) if short else 0))
        * params["test_examples"]
        * model.forward,
        "probes": members * evals * sum(probe_flops(p, model, params["num_classes"]) for p in probes),
    }
    stepping = work.runs * steps * max(step / rate, model.ops * OP_SECONDS)
    return flops, stepping + (sum(flops.values()) - work.runs * steps * step) / rate


def cpu_rates() -> dict[str, float]:
    """FLOP/s on this machine of the packed trainer, counted over its run, and of the per-cell baseline at the
    same FLOPs per cell-step (``packed_cells.measure``; the paper's MLP: width 512, depth 3, 28 x 28, K = 8)."""
    spec, shape, steps, k = {"name": "mlp", "width": 512, "depth": 3}, (28, 28, 1), 20, 8
    with tempfile.TemporaryDirectory() as tmp:
        rng, pool = np.random.default_rng(0), Path(tmp) / "pool.h5"
        images = rng.integers(0, 256, (BATCH * steps, *shape), dtype=np.uint8)
        write_images(pool, images, rng.integers(0, CLASSES, len(images)))
        rates = measure(spec, shape, k, steps, pool, torch.device("cpu"), count_flops=True)
    return {"packed": rates["packed_flops"], "baseline": rates["packed_flops"] * rates["baseline"] / rates["packed"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default=str(REPO / "config" / "paper.yaml"))
    parser.add_argument("--cpu", action="store_true", help="measure the packed trainer's FLOP/s on this CPU")
    args = parser.parse_args()
    plan = Plan(yaml.safe_load(Path(args.config).read_text()), load_schema(REPO / "config" / "schema.yaml"))
    peaks = ", ".join(f"{dtype} {tflops:.0f} TFLOP/s" for dtype, tflops in PEAK_TFLOPS.items())
    print(f"GPU-hours, an estimate: FLOPs / ({FRACTION:.0%} of the {GPU}'s dense peak: {peaks})\n")
    print(
        "| experiment | model | float64 cells | MFLOP/example (fwd + bwd) | ops/step | here | cells (+ short runs) "
        "| cell-steps "
        "| train + evals PFLOP | probes PFLOP (est.) | GPU-h (est.) | largest job GPU-h | authors: PFLOP, GPU-h "
        "| full grid: PFLOP, GPU-h |"
    )
    print("|" + "---|" * 14)
    keys = ("cells", "cell_steps", "flops", "hours", "longest")
    totals = {protocol: dict.fromkeys(keys, 0.0) for protocol in ("planned", "authors", "full grid")}
    models: dict[str, ModelCost] = {}  # by model, input and classes
    for name in plan.config["experiments"]:
        cells = [plan.cell_params(name, *cell) for cell in plan.cells(name)]
        params = cells[0]
        key = json.dumps([params[k] for k in ("model", "input_shape", "num_classes")])
        if key not in models:
            models[key] = model_cost(params)
        model = models[key]
        probes = make_probes(params.get("probes", {}))
        float64 = sum(c["dtype"] == "float64" for c in cells) / len(cells)
        rate = FRACTION * 1e12 * (PEAK_TFLOPS["float64"] * float64 + PEAK_TFLOPS["float32"] * (1 - float64))
        row = {}
        for protocol, work in works(plan, name).items():
            f, seconds = cost(work, params, model, probes, rate)
            hours = seconds / 3600
            row[protocol] = (work, f, hours, hours / work.cells * work.largest_job)
            total = totals[protocol]
            total["cells"] += work.cells + work.bracket_cells
            total["cell_steps"] += work.cells * params["steps"] + work.bracket_cells * work.bracket_steps
            total["flops"] += sum(f.values())
            total["hours"] += hours
            total["longest"] = max(total["longest"], row[protocol][3])
        work, f, hours, longest = row["planned"]
        spec = ", ".join(f"{k} {v}" for k, v in params["model"].items() if k != "name")
        print(
            f"| {name} | {params['model']['name']} ({spec}) | {float64:.0%} | {model.train / 1e6:.3g} | {model.ops} "
            f"| {'adaptive' if plan.is_adaptive(name) else 'full grid'} | {work.cells} (+ {work.bracket_cells}) "
            f"| {work.cells * params['steps'] + work.bracket_cells * work.bracket_steps:.3g} "
            f"| {(f['train'] + f['evals']) / 1e15:.3g} | {f['probes'] / 1e15:.3g} | {hours:.3g} | {longest:.2g} | "
            + " | ".join(f"{sum(row[p][1].values()) / 1e15:.3g}, {row[p][2]:.3g}" for p in ("authors", "full grid"))
            + " |",
            flush=True,
        )
    rates = cpu_rates() if args.cpu else {}
    cpu = " CPU-h here (packed, measured rate) |" if rates else ""
    print(f"\n| protocol | cells (+ short runs) | cell-steps | PFLOP | GPU-h (est.) | longest job GPU-h (est.) |{cpu}")
    print("|---|---|---|---|---|---|" + ("---|" if rates else ""))
    for protocol, t in totals.items():
        cpu = f" {t['flops'] / rates['packed'] / 3600:.3g} |" if rates else ""
        print(
            f"| {protocol} | {t['cells']:.0f} | {t['cell_steps']:.3g} | {t['flops'] / 1e15:.3g} | {t['hours']:.3g} "
            f"| {t['longest']:.3g} |{cpu}"
        )
    if rates:
        ratio = rates["packed"] / rates["baseline"]
        print(
            f"\nCPU here, the paper MLP (width 512, 28 x 28, K = 8, float32): packed {rates['packed'] / 1e9:.1f} "
            f"GFLOP/s, the per-cell baseline {rates['baseline'] / 1e9:.1f} GFLOP/s ({ratio:.2f}x)"
        )


if __name__ == "__main__":
    main()
