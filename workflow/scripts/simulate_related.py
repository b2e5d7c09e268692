from gammasweep.jobs.glue import job_log
from gammasweep.jobs.simulate import simulate_related_cube

with job_log(snakemake):
    simulate_related_cube(dict(snakemake.params.spec), snakemake.output[0])
