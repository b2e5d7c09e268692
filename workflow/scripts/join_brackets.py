from gammasweep.jobs.glue import job_log
from gammasweep.jobs.train import join_brackets

with job_log(snakemake):
    join_brackets(list(snakemake.input), snakemake.output[0])
