"""The workflow rule that builds related cubes (simulate_related) and a figure from one."""

from __future__ import annotations

import copy
import json

from workflow_helpers import DEFAULT_CONFIG, scratch_workflow, small_dln, snakemake

from gammasweep.results.cube import open_cube


def test_the_workflow_builds_a_related_figure_from_its_cube(tmp_path):
    """`snakemake results/figures/<id>.pdf` on a config with a related experiment runs its
    simulate_related job and then the figure; the cube records its settings and versions."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["related"] = {"sparse_dln_sgd": small_dln(steps=200)}
    config["figures"] = {"sparse_features_dln": DEFAULT_CONFIG["figures"]["sparse_features_dln"]}
    root = scratch_workflow(tmp_path / "wf", config)
    result = snakemake(root, "--configfile", "micro.yaml", "--cores", "1", "results/figures/sparse_features_dln.pdf")
    assert result.returncode == 0, result.stderr[-3000:]
    cube = open_cube(root / "results" / "cubes" / "related" / "sparse_dln_sgd.nc")
    assert json.loads(cube.attrs["related_settings"]) == config["related"]["sparse_dln_sgd"]
    assert json.loads(cube.attrs["versions"])["torch"]
    assert (root / "results" / "figures" / "sparse_features_dln.png").stat().st_size > 0
    log = (root / "results" / "logs" / "related" / "sparse_dln_sgd.log").read_text()
    assert "related cube" in log and "step 200/200" in log
