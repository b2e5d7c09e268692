# Adaptive eta (experiments with `eta_grid: adaptive`, gammasweep.sweep.adaptive):
#   eta_brackets, one job per experiment: batched short runs find every gamma column's divergence edge,
#     seeded by theory; a search round's runs of all columns train together, in packs of `pack_size`;
#   train_column, one job per gamma column: full-length runs from the edge down to `depth_decades` below
#     eta_max, growing the window if a point diverges late; skipped when the grid's first point diverges.
# eta_brackets is a checkpoint: the DAG is re-evaluated after it, and aggregate_adaptive then asks for
# the columns with something to train.
# A killed column job resumes its current round from results/checkpoints/<exp>/gamma_<g>.pt; its finished
# rounds wait in results/checkpoints/<exp>/gamma_<g>/ (Snakemake deletes a failed job's output directory).

ADAPTIVE = PLAN.experiments(adaptive=True)
ADAPTIVE_EXPERIMENT = "|".join(ADAPTIVE)  # the {experiment} of these rules

if ADAPTIVE:

    checkpoint eta_brackets:
        input:
            pool=lambda w: PLAN.pool_files(w.experiment),
            test=lambda w: PLAN.source_file(PLAN.experiment_dataset(w.experiment), "test"),
            quality=lambda w: PLAN.quality_files(w.experiment),
        output:
            paths.BRACKETS,
        log:
            paths.LOG["eta_brackets"],
        benchmark:
            paths.BENCHMARK["eta_brackets"]
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
            columns=lambda w: {
                c.gamma_key: PLAN.column_cells(w.experiment, c.gamma_key) for c in PLAN.columns(w.experiment)
            },
            starts=lambda w: {
                c.gamma_key: PLAN.bracket_start(w.experiment, c.gamma_key) for c in PLAN.columns(w.experiment)
            },
            settings=lambda w: vars(PLAN.adaptive_settings(w.experiment)),
            pack_size=lambda w: PLAN.pack_size(w.experiment),
        script:
            "../scripts/eta_brackets.py"

    rule train_column:
        input:
            brackets=paths.BRACKETS,
            pool=lambda w: PLAN.pool_files(w.experiment),
            test=lambda w: PLAN.source_file(PLAN.experiment_dataset(w.experiment), "test"),
        output:
            directory(paths.COLUMN),
        log:
            paths.LOG["train_column"],
        benchmark:
            paths.BENCHMARK["train_column"]
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
        resources:
            mem_mb=8000,
        params:
            grid=lambda w: [list(axis.values()) for axis in PLAN.grids[w.experiment]],
            # per column directory, the params its cell files must hold: a stale one fails the cube
            cells=lambda w: {
                c.directory: PLAN.column_cells(w.experiment, c.gamma_key) for c in PLAN.columns(w.experiment)
            },
            experiment=lambda w: PLAN.config["experiments"][w.experiment],
        script:
            "../scripts/aggregate_adaptive.py"
