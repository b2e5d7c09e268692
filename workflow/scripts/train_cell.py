from gammasweep.glue import job_log
from gammasweep.jobs import train_cell

with job_log(snakemake):
    train_cell(dict(snakemake.params.cell), snakemake.input.pool, snakemake.input.test, snakemake.output[0])
