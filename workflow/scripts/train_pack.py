from gammasweep.jobs.glue import job_log
from gammasweep.jobs.train import train_pack

# The checkpoint interval is read from the config, not passed as a param: changing it reruns nothing.
with job_log(snakemake):
    train_pack(
        [dict(c) for c in snakemake.params.cells],
        snakemake.input.pool,
        snakemake.input.test,
        list(snakemake.output),
        snakemake.rule,
        snakemake.params.checkpoint,
        checkpoint_seconds=60.0 * snakemake.config["checkpoint_minutes"],
    )
