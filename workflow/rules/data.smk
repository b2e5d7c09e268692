# Data: real source images -> diffusion generator -> sampled shards -> one training pool per dataset.


# Downloads run on the submitting host: cluster compute nodes often have no internet.
rule fetch_source:
    localrule: True
    output:
        train="results/data/sources/{source}/train.h5",
        test="results/data/sources/{source}/test.h5",
    log:
        "results/logs/data/fetch_{source}.log",
    conda:
        ENV
    script:
        "../scripts/fetch_source.py"


rule train_generator:
    input:
        lambda w: source_file(w.dataset, "train"),
    output:
        "results/data/{dataset}/generator.pt",
    params:
        # Only what the generator depends on: editing the sampling settings must not retrain it.
        source=lambda w: PLAN.dataset(w.dataset)["source"],
        generator=lambda w: PLAN.dataset(w.dataset)["generator"],
        device=config["training"]["device"],
    log:
        "results/logs/data/{dataset}/train_generator.log",
    threads: 2
    conda:
        ENV
    script:
        "../scripts/train_generator.py"


rule sample_shard:
    input:
        "results/data/{dataset}/generator.pt",
    output:
        "results/data/{dataset}/shards/{shard}.h5",
    params:
        sampling=lambda w: PLAN.dataset(w.dataset)["sampling"],
        device=config["training"]["device"],
    log:
        "results/logs/data/{dataset}/sample_shard_{shard}.log",
    threads: 1
    conda:
        ENV
    script:
        "../scripts/sample_shard.py"


rule merge_pool:
    input:
        lambda w: [
            f"results/data/{w.dataset}/shards/{k}.h5"
            for k in range(PLAN.dataset(w.dataset)["sampling"]["shards"])
        ],
    output:
        "results/data/{dataset}/pool.h5",
    log:
        "results/logs/data/{dataset}/merge_pool.log",
    conda:
        ENV
    script:
        "../scripts/merge_pool.py"
