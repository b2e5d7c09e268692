from gammasweep.glue import job_log
from gammasweep.jobs import train_pack

with job_log(snakemake):
    train_pack([dict(c) for c in snakemake.params.cells], snakemake.input.pool, snakemake.input.test,
               list(snakemake.output), snakemake.rule, snakemake.params.checkpoint)
