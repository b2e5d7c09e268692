"""The Snakemake workflow for real: an end-to-end micro run, single-figure targets, the paper
config's dry-run, lint, and config errors before any job runs."""

from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pytest
import yaml
from workflow_helpers import REPO, micro_config, rule_counts, scratch_workflow, snakemake

from gammasweep.config import Plan

from gammasweep.cube import open_cube


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    root = scratch_workflow(tmp_path_factory.mktemp("micro"), micro_config())
    result = snakemake(root, "--configfile", "micro.yaml", "--cores", "2")
    assert result.returncode == 0, result.stderr[-5000:]
    return root


def test_end_to_end_micro_run_builds_every_figure(micro_run):
    config = micro_config()
    for name in config["figures"]:
        for ext in ("pdf", "png", "csv"):
            assert (micro_run / "results" / "figures" / f"{name}.{ext}").stat().st_size > 0
    cells = sorted((micro_run / "results" / "runs").rglob("*.h5"))
    assert len(cells) == 2 * 2 * 2  # experiments x gamma x eta
    with h5py.File(cells[0]) as f:
        prov = json.loads(f.attrs["provenance"])
        assert prov["versions"]["torch"] and prov["wall_time_s"] > 0 and "device" in prov
    cube = open_cube(micro_run / "results" / "cubes" / "mlp_mse.nc")
    assert cube.sizes["gamma"] == 2 and cube.sizes["eta"] == 2 and cube.sizes["seed"] == 2
    assert cube["diverged"].sel(eta=1e6).all() and not cube["diverged"].sel(eta=1e-2).any()
    assert np.isfinite(cube["test_loss"].sel(eta=1e-2).isel(eval_step=-1)).all()
    with h5py.File(micro_run / "results" / "data" / "micro" / "pool.h5") as f:
        assert f["images"].shape == (400, 8, 8, 1) and f["images"].dtype == np.uint8
        assert np.bincount(f["labels"][()]).tolist() == [40] * 10
    logs = list((micro_run / "results" / "logs").rglob("*.log"))
    assert any("step 20/20" in p.read_text() for p in logs)  # training progress reached the logs


def test_one_figure_target_needs_only_its_experiment(micro_run, tmp_path):
    # In a fresh directory the mse figure plans the mse cells only, never the cross-entropy ones.
    fresh = scratch_workflow(tmp_path, micro_config())
    plan = snakemake(fresh, "--configfile", "micro.yaml", "-n", "results/figures/phase_mlp_mse.pdf")
    assert plan.returncode == 0, plan.stderr
    assert rule_counts(plan.stdout)["train_pack"] == 2 and "mlp_cross_entropy" not in plan.stdout
    # In the finished run, a deleted figure is rebuilt alone: no training, no aggregation.
    (micro_run / "results" / "figures" / "curves_mlp_mse.pdf").unlink()
    again = snakemake(micro_run, "--configfile", "micro.yaml", "--cores", "1", "results/figures/curves_mlp_mse.pdf")
    assert again.returncode == 0, again.stderr
    assert "figure_curves_mlp_mse" in again.stderr and "_pack0" not in again.stderr
    assert (micro_run / "results" / "figures" / "curves_mlp_mse.pdf").exists()


def test_editing_the_sampling_settings_does_not_retrain_the_generator(micro_run):
    config = micro_config()
    config["datasets"]["micro"]["sampling"]["seed"] = 7
    (micro_run / "resampled.yaml").write_text(yaml.safe_dump(config))
    plan = snakemake(micro_run, "--configfile", "resampled.yaml", "-n", "--quiet", "rules")
    assert plan.returncode == 0, plan.stderr
    counts = rule_counts(plan.stdout)
    assert "train_generator" not in counts and counts["sample_shard"] == 2


def test_paper_config_dry_runs_the_full_dag(tmp_path):
    root = scratch_workflow(tmp_path, {})
    result = snakemake(root, "--configfile", "config/paper.yaml", "-n", "--quiet", "rules")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = rule_counts(result.stdout)
    # 4 experiments x 21 gamma x 49 eta cells; per experiment 6 gamma < 1e-2 in float64 (294 cells,
    # 5 packs of <= 64) and 15 in float32 (735 cells, 12 packs): 4 x 17 = 68 GPU jobs.
    plan = Plan.from_files(REPO / "config" / "paper.yaml", REPO / "config" / "schema.yaml")
    assert sum(len(p.cells) for e in plan.config["experiments"] for p in plan.packs(e)) == 4 * 21 * 49
    assert counts["train_pack"] == 68 and counts["sample_shard"] == 10 and counts["aggregate"] == 4


def test_lint_is_clean():
    result = snakemake(REPO, "--lint")
    assert result.returncode == 0 and "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr


def test_bad_config_fails_before_any_job_naming_the_key(tmp_path):
    config = micro_config()
    config["experiments"]["mlp_mse"]["model"]["width"] = 0
    root = scratch_workflow(tmp_path, config)
    result = snakemake(root, "--configfile", "micro.yaml", "--cores", "1")
    assert result.returncode != 0
    assert "'experiments.mlp_mse.model.width': 0 is less than the minimum of 1" in result.stderr
    assert not (root / "results").exists()


def test_default_config_plans_the_quickstart(tmp_path):
    root = scratch_workflow(tmp_path, {})
    result = snakemake(root, "-n", "--quiet", "rules")
    assert result.returncode == 0, result.stderr
    counts = rule_counts(result.stdout)
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    plan = Plan(default, yaml.safe_load((REPO / "config" / "schema.yaml").read_text()))
    assert [len(p.cells) for p in plan.packs("mlp_mse")] == [12, 24, 24, 24]  # 7 x 12 cells, float64 first
    assert counts["train_pack"] == 4 and len(default["figures"]) == 3
