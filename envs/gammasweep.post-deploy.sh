#!/usr/bin/env bash
# Snakemake runs this inside the environment of gammasweep.yaml (beside it: Snakemake finds it by that
# name) once it has created it, from its own copy under .snakemake/conda/. It installs the workflow's
# package, editable, from the workflow's base directory, which the Snakefile exports as
# GAMMASWEEP_BASEDIR; the dependencies are the environment's own (--no-deps).
set -euo pipefail
base=${GAMMASWEEP_BASEDIR:?is not set: create this environment through the workflow (snakemake --sdm conda)}
python -m pip install --no-deps --editable "$base"
