from gammasweep.jobs.aggregate import aggregate_adaptive
from gammasweep.jobs.glue import job_log

with job_log(snakemake):
    aggregate_adaptive(
        snakemake.input.brackets,
        list(snakemake.input.columns),
        tuple(snakemake.params.grid),
        dict(snakemake.params.cells),
        dict(snakemake.params.experiment),
        snakemake.output[0],
    )
