# Data. A generated dataset: real source images -> diffusion generator -> sampled shards -> one
# pool -> quality gate. A fetched dataset: its published parts, each downloaded and converted.
# Downloads are kept in results/downloads/ and re-verified (size, sha256) whenever they are used.
# A generated pool is the longest chain of the default config, so its rules go first (PRIORITY_DATA).

PRIORITY_DATA = 50


# Downloads run on the submitting host: cluster compute nodes often have no internet.
rule fetch_source:
    output:
        train=paths.SOURCE.replace("{split}", "train"),
        test=paths.SOURCE.replace("{split}", "test"),
    log:
        paths.LOG["fetch_source"],
    priority: PRIORITY_DATA
    localrule: True
    conda:
        ENV
    params:
        downloads=lambda w: PLAN.source_downloads(w.source),
    script:
        "../scripts/fetch_source.py"


# The generator checkpoints to results/checkpoints/data/ (paths.GENERATOR_CHECKPOINT), outside its output,
# every `checkpoint_minutes` and on SIGTERM/SIGUSR1; its retry (runtime grows with the attempt) resumes there.
rule train_generator:
    input:
        lambda w: PLAN.source_file(w.dataset, "train"),
    output:
        paths.GENERATOR,
    log:
        paths.LOG["train_generator"],
    benchmark:
        paths.BENCHMARK["train_generator"]
    priority: PRIORITY_DATA
    conda:
        ENV
    threads: 1  # so the rest of the DAG runs beside it on a 2-core machine
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=lambda wildcards, attempt: 240 * attempt,
    params:
        # Only what the generator depends on: editing the sampling settings must not retrain it.
        source=lambda w: PLAN.dataset(w.dataset)["source"],
        generator=lambda w: PLAN.dataset(w.dataset)["generator"],
        device=config["training"]["device"],
    script:
        "../scripts/train_generator.py"


rule sample_shard:
    input:
        paths.GENERATOR,
    output:
        paths.SHARD,
    log:
        paths.LOG["sample_shard"],
    priority: PRIORITY_DATA
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    params:
        sampling=lambda w: PLAN.dataset(w.dataset)["sampling"],
        device=config["training"]["device"],
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
    priority: PRIORITY_DATA
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
    log:
        paths.LOG["quality_gate"],
    priority: PRIORITY_DATA
    conda:
        ENV
    threads: 1  # a 2-thread job waits for both cores: on 2 cores it would wait for the whole DAG
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    params:
        gate=lambda w: PLAN.dataset(w.dataset)["quality_gate"],
        num_classes=lambda w: SOURCES[PLAN.dataset(w.dataset)["source"]].num_classes,
        device=config["training"]["device"],
    script:
        "../scripts/quality_gate.py"


rule fetch_part:
    output:
        paths.PART,
    log:
        paths.LOG["fetch_part"],
    localrule: True
    conda:
        ENV
    params:
        downloads=lambda w: PLAN.downloads([PLAN.dataset(w.dataset)["parts"][int(w.part)]]),
    script:
        "../scripts/fetch_part.py"
