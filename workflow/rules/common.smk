# The expanded plan of the config: every rule reads cells and parameters from PLAN, and its file
# paths from gammasweep.plan.paths (the one place a path is spelled).
import json
from pathlib import Path

from gammasweep.plan import paths
from gammasweep.plan.config import VALUE_KEY, load_schema
from gammasweep.plan.plan import Plan
from gammasweep.data.sources import SOURCES

PLAN = Plan(config, load_schema(Path(workflow.basedir) / "config" / "schema.yaml"))
ENV = "../../envs/gammasweep.yaml"


wildcard_constraints:
    experiment=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    source=r"[a-z0-9_]+",
    gamma=VALUE_KEY,
    eta=VALUE_KEY,
    shard=r"\d+",
    part=r"\d+",


def adaptive_cube_inputs(wildcards):
    """An adaptive experiment's brackets (one per gamma) and, once the checkpoint eta_brackets has
    run, the columns with something to train (adaptive.smk)."""
    joined = checkpoints.eta_brackets.get(**wildcards).output[0]
    edges = json.loads(Path(joined).read_text())["edges"]
    columns = PLAN.columns(wildcards.experiment)
    return {
        "brackets": [c.bracket for c in columns],
        "columns": [c.directory for c in columns if edges[c.bracket] > 0],
    }
