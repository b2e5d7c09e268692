from gammasweep.glue import job_log
from gammasweep.jobs import simulate_related_cube

with job_log(snakemake):
    simulate_related_cube(dict(snakemake.params.spec), snakemake.output[0])
