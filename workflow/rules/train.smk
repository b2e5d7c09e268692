# One job per (experiment, gamma, eta) cell; the cell trains all its seeds at once.


rule train_cell:
    input:
        pool=lambda w: f"results/data/{PLAN.experiment_dataset(w.experiment)}/pool.h5",
        test=lambda w: source_file(PLAN.experiment_dataset(w.experiment), "test"),
    output:
        "results/runs/{experiment}/gamma_{gamma}/eta_{eta}.h5",
    params:
        cell=lambda w: PLAN.cell_params(w.experiment, w.gamma, w.eta),
    log:
        "results/logs/train/{experiment}/gamma_{gamma}/eta_{eta}.log",
    threads: 1
    conda:
        ENV
    script:
        "../scripts/train_cell.py"
