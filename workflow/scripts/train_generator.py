from gammasweep.jobs.data import train_generator
from gammasweep.jobs.glue import job_log

with job_log(snakemake):
    train_generator(
        snakemake.input[0],
        snakemake.params.source,
        dict(snakemake.params.generator),
        snakemake.output[0],
        snakemake.params.device,
    )
