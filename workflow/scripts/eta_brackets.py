from gammasweep.jobs.glue import job_log
from gammasweep.jobs.train import bracket_eta

with job_log(snakemake):
    bracket_eta(
        {key: [dict(c) for c in cells] for key, cells in snakemake.params.columns.items()},
        dict(snakemake.params.starts),
        snakemake.input.pool,
        snakemake.input.test,
        dict(snakemake.params.settings),
        snakemake.params.pack_size,
        snakemake.output[0],
    )
