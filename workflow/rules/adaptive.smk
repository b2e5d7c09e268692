# Adaptive eta (experiments with `eta_grid: adaptive`, gammasweep.sweep.adaptive). Per gamma column:
#   bracket_eta: batched short runs find the divergence edge, seeded by theory;
#   train_column: full-length runs from the edge down to `depth_decades` below eta_max, in one job,
#     growing the window if a point diverges late; skipped when the grid's first point diverges.
# The checkpoint eta_brackets joins an experiment's brackets (so they all run in parallel); the DAG
# is re-evaluated after it, and aggregate_adaptive then asks for the columns with something to train.
# A killed column job resumes its current round from results/checkpoints/<exp>/gamma_<g>.pt; its finished
# rounds wait in results/checkpoints/<exp>/gamma_<g>/ (Snakemake deletes a failed job's output directory).

ADAPTIVE = PLAN.experiments(adaptive=True)
ADAPTIVE_EXPERIMENT = "|".join(ADAPTIVE)  # the {experiment} of these rules

if ADAPTIVE:

    rule bracket_eta:
        input:
            pool=lambda w: PLAN.pool_files(w.experiment),
            test=lambda w: PLAN.source_file(PLAN.experiment_dataset(w.experiment), "test"),
            quality=lambda w: PLAN.quality_files(w.experiment),
        output:
            paths.BRACKET,
        log:
            paths.LOG["bracket_eta"],
        wildcard_constraints:
            experiment=ADAPTIVE_EXPERIMENT,
        conda:
            ENV
        threads: 1
        resources:
            gpu=1,
            mem_mb=8000,
            runtime=lambda wildcards, attempt: 60 * attempt,
        params:
            cells=lambda w: PLAN.column_cells(w.experiment, w.gamma),
            settings=lambda w: vars(PLAN.adaptive_settings(w.experiment)),
            start=lambda w: PLAN.bracket_start(w.experiment, w.gamma),
        script:
            "../scripts/bracket_eta.py"

    rule train_column:
        input:
            bracket=paths.BRACKET,
            pool=lambda w: PLAN.pool_files(w.experiment),
            test=lambda w: PLAN.source_file(PLAN.experiment_dataset(w.experiment), "test"),
        output:
            directory(paths.COLUMN),
        log:
            paths.LOG["train_column"],
        wildcard_constraints:
            experiment=ADAPTIVE_EXPERIMENT,
        conda:
            ENV
        threads: 1
        resources:
            gpu=1,
            mem_mb=8000,
            runtime=lambda wildcards, attempt: 120 * attempt,
        params:
            cells=lambda w: PLAN.column_cells(w.experiment, w.gamma),
            files=lambda w: PLAN.column_files(w.experiment, w.gamma),
            depth_steps=lambda w: PLAN.depth_steps(w.experiment, w.gamma),
            checkpoint=paths.COLUMN_CHECKPOINT,
        script:
            "../scripts/train_column.py"

    checkpoint eta_brackets:
        input:
            lambda w: [c.bracket for c in PLAN.columns(w.experiment)],
        output:
            paths.BRACKETS,
        log:
            paths.LOG["eta_brackets"],
        wildcard_constraints:
            experiment=ADAPTIVE_EXPERIMENT,
        localrule: True
        conda:
            ENV
        script:
            "../scripts/join_brackets.py"

    rule aggregate_adaptive:
        input:
            unpack(adaptive_cube_inputs),
        output:
            paths.CUBE,
        log:
            paths.LOG["aggregate"],
        wildcard_constraints:
            experiment=ADAPTIVE_EXPERIMENT,
        conda:
            ENV
        params:
            grid=lambda w: [list(axis.values()) for axis in PLAN.grids[w.experiment]],
            # per column directory, the params its cell files must hold: a stale one fails the cube
            cells=lambda w: {
                c.directory: PLAN.column_cells(w.experiment, c.gamma_key) for c in PLAN.columns(w.experiment)
            },
            experiment=lambda w: PLAN.config["experiments"][w.experiment],
        script:
            "../scripts/aggregate_adaptive.py"
