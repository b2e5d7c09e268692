from gammasweep.jobs.glue import job_log
from gammasweep.jobs.simulate import simulate_toy_cube

with job_log(snakemake):
    simulate_toy_cube(dict(snakemake.params.settings), snakemake.output[0])
