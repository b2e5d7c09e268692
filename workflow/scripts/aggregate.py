from gammasweep.jobs.aggregate import aggregate
from gammasweep.jobs.glue import job_log

with job_log(snakemake):
    aggregate(
        list(snakemake.input), list(snakemake.params.expected), dict(snakemake.params.experiment), snakemake.output[0]
    )
