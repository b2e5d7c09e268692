from gammasweep.glue import job_log
from gammasweep.jobs import aggregate

with job_log(snakemake):
    aggregate(list(snakemake.input), list(snakemake.params.expected), dict(snakemake.params.experiment),
              snakemake.output[0])
