from gammasweep.figures import render
from gammasweep.jobs.glue import job_log

with job_log(snakemake):
    render(
        snakemake.params.plot,
        list(snakemake.input),
        dict(snakemake.params.options),
        dict(snakemake.output),
        title=snakemake.params.title,
    )
