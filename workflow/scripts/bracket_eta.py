from gammasweep.jobs.glue import job_log
from gammasweep.jobs.train import bracket_eta

with job_log(snakemake):
    bracket_eta(
        [dict(c) for c in snakemake.params.cells],
        snakemake.input.pool,
        snakemake.input.test,
        dict(snakemake.params.settings),
        snakemake.params.start,
        snakemake.output[0],
    )
