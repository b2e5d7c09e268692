from gammasweep.jobs.data import train_generator
from gammasweep.jobs.glue import job_log
from gammasweep.plan import paths

# The checkpoint's place and interval are not params: changing them reruns nothing.
with job_log(snakemake):
    train_generator(
        snakemake.input[0],
        snakemake.params.source,
        dict(snakemake.params.generator),
        snakemake.output[0],
        snakemake.params.device,
        checkpoint=paths.GENERATOR_CHECKPOINT.format(dataset=snakemake.wildcards.dataset),
        checkpoint_seconds=60.0 * snakemake.config["checkpoint_minutes"],
    )
