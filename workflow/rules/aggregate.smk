# One NetCDF cube per experiment, dimensions (gamma, eta, seed, step / eval_step).
# (Adaptive-eta experiments have their own, aggregate_adaptive in adaptive.smk.)


rule aggregate:
    input:
        lambda w: PLAN.cell_files(w.experiment),
    output:
        paths.CUBE,
    log:
        paths.LOG["aggregate"],
    wildcard_constraints:
        experiment="|".join(PLAN.experiments(adaptive=False)) or "(?!)",
    conda:
        ENV
    resources:
        mem_mb=8000,
    params:
        # every cell's params, which its file must hold: a stale file of another configuration fails the cube
        expected=lambda w: PLAN.cell_identities(w.experiment),
        experiment=lambda w: PLAN.config["experiments"][w.experiment],
    script:
        "../scripts/aggregate.py"
