from gammasweep.jobs.data import quality_gate
from gammasweep.jobs.glue import job_log

with job_log(snakemake):
    quality_gate(
        snakemake.input.pool,
        snakemake.input.train,
        snakemake.input.test,
        dict(snakemake.params.gate),
        snakemake.params.num_classes,
        snakemake.output[0],
        snakemake.params.device,
    )
