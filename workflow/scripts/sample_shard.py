from gammasweep.jobs.data import sample_shard
from gammasweep.jobs.glue import job_log

with job_log(snakemake):
    sample_shard(
        snakemake.input[0],
        dict(snakemake.params.sampling),
        int(snakemake.wildcards.shard),
        snakemake.output[0],
        snakemake.params.device,
    )
