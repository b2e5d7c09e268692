"""The Snakemake workflow for real: an end-to-end micro run, single-figure targets, the paper
config's dry-run, lint, and config errors before any job runs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from conftest import h5_datasets
from workflow_helpers import (
    REPO,
    assert_cells_equal_an_uninterrupted_run,
    job_table,
    long_pack_config,
    micro_config,
    rule_counts,
    scratch_workflow,
    snakemake,
    snakemake_env,
)

from gammasweep.data.diffusion import load_generator_config, train_generator
from gammasweep.data.pools import read_images
from gammasweep.figures import PLOTS, RELATED_PLOTS
from gammasweep.plan.plan import Plan
from gammasweep.results.cube import open_cube
from gammasweep.results.records import RECORDS


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    root = scratch_workflow(tmp_path_factory.mktemp("micro"), micro_config())
    result = snakemake(root, "--configfile", "micro.yaml", "--cores", "2")
    assert result.returncode == 0, result.stderr[-5000:]
    return root


def test_end_to_end_micro_run_builds_every_figure(micro_run):
    config = micro_config()
    plots = {figure["plot"] for figure in config["figures"].values()}
    # Every plot kind of the gamma-eta sweeps runs here (adaptive_coverage in test_adaptive_workflow; the
    # related experiments' in test_related.py and its siblings, which also run their rules).
    assert plots == set(PLOTS) - {"adaptive_coverage"} - RELATED_PLOTS
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
    for record in RECORDS:  # the probes are on for mlp_mse only
        assert np.isfinite(cube[record].sel(eta=1e-2)).any(), record
        assert record not in open_cube(micro_run / "results" / "cubes" / "mlp_cross_entropy.nc")
    toy = open_cube(micro_run / "results" / "cubes" / "toy" / "toy.nc")
    assert toy.attrs["model"] == "toy" and toy["diverged"].any() and not toy["diverged"].all()
    gate = json.loads((micro_run / "results" / "data" / "micro" / "quality.json").read_text())
    assert gate["passed"] and gate["imbalance"] == 0.0
    manifest = json.loads((micro_run / "results" / "data" / "micro" / "manifest.json").read_text())
    pool_file = micro_run / manifest["pool"]["path"]
    assert manifest["pool"]["sha256"] == hashlib.sha256(pool_file.read_bytes()).hexdigest()
    assert [shard["images"] for shard in manifest["shards"]] == [200, 200] and manifest["pool"]["class_counts"] == [
        40
    ] * 10
    with h5py.File(micro_run / "results" / "data" / "micro" / "pool.h5") as f:
        assert f["images"].shape == (400, 8, 8, 1) and f["images"].dtype == np.uint8
        assert np.bincount(f["labels"][()]).tolist() == [40] * 10
    logs = list((micro_run / "results" / "logs").rglob("*.log"))
    assert any("step 20/20" in p.read_text() for p in logs)  # training progress reached the logs


def test_the_report_holds_every_figure_with_its_caption(micro_run):
    result = snakemake(micro_run, "--configfile", "micro.yaml", "--report", "results/report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    report = (micro_run / "results" / "report.html").read_text()
    for name in micro_config()["figures"]:
        assert f"{name}.png" in report
    assert "Sharpness falls with gamma." in report and "Paper, Fig. 3a." in report
    assert "Ours:</strong> figure" in report and "(mlp (depth 3, width 16) on micro, mse, batch 8, 20 steps" in report


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


def test_a_changed_cell_parameter_reruns_exactly_the_affected_packs(micro_run):
    config = micro_config()
    config["experiments"]["mlp_cross_entropy"]["training"] = {"divergence_cap": 500.0}
    (micro_run / "changed.yaml").write_text(yaml.safe_dump(config))
    plan = snakemake(micro_run, "--configfile", "changed.yaml", "-n", "--quiet", "rules")
    assert plan.returncode == 0, plan.stderr
    counts = rule_counts(plan.stdout)
    packs = re.findall(r"^train_(\w+)_pack\d{4}\s+1$", job_table(plan.stdout), re.MULTILINE)
    assert packs == ["mlp_cross_entropy"] * 2 and counts["aggregate"] == 1
    assert sorted(k for k in counts if k.startswith("figure_")) == [
        "figure_curves_mlp_cross_entropy",
        "figure_phase_mlp_cross_entropy",
        "figure_scaling_mlp_cross_entropy",
    ]
    assert not {"train_generator", "sample_shard", "merge_pool"} & counts.keys()


def test_paper_config_dry_runs_the_full_dag_without_importing_torch(tmp_path):
    """The paper's DAG, planned by a Snakefile that never imports torch: a torch that fails on import
    comes first on the path (dry-runs on a submit host or in CI stay fast and need no GPU build)."""
    root = scratch_workflow(tmp_path / "wf", {})
    (tmp_path / "poisoned" / "torch").mkdir(parents=True)
    (tmp_path / "poisoned" / "torch" / "__init__.py").write_text("raise ImportError('torch imported while planning')")
    result = snakemake(
        root,
        "--configfile",
        "config/paper.yaml",
        "-n",
        "--quiet",
        "rules",
        env={"PYTHONPATH": str(tmp_path / "poisoned")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = rule_counts(result.stdout)
    plan = Plan.from_files(REPO / "config" / "paper.yaml", REPO / "config" / "schema.yaml")
    # The authors' protocol, adaptive eta, for every sweep but two full grids whose figures read cells
    # above the final edge (the portraits at several T, A3; the CNN's best eta at shorter T, Fig. 2b):
    # 11 adaptive experiments, one bracketing job each, their columns planned after the checkpoint.
    assert len(plan.experiments(adaptive=True)) == 11 and "bracket_eta" not in counts
    assert counts["eta_brackets"] == counts["aggregate_adaptive"] == 11
    # The full grids: the MLP's 6 gamma < 1e-2 in float64 (294 cells, 5 packs of <= 64) and 15 in float32
    # (735 cells, 12 packs); the CNN's 6 x 49 float64 cells in 19 packs of <= 16 and 15 x 49 float32 in 46;
    # the 8 one-cell runs of A-DEEP.
    assert sum(len(p.cells) for e in plan.config["experiments"] for p in plan.packs(e)) == 2 * 21 * 49 + 8
    assert counts["train_pack"] == 17 + 65 + 8 and counts["sample_shard"] == 10 and counts["aggregate"] == 10
    # MNIST-1M: fetch MNIST -> generator -> 10 shards -> pool -> gate; CIFAR-5M: all six parts, one pass as
    # the authors' (46,896 x 128 images; and CIFAR-10 for the test set); CIFAR-100 and TinyImageNet whole.
    assert counts["fetch_source"] == 4 and counts["quality_gate"] == 1 and counts["fetch_part"] == 6
    assert counts["simulate_related"] == len(plan.config["related"]) and counts["simulate_toy"] == 2


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
    assert [len(p.cells) for p in plan.packs("mlp_mse_adam")] == [12, 48, 24]
    assert counts["train_pack"] == 4 + 5 * 3  # + signsgd, adam, width32, batch64, ce
    assert counts["eta_brackets"] == 3  # mlp_mse_adaptive, mlp_mse_edge and cnn_mse: one bracketing job each
    assert counts["figure_adaptive_coverage_mlp_mse"] == 1 and counts["simulate_toy"] == 2
    # The related papers' experiments are in rule all too: each cube once, each figure its rule.
    assert counts["simulate_related"] == len(default["related"]) >= 10
    assert {rule for rule in counts if rule.startswith("figure_")} == {f"figure_{name}" for name in default["figures"]}


def test_config_overrides_merge_into_the_default_config_and_a_configfile_replaces_it(tmp_path):
    """`--config key=value` overrides keys of the config, as Snakemake users expect; `--configfile`
    replaces the default config (README); a bad override fails naming its key."""
    root = scratch_workflow(tmp_path, micro_config())

    def figure_rules(*args: str) -> set[str]:
        result = snakemake(root, "-n", "--quiet", "rules", *args)
        assert result.returncode == 0, result.stderr[-3000:]
        return {rule for rule in rule_counts(result.stdout) if rule.startswith("figure_")}

    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert figure_rules("--config", "checkpoint_minutes=5") == {f"figure_{name}" for name in default["figures"]}
    micro = {f"figure_{name}" for name in micro_config()["figures"]}
    assert figure_rules("--configfile", "micro.yaml", "--config", "checkpoint_minutes=5") == micro
    bad = snakemake(root, "-n", "--config", "checkpoint_minutes=-5")
    assert (
        bad.returncode != 0 and "config key 'checkpoint_minutes': -5 is less than or equal" in bad.stdout + bad.stderr
    )


def test_a_second_workflow_on_the_same_directory_is_refused_by_the_lock(tmp_path):
    root = scratch_workflow(tmp_path, micro_config(losses=("mse",)))
    first = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--configfile", "micro.yaml", "--cores", "1"],
        cwd=root,
        env=snakemake_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not list((root / ".snakemake" / "locks").glob("*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, "the first workflow ended before the second could start"
        # --rerun-incomplete: while a job of the first runs, its output is marked incomplete, and without
        # the flag the second would stop on that (before trying the lock) instead of on the lock.
        second = snakemake(root, "--configfile", "micro.yaml", "--cores", "1", "--rerun-incomplete")
        assert second.returncode != 0 and "cannot be locked" in second.stderr, second.stderr[-2000:]
    finally:
        first.terminate()
        first.wait(timeout=60)


def _processes_running(*fragments: str) -> list[int]:
    """Pids of the processes whose command line contains every fragment."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # the process ended meanwhile
            continue
        if all(fragment in command for fragment in fragments):
            pids.append(int(cmdline.parent.name))
    return pids


def test_a_kill_9ed_training_job_resumes_when_the_workflow_is_rerun(micro_run, tmp_path):
    """A node dies under a training job: nothing to catch. The workflow fails; its rerun resumes the
    pack from the last periodic checkpoint and the cells equal an uninterrupted run's."""
    config = long_pack_config(width=256, steps=400) | {"checkpoint_minutes": 0.005}  # every 0.3 s
    root = scratch_workflow(tmp_path / "workflow", config)
    shutil.copytree(micro_run / "results" / "data", root / "results" / "data")  # the same 400-image pool
    log = root / "results" / "logs" / "train" / "mlp_mse" / "pack0000.log"
    workflow = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--configfile", "micro.yaml", "--cores", "1"],
        cwd=root,
        env=snakemake_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not (log.exists() and "checkpoint: step" in log.read_text()):
            assert workflow.poll() is None and time.monotonic() < deadline, "the pack never checkpointed"
            time.sleep(0.1)
        jobs = _processes_running(str(root), "train_pack.py")
        assert jobs, "no training job process found"
        for pid in jobs:
            os.kill(pid, signal.SIGKILL)
        stderr = workflow.communicate(timeout=300)[1]
    finally:
        if workflow.poll() is None:
            workflow.kill()
    assert workflow.returncode != 0 and "Error in rule train_mlp_mse_pack0000" in stderr, stderr[-3000:]
    assert not list((root / "results" / "runs").rglob("*.h5")), "no cell file from the killed job"
    rerun = snakemake(root, "--configfile", "micro.yaml", "--cores", "1")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    text = log.read_text()
    assert "checkpoint: resuming from step" in text and "resuming from step 0 " not in text, text
    assert not (root / "results" / "checkpoints" / "mlp_mse" / "pack0000.pt").exists()
    assert_cells_equal_an_uninterrupted_run(root, "mlp_mse", tmp_path)


def test_a_sigtermed_generator_job_resumes_when_the_workflow_is_rerun(tmp_path):
    """SLURM's notice (SIGTERM) to the generator's job: it saves its checkpoint outside its output (which
    Snakemake deletes when the job fails) and exits non-zero; the workflow's rerun resumes from there, to
    the generator an uninterrupted run makes."""
    config = micro_config(losses=("mse",)) | {"checkpoint_minutes": 1000}  # no periodic save: only the signal's
    config["datasets"]["micro"]["generator"]["train_steps"] = 150
    root = scratch_workflow(tmp_path / "workflow", config)
    target = root / "results" / "data" / "micro" / "generator.pt"
    relative = str(target.relative_to(root))
    checkpoint = root / "results" / "checkpoints" / "data" / "micro" / "generator.pt"
    log = root / "results" / "logs" / "data" / "micro" / "train_generator.log"
    command = [sys.executable, "-m", "snakemake", "--configfile", "micro.yaml", "--cores", "1", relative]
    workflow = subprocess.Popen(
        command, cwd=root, env=snakemake_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 600
        while not (log.exists() and "step 40/150" in log.read_text()):
            assert workflow.poll() is None and time.monotonic() < deadline, "the generator never reached step 40"
            time.sleep(0.1)
        jobs = _processes_running(str(root), "train_generator.py")
        assert jobs, "no generator job process found"
        for pid in jobs:
            os.kill(pid, signal.SIGTERM)
        stderr = workflow.communicate(timeout=300)[1].decode()
        while _processes_running(str(root), "train_generator.py"):  # the job may outlive its shell
            assert time.monotonic() < deadline, "the generator job did not stop"
            time.sleep(0.1)
    finally:
        if workflow.poll() is None:
            workflow.kill()
    assert workflow.returncode != 0 and "Error in rule train_generator" in stderr, stderr[-3000:]
    assert "stopped before step" in log.read_text() and not target.exists()
    stopped = torch.load(checkpoint, weights_only=True)["step"]
    rerun = snakemake(root, "--configfile", "micro.yaml", "--cores", "1", relative)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"checkpoint: resuming from step {stopped} " in log.read_text() and 40 <= stopped < 150
    assert not checkpoint.exists()
    reference = tmp_path / "uninterrupted.pt"
    images, labels = read_images(root / "results" / "data" / "sources" / "sklearn_digits" / "train.h5")
    train_generator(images, labels, load_generator_config(target), reference, log=lambda message: None)
    resumed, uninterrupted = torch.load(target, weights_only=True), torch.load(reference, weights_only=True)
    assert resumed["losses"] == uninterrupted["losses"] and resumed["config"] == uninterrupted["config"]
    for key in ("model", "ema"):
        for name, value in uninterrupted[key].items():
            assert torch.equal(resumed[key][name], value), (key, name)


def test_a_broken_generator_fails_the_quality_gate_and_nothing_trains(micro_run, tmp_path):
    """The micro generator (20 training steps) makes noise: with a real gate its pool never reaches training."""
    config = micro_config(losses=("mse",))
    config["datasets"]["micro"]["quality_gate"] |= {"min_agreement": 0.9, "classifier_steps": 300}
    root = scratch_workflow(tmp_path / "workflow", config)
    shutil.copytree(
        micro_run / "results" / "data", root / "results" / "data", ignore=shutil.ignore_patterns("quality.json")
    )  # the same pool, not yet gated
    result = snakemake(root, "--configfile", "micro.yaml", "--cores", "1")
    assert result.returncode != 0 and "Error in rule quality_gate" in result.stderr, result.stderr[-3000:]
    log = (root / "results" / "logs" / "data" / "micro" / "quality_gate.log").read_text()
    assert "is below the gate 0.90" in log and "QualityGateError" in log, log[-3000:]
    assert not (root / "results" / "data" / "micro" / "quality.json").exists()
    assert not (root / "results" / "runs").exists()


def test_a_truncated_cell_file_is_reported_with_its_rebuild_command_and_rebuilt_identically(micro_run):
    """Runs last in this module: it damages and repairs the shared micro run."""
    cell = sorted((micro_run / "results" / "runs" / "mlp_mse").rglob("*.h5"))[0]
    before = h5_datasets(cell)
    cell.write_bytes(cell.read_bytes()[:200])  # a copy cut short, e.g. by a full disk
    again = snakemake(micro_run, "--configfile", "micro.yaml", "--cores", "2")
    assert again.returncode != 0
    relative = cell.relative_to(micro_run)
    command = f"rm '{relative}' && snakemake '{relative}'"
    assert command in again.stderr, again.stderr[-3000:]
    cell.unlink()  # the command the message gives (with this workflow's config file)
    rebuilt = snakemake(micro_run, "--configfile", "micro.yaml", "--cores", "2", str(relative))
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert snakemake(micro_run, "--configfile", "micro.yaml", "--cores", "2").returncode == 0
    after = h5_datasets(cell)
    assert after.keys() == before.keys() and any(key.startswith("probes/") for key in after)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
