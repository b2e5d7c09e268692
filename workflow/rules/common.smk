# The expanded plan of the config: every rule reads cells, paths and parameters from PLAN.
import json
from pathlib import Path

from gammasweep.config import Plan, load_schema
from gammasweep.sources import SOURCES

PLAN = Plan(config, load_schema(Path(workflow.basedir) / "config" / "schema.yaml"))
ENV = "../../envs/gammasweep.yaml"


wildcard_constraints:
    experiment=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    source=r"[a-z0-9_]+",
    gamma=r"\d\.\d{3}e[+-]\d{2}",
    eta=r"\d\.\d{3}e[+-]\d{2}",
    shard=r"\d+",
    part=r"\d+",


def adaptive_cube_inputs(wildcards):
    """An adaptive experiment's brackets (one per gamma) and, once the checkpoint eta_brackets has
    run, the columns with something to train (adaptive.smk)."""
    joined = checkpoints.eta_brackets.get(**wildcards).output[0]
    edges = json.loads(Path(joined).read_text())["edges"]
    columns = PLAN.columns(wildcards.adaptive_experiment)
    return {
        "brackets": [c.bracket for c in columns],
        "columns": [c.directory for c in columns if edges[c.bracket] > 0],
    }
