from gammasweep.glue import job_log
from gammasweep.jobs import join_brackets

with job_log(snakemake):
    join_brackets(list(snakemake.input), snakemake.output[0])
