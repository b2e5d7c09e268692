# gammasweep: SGD across the feature-learning strength gamma, from raw data to every figure.
#   snakemake --cores 2                                   # the default config: everything, in miniature
#   snakemake --configfile config/paper.yaml --profile profiles/slurm   # the paper, on a SLURM cluster
#   snakemake results/figures/<figure>.pdf                # one figure and only what it needs
import os

from snakemake.utils import min_version

min_version("9.19")

# For envs/gammasweep.post-deploy.sh (--sdm conda): it installs the package from the workflow's base directory.
# (Set, not read: Snakemake's `envvars:` lint is about variables a user must provide.)
os.environ.update(GAMMASWEEP_BASEDIR=os.path.abspath(workflow.basedir))


# The default config, unless --configfile gives one: --configfile replaces it, --config merges into either.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/adaptive.smk"
include: "workflow/rules/toy.smk"
include: "workflow/rules/related.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        PLAN.figure_files(),
