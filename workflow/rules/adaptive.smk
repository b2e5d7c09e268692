# Adaptive eta (experiments with `eta_grid: adaptive`, gammasweep.adaptive). Per gamma column:
#   bracket_eta: batched short runs find the divergence edge, seeded by theory;
#   train_column: full-length runs from the edge down to `depth_decades` below eta_max, in one job,
#     growing the window if a point diverges late; skipped when the grid's first point diverges.
# The checkpoint eta_brackets joins an experiment's brackets (so they all run in parallel); the DAG
# is re-evaluated after it, and aggregate_adaptive then asks for the columns with something to train.
# A killed column job resumes its current round from results/checkpoints/<exp>/gamma_<g>.pt.

ADAPTIVE = PLAN.experiments(adaptive=True)

if ADAPTIVE:

    wildcard_constraints:
        adaptive_experiment="|".join(ADAPTIVE),

    rule bracket_eta:
        input:
            pool=lambda w: PLAN.pool_files(w.adaptive_experiment),
            test=lambda w: PLAN.source_file(PLAN.experiment_dataset(w.adaptive_experiment), "test"),
            quality=lambda w: PLAN.quality_files(w.adaptive_experiment),
        output:
            "results/brackets/{adaptive_experiment}/gamma_{gamma}.json",
        params:
            cells=lambda w: PLAN.column_cells(w.adaptive_experiment, w.gamma),
            settings=lambda w: vars(PLAN.adaptive_settings(w.adaptive_experiment)),
            start=lambda w: PLAN.bracket_start(w.adaptive_experiment, w.gamma),
        log:
            "results/logs/brackets/{adaptive_experiment}/gamma_{gamma}.log",
        threads: 1
        resources:
            gpu=1,
            mem_mb=8000,
            runtime=lambda wildcards, attempt: 60 * attempt,
        conda:
            ENV
        script:
            "../scripts/bracket_eta.py"

    rule train_column:
        input:
            bracket="results/brackets/{adaptive_experiment}/gamma_{gamma}.json",
            pool=lambda w: PLAN.pool_files(w.adaptive_experiment),
            test=lambda w: PLAN.source_file(PLAN.experiment_dataset(w.adaptive_experiment), "test"),
        output:
            directory("results/runs/{adaptive_experiment}/gamma_{gamma}"),
        params:
            cells=lambda w: PLAN.column_cells(w.adaptive_experiment, w.gamma),
            files=lambda w: PLAN.column_files(w.adaptive_experiment, w.gamma),
            depth_steps=lambda w: PLAN.depth_steps(w.adaptive_experiment, w.gamma),
            checkpoint="results/checkpoints/{adaptive_experiment}/gamma_{gamma}.pt",
        log:
            "results/logs/train/{adaptive_experiment}/gamma_{gamma}.log",
        threads: 1
        resources:
            gpu=1,
            mem_mb=8000,
            runtime=lambda wildcards, attempt: 120 * attempt,
        conda:
            ENV
        script:
            "../scripts/train_column.py"

    checkpoint eta_brackets:
        input:
            lambda w: [c.bracket for c in PLAN.columns(w.adaptive_experiment)],
        output:
            "results/brackets/{adaptive_experiment}.json",
        localrule: True
        log:
            "results/logs/brackets/{adaptive_experiment}.log",
        conda:
            ENV
        script:
            "../scripts/join_brackets.py"

    rule aggregate_adaptive:
        input:
            unpack(adaptive_cube_inputs),
        output:
            "results/cubes/{adaptive_experiment}.nc",
        params:
            grid=lambda w: [list(axis.values()) for axis in PLAN.grids[w.adaptive_experiment]],
            experiment=lambda w: PLAN.config["experiments"][w.adaptive_experiment],
        log:
            "results/logs/aggregate/{adaptive_experiment}.log",
        conda:
            ENV
        script:
            "../scripts/aggregate_adaptive.py"
