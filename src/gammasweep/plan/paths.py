"""Every file the workflow makes, one template each. The rules (``workflow/rules/*.smk``) take their
outputs from here, with the wildcards as named below; the plan fills the same templates in Python
(``str.format``). A template is the only place a path is spelled."""

from __future__ import annotations

# -- data: workflow/rules/data.smk ---------------------------------------------------------------
DOWNLOAD = "results/downloads/{name}"  # a remote file, as fetched and verified
SOURCE = "results/data/sources/{source}/{split}.h5"  # a real dataset's 'train' or 'test' split
GENERATOR = "results/data/{dataset}/generator.pt"  # a generated dataset's diffusion model
GENERATOR_CHECKPOINT = "results/checkpoints/data/{dataset}/generator.pt"  # its unfinished run, kept on failure
SHARD = "results/data/{dataset}/shards/{shard}.h5"
POOL = "results/data/{dataset}/pool.h5"  # a generated dataset's training pool
MANIFEST = "results/data/{dataset}/manifest.json"
QUALITY = "results/data/{dataset}/quality.json"  # the quality gate's report: the pool passed
PART = "results/data/{dataset}/parts/{part}.h5"  # a fetched dataset's published part

# -- training: workflow/rules/train.smk, adaptive.smk ---------------------------------------------
CELL = "results/runs/{experiment}/gamma_{gamma}/eta_{eta}.h5"  # one (gamma, eta) cell, every seed
COLUMN = "results/runs/{experiment}/gamma_{gamma}"  # an adaptive column: its trained cells and column.json
BRACKETS = "results/brackets/{experiment}.json"  # an adaptive experiment's bracketing records, one per gamma
PACK_CHECKPOINT = "results/checkpoints/{experiment}/pack{pack}.pt"  # outside the outputs: kept on failure
COLUMN_CHECKPOINT = "results/checkpoints/{experiment}/gamma_{gamma}.pt"  # the column's current round
COLUMN_ROUNDS = "results/checkpoints/{experiment}/gamma_{gamma}"  # its finished rounds, moved to COLUMN at the end

# -- cubes and figures: aggregate.smk, toy.smk, related.smk, figures.smk --------------------------
CUBE = "results/cubes/{experiment}.nc"
TOY_CUBE = "results/cubes/toy/{toy}.nc"
RELATED_CUBE = "results/cubes/related/{related}.nc"
FIGURE = "results/figures/{figure}.{ext}"  # ext: pdf, png, csv
FIGURE_KINDS = ("pdf", "png", "csv")

# -- logs, one per job ---------------------------------------------------------------------------
LOG = {
    "fetch_source": "results/logs/data/fetch_{source}.log",
    "fetch_part": "results/logs/data/{dataset}/fetch_part_{part}.log",
    "train_generator": "results/logs/data/{dataset}/train_generator.log",
    "sample_shard": "results/logs/data/{dataset}/sample_shard_{shard}.log",
    "merge_pool": "results/logs/data/{dataset}/merge_pool.log",
    "quality_gate": "results/logs/data/{dataset}/quality_gate.log",
    "train_pack": "results/logs/train/{experiment}/pack{pack}.log",
    "train_column": "results/logs/train/{experiment}/gamma_{gamma}.log",
    "eta_brackets": "results/logs/brackets/{experiment}.log",
    "aggregate": "results/logs/aggregate/{experiment}.log",
    "simulate_toy": "results/logs/toy/{toy}.log",
    "simulate_related": "results/logs/related/{related}.log",
    "figure": "results/logs/figures/{figure}.log",
}

# -- what each training job cost: Snakemake's `benchmark:` (wall and CPU time, peak memory, I/O), one TSV each
BENCHMARK = {
    "train_generator": "results/benchmarks/data/{dataset}/train_generator.tsv",
    "train_pack": "results/benchmarks/train/{experiment}/pack{pack}.tsv",
    "train_column": "results/benchmarks/train/{experiment}/gamma_{gamma}.tsv",
    "eta_brackets": "results/benchmarks/brackets/{experiment}.tsv",
}
