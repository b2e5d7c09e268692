from gammasweep.jobs.data import merge_pool
from gammasweep.jobs.glue import job_log

with job_log(snakemake):
    merge_pool(list(snakemake.input), snakemake.output.pool, snakemake.output.manifest)
