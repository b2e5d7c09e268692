from gammasweep.jobs.glue import job_log
from gammasweep.jobs.train import train_column
from gammasweep.plan import paths

# The checkpoint interval and the finished rounds' place are not params: changing them reruns nothing.
with job_log(snakemake):
    train_column(
        [dict(c) for c in snakemake.params.cells],
        list(snakemake.params.files),
        snakemake.input.pool,
        snakemake.input.test,
        snakemake.input.brackets,
        snakemake.wildcards.gamma,
        snakemake.params.depth_steps,
        snakemake.output[0],
        paths.COLUMN_ROUNDS.format(experiment=snakemake.wildcards.experiment, gamma=snakemake.wildcards.gamma),
        snakemake.params.checkpoint,
        checkpoint_seconds=60.0 * snakemake.config["checkpoint_minutes"],
    )
