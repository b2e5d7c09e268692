from gammasweep.jobs.glue import job_log
from gammasweep.jobs.train import train_column

# The checkpoint interval is read from the config, not passed as a param: changing it reruns nothing.
with job_log(snakemake):
    train_column(
        [dict(c) for c in snakemake.params.cells],
        list(snakemake.params.files),
        snakemake.input.pool,
        snakemake.input.test,
        snakemake.input.bracket,
        snakemake.params.depth_steps,
        snakemake.output[0],
        snakemake.params.checkpoint,
        checkpoint_seconds=60.0 * snakemake.config["checkpoint_minutes"],
    )
