"""Run the real workflow on a micro config in a scratch copy of the repository's workflow."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import yaml
from conftest import h5_datasets

from gammasweep.jobs.train import train_pack
from gammasweep.plan.plan import Plan

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "profiles", "envs")

MICRO_DATASET = {
    "kind": "generated",
    "source": "sklearn_digits",
    "generator": {
        "dim": 8,
        "dim_mults": [1, 2],
        "timesteps": 40,
        "train_steps": 20,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "ema_decay": 0.9,
        "cond_drop_prob": 0.1,
        "seed": 0,
    },
    "sampling": {"images": 400, "shards": 2, "seed": 0, "guidance_weight": 0.5, "sampling_steps": 4, "batch_size": 200},
    # The micro generator is far too short to make recognisable digits: its gate only checks balance.
    "quality_gate": {"min_agreement": 0.0, "max_imbalance": 0.05, "classifier_steps": 20},
    "normalization": {"mean": [0.3], "std": [0.4]},
}


def micro_config(losses: tuple[str, ...] = ("mse", "cross_entropy")) -> dict:
    """Two experiments (one per loss) of 2 gamma x 2 eta cells in 2 packs, each with its three figures;
    the MSE one also carries every probe and the figures that need them, and a toy model has its
    figure, and the dataset its sample grid: every plot kind runs."""
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    experiment = {
        "dataset": "micro",
        "model": {"name": "mlp", "width": 16, "depth": 3},
        "batch_size": 8,
        "steps": 20,
        "seeds": 2,
        "data_seed": 0,
        "pack_size": 2,
        "gamma": [0.1, 10.0],
        "eta": [1e-2, 1e6],
    }
    config = {
        "training": default["training"],
        "datasets": {"micro": copy.deepcopy(MICRO_DATASET)},
        "experiments": {},
        "figures": {},
    }
    for loss in losses:
        name = f"mlp_{loss}"
        config["experiments"][name] = {**copy.deepcopy(experiment), "loss": loss}
        config["figures"] |= {
            f"phase_{name}": {"plot": "phase_portrait", "experiments": [name]},
            f"curves_{name}": {"plot": "loss_curves", "experiments": [name]},
            f"scaling_{name}": {"plot": "eta_star_scaling", "experiments": [name]},
        }
    if "mse" in losses:
        config["experiments"]["mlp_mse"]["training"] = {
            "probes": {
                "sharpness": {"examples": 32, "iterations": 4},
                "spectrum": {"examples": 32, "iterations": 4},
                "alignment": {"examples": 8},
                "outputs": {"examples": 32},
                "representation": {"examples": 8},
                "weight_movement": {},
                "noether_charge": {},
                "feature_sparsity": {"examples": 8},
                "readout_sharpness": {"examples": 32, "iterations": 4},
                "hessian_trace": {"examples": 32, "vectors": 2},
                "ntk_spectrum": {"examples": 8, "iterations": 4, "modes": 2},
            }
        }
        config["figures"] |= {
            plot: {"plot": plot, "experiments": ["mlp_mse"]}
            for plot in (
                "catapult",
                "hessian_spectrum",
                "silent_alignment",
                "output_agreement",
                "representation_similarity",
                "weight_movement",
                "feature_sparsity_curves",
                "curvature_measures",
            )
        }
        config["figures"] |= {
            "phase_steps_mlp_mse": {
                "plot": "phase_portrait",
                "experiments": ["mlp_mse"],
                "options": {"steps": [5, 20]},
            },
            "performance_mlp_mse": {"plot": "performance_vs_gamma", "experiments": ["mlp_mse"]},
            "sharpness_mlp_mse": {
                "plot": "sharpness_vs_gamma",
                "experiments": ["mlp_mse"],
                "paper": "Fig. 3a",
                "caption": "Sharpness falls with gamma.",
            },
            "sharpness_steps_mlp_mse": {"plot": "sharpness_trajectory", "experiments": ["mlp_mse"]},
        }
    config["toy_models"] = {
        "toy": {
            "loss": "mse",
            "depth": 3,
            "steps": 50,
            "gamma": [0.01, 1.0, 100.0],
            "eta": {"min": 1e-6, "max": 1e2, "per_decade": 2},
        }
    }
    config["figures"]["toy"] = {"plot": "toy_phase_portrait", "toy_models": ["toy"]}
    config["figures"]["regimes"] = {"plot": "regime_diagram", "toy_models": ["toy"]}
    config["figures"]["samples"] = {"plot": "sample_grid", "datasets": ["micro"], "options": {"per_class": 2}}
    return config


def long_pack_config(width: int, steps: int) -> dict:
    """One experiment with a single pack (2 cells x 2 seeds, batch 1, ``steps`` steps) that runs long
    enough to be interrupted mid-way, and one figure."""
    config = micro_config(losses=("mse",))
    config["datasets"]["micro"]["sampling"]["images"] = steps
    config["experiments"]["mlp_mse"] |= {
        "model": {"name": "mlp", "width": width, "depth": 4},
        "batch_size": 1,
        "steps": steps,
        "gamma": [0.1, 10.0],
        "eta": [1e-3],
        "pack_size": 2,
        "training": {"probes": {"weight_movement": {}}},
    }  # a cheap probe resumes too
    config["figures"] = {"curves_mlp_mse": {"plot": "loss_curves", "experiments": ["mlp_mse"]}}
    return config


def scratch_workflow(root: Path, config: dict) -> Path:
    """Copy the workflow files into ``root`` (created if needed) and write ``config`` as root/micro.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    (root / "micro.yaml").write_text(yaml.safe_dump(config))
    return root


def job_table(dry_run_stdout: str) -> str:
    """The first job-stats table of ``snakemake -n`` (it prints the table twice)."""
    return dry_run_stdout.split("\ntotal", 1)[0]


def rule_counts(dry_run_stdout: str) -> dict[str, int]:
    """Jobs per rule from the (first) job-stats table of ``snakemake -n --quiet rules``; the generated
    training rules (train_<experiment>_pack<NNNN>, one job each) summed under 'train_pack'."""
    counts: dict[str, int] = {}
    for rule, jobs in re.findall(r"^(\w+)\s+(\d+)$", job_table(dry_run_stdout), re.MULTILINE):
        key = "train_pack" if re.fullmatch(r"train_\w+_pack\d{4}", rule) else rule
        counts[key] = counts.get(key, 0) + int(jobs)
    return counts


def snakemake(
    root: Path, *args: str, timeout: int = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run snakemake (this interpreter's) in ``root`` (``env``: extra environment variables); return the
    finished process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=root,
        env={**snakemake_env(), **(env or {})},
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def snakemake_env() -> dict[str, str]:
    """This environment without SLURM job variables, with this interpreter's scripts first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def assert_cells_equal_an_uninterrupted_run(root: Path, experiment: str, scratch: Path) -> None:
    """Retrain the cells of ``experiment`` in ``root`` (a micro workflow) in one uninterrupted pack, in
    this process, and check every dataset of every cell file is bit-identical to it."""
    cells = sorted((root / "results" / "runs" / experiment).rglob("*.h5"))
    params = []
    for cell in cells:
        with h5py.File(cell) as f:
            params.append(json.loads(f.attrs["params"]))
    reference = [str(scratch / f"uninterrupted{i}.h5") for i in range(len(cells))]
    train_pack(
        params,
        str(root / "results" / "data" / "micro" / "pool.h5"),
        str(root / "results" / "data" / "sources" / "sklearn_digits" / "test.h5"),
        reference,
    )
    for resumed, uninterrupted in zip(cells, reference, strict=True):
        a, b = h5_datasets(resumed), h5_datasets(uninterrupted)
        assert a.keys() == b.keys()
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{resumed}: {key}")


# config/config.yaml as the workflow reads it: validated and completed with the schema's defaults
DEFAULT_CONFIG = Plan.from_files(REPO / "config" / "config.yaml", REPO / "config" / "schema.yaml").config


def small_dln(steps: int = 300) -> dict:
    """The default config's A-DLN experiment, smaller: d = 30, n = 12, 2 seeds, a GD variant."""
    spec = copy.deepcopy(DEFAULT_CONFIG["related"]["sparse_dln_sgd"])
    spec.update(steps=steps, seeds=2, record_points=6)
    spec["settings"].update(dim=30, train=12, test=50, support=3)
    spec["variants"]["gd"] = {"eta": 0.1, "settings": {"batch_size": 12}}
    return spec
