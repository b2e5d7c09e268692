# Data. A generated dataset: real source images -> diffusion generator -> sampled shards -> one
# pool -> quality gate. A fetched dataset: its published parts, each downloaded and converted.
# Downloads are kept in results/downloads/ and re-verified (size, sha256) whenever they are used.


# Downloads run on the submitting host: cluster compute nodes often have no internet.
rule fetch_source:
    localrule: True
    output:
        train="results/data/sources/{source}/train.h5",
        test="results/data/sources/{source}/test.h5",
    params:
        downloads=lambda w: PLAN.source_downloads(w.source),
    log:
        "results/logs/data/fetch_{source}.log",
    conda:
        ENV
    script:
        "../scripts/fetch_source.py"


rule train_generator:
    input:
        lambda w: PLAN.source_file(w.dataset, "train"),
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
        pool="results/data/{dataset}/pool.h5",
        manifest="results/data/{dataset}/manifest.json",
    log:
        "results/logs/data/{dataset}/merge_pool.log",
    conda:
        ENV
    script:
        "../scripts/merge_pool.py"


rule quality_gate:
    input:
        pool="results/data/{dataset}/pool.h5",
        train=lambda w: PLAN.source_file(w.dataset, "train"),
        test=lambda w: PLAN.source_file(w.dataset, "test"),
    output:
        "results/data/{dataset}/quality.json",
    params:
        gate=lambda w: PLAN.dataset(w.dataset)["quality_gate"],
        num_classes=lambda w: SOURCES[PLAN.dataset(w.dataset)["source"]].num_classes,
        device=config["training"]["device"],
    log:
        "results/logs/data/{dataset}/quality_gate.log",
    threads: 2
    conda:
        ENV
    script:
        "../scripts/quality_gate.py"


rule fetch_part:
    localrule: True
    output:
        "results/data/{dataset}/parts/{part}.h5",
    params:
        downloads=lambda w: PLAN.downloads([PLAN.dataset(w.dataset)["parts"][int(w.part)]]),
    log:
        "results/logs/data/{dataset}/fetch_part_{part}.log",
    conda:
        ENV
    script:
        "../scripts/fetch_part.py"
