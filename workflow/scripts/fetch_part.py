from gammasweep.jobs.data import fetch_part
from gammasweep.jobs.glue import job_log

with job_log(snakemake):
    fetch_part(dict(snakemake.params.downloads), snakemake.output[0])
