from gammasweep.figures import render
from gammasweep.glue import job_log

with job_log(snakemake):
    render(snakemake.params.plot, list(snakemake.input), dict(snakemake.params.options),
           dict(snakemake.output), title=snakemake.params.title)
