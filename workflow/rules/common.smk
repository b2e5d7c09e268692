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
    """An adaptive experiment's bracketing records and, once the checkpoint eta_brackets has run, the
    columns with something to train (adaptive.smk)."""
    brackets = checkpoints.eta_brackets.get(**wildcards).output[0]
    records = json.loads(Path(brackets).read_text())["columns"]
    columns = PLAN.columns(wildcards.experiment)
    return {
        "brackets": brackets,
        "columns": [c.directory for c in columns if records[c.gamma_key]["edge"] > 0],
    }
