# One job per pack: K cells of one experiment and one dtype trained together as one batched model
# (gammasweep.sweep.train); each cell keeps its own output file. `pack_size: 1` gives one job per cell.
# Rules are generated, one per pack, so that each job declares exactly the cell files it writes.
# A pack checkpoints to results/checkpoints/ every `checkpoint_minutes` (config; 10) and on
# SIGTERM/SIGUSR1, exits non-zero, and its retry (runtime grows with the attempt) resumes from there.


for experiment in PLAN.config["experiments"]:
    for pack in PLAN.packs(experiment):

        rule:
            name:
                pack.rule
            input:
                pool=PLAN.pool_files(experiment),
                test=PLAN.source_file(PLAN.experiment_dataset(experiment), "test"),
                quality=PLAN.quality_files(experiment),
            output:
                pack.cell_files,
            log:
                pack.log,
            benchmark:
                pack.benchmark
            conda:
                ENV
            threads: 1
            resources:
                gpu=1,
                mem_mb=8000,
                runtime=lambda wildcards, attempt: 120 * attempt,
            params:
                cells=[PLAN.cell_params(experiment, *cell) for cell in pack.cells],
                checkpoint=pack.checkpoint,
            script:
                "../scripts/train_pack.py"
