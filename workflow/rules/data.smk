# Data. A generated dataset: real source images -> diffusion generator -> sampled shards -> one
# pool -> quality gate. A fetched dataset: its published parts, each downloaded and converted.
# Downloads are kept in results/downloads/ and re-verified (size, sha256) whenever they are used.


# Downloads run on the submitting host: cluster compute nodes often have no internet.
rule fetch_source:
    localrule: True
    output:
        train=paths.SOURCE.replace("{split}", "train"),
        test=paths.SOURCE.replace("{split}", "test"),
    params:
        downloads=lambda w: PLAN.source_downloads(w.source),
    log:
        paths.LOG["fetch_source"],
    conda:
        ENV
    script:
        "../scripts/fetch_source.py"


rule train_generator:
    input:
        lambda w: PLAN.source_file(w.dataset, "train"),
    output:
        paths.GENERATOR,
    params:
        # Only what the generator depends on: editing the sampling settings must not retrain it.
        source=lambda w: PLAN.dataset(w.dataset)["source"],
        generator=lambda w: PLAN.dataset(w.dataset)["generator"],
        device=config["training"]["device"],
    log:
        paths.LOG["train_generator"],
    threads: 2
    conda:
        ENV
    script:
        "../scripts/train_generator.py"


rule sample_shard:
    input:
        paths.GENERATOR,
    output:
        paths.SHARD,
    params:
        sampling=lambda w: PLAN.dataset(w.dataset)["sampling"],
        device=config["training"]["device"],
    log:
        paths.LOG["sample_shard"],
    threads: 1
    conda:
        ENV
    script:
        "../scripts/sample_shard.py"


rule merge_pool:
    input:
        lambda w: [
            paths.SHARD.format(dataset=w.dataset, shard=k)
            for k in range(PLAN.dataset(w.dataset)["sampling"]["shards"])
        ],
    output:
        pool=paths.POOL,
        manifest=paths.MANIFEST,
    log:
        paths.LOG["merge_pool"],
    conda:
        ENV
    script:
        "../scripts/merge_pool.py"


rule quality_gate:
    input:
        pool=paths.POOL,
        train=lambda w: PLAN.source_file(w.dataset, "train"),
        test=lambda w: PLAN.source_file(w.dataset, "test"),
    output:
        paths.QUALITY,
    params:
        gate=lambda w: PLAN.dataset(w.dataset)["quality_gate"],
        num_classes=lambda w: SOURCES[PLAN.dataset(w.dataset)["source"]].num_classes,
        device=config["training"]["device"],
    log:
        paths.LOG["quality_gate"],
    threads: 2
    conda:
        ENV
    script:
        "../scripts/quality_gate.py"


rule fetch_part:
    localrule: True
    output:
        paths.PART,
    params:
        downloads=lambda w: PLAN.downloads([PLAN.dataset(w.dataset)["parts"][int(w.part)]]),
    log:
        paths.LOG["fetch_part"],
    conda:
        ENV
    script:
        "../scripts/fetch_part.py"
