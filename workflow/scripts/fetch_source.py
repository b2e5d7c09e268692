from gammasweep.jobs.data import fetch_source
from gammasweep.jobs.glue import job_log

with job_log(snakemake):
    fetch_source(
        snakemake.wildcards.source, dict(snakemake.params.downloads), snakemake.output.train, snakemake.output.test
    )
