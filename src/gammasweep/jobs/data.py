"""The data rules (workflow/rules/data.smk): fetch sources and parts, train the generator, sample and merge
the pool, and the quality gate."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gammasweep.data.download import Remote, fetch, file_digests
from gammasweep.data.formats import convert_cifar5m_part
from gammasweep.data.pools import image_writer, open_pool, read_images, write_images
from gammasweep.data.quality import check_quality, classify, quality_report, train_reference_classifier
from gammasweep.data.sources import read_source
from gammasweep.results.io import atomic_path
from gammasweep.results.provenance import resolve_device
from gammasweep.sweep.checkpoints import DEFAULT_MINUTES, resumable


def fetch_downloads(downloads: dict[str, dict]) -> dict[str, Path]:
    """Fetch (or re-verify) each download ``{name: {"remote": config entry, "path": where}}``; a
    truncated or corrupt copy is reported and fetched again, never used."""
    return {name: fetch(Remote(**entry["remote"]), entry["path"]) for name, entry in downloads.items()}


def fetch_source(source: str, downloads: dict[str, dict], train_out: str, test_out: str) -> None:
    """Write a real dataset's train and test images as HDF5, from its downloads."""
    splits = read_source(source, fetch_downloads(downloads))
    for path, (images, labels) in zip((train_out, test_out), splits, strict=True):
        write_images(path, images, labels, {"source": source})
        print(f"wrote {len(labels)} images to {path}")


def fetch_part(downloads: dict[str, dict], out: str) -> None:
    """Fetch one part of a fetched dataset (CIFAR-5M's ``partK.npz``) and convert it to an HDF5 pool part."""
    (path,) = fetch_downloads(downloads).values()
    convert_cifar5m_part(path, out)


def quality_gate(pool: str, train: str, test: str, gate: dict, num_classes: int, out: str, device: str) -> None:
    """Check a generated pool: a classifier trained on the real source must label the generated
    images as their conditioning class, and the classes must balance. Writes the report (JSON) if
    the pool passes; otherwise prints it and fails, so that training never reads a broken pool."""
    (train_images, train_labels), (test_images, test_labels) = read_images(train), read_images(test)
    images, labels = read_images(pool)
    start = time.time()
    model = train_reference_classifier(
        train_images,
        train_labels,
        num_classes,
        steps=gate["classifier_steps"],
        **{arg: gate[key] for arg, key in (("batch_size", "classifier_batch_size"), ("seed", "seed")) if key in gate},
        device=str(resolve_device(device)),
    )
    accuracy = float((classify(model, test_images) == test_labels).mean())
    print(f"reference classifier: {accuracy:.4f} accuracy on the real test set ({time.time() - start:.1f} s)")
    report = quality_report(
        model,
        images,
        labels,
        num_classes,
        min_agreement=gate["min_agreement"],
        max_imbalance=gate["max_imbalance"],
        reference_accuracy=accuracy,
        min_class_agreement=gate.get("min_class_agreement"),
    )
    print(json.dumps(report, indent=1))
    check_quality(report)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=1))
    print(f"{pool} passes: agreement {report['agreement']:.4f}, imbalance {report['imbalance']:.4f}")


def shard_sizes(images: int, shards: int) -> list[int]:
    """Split ``images`` into ``shards`` near-equal parts."""
    return [images // shards + (k < images % shards) for k in range(shards)]


def shard_seed(seed: int, shard: int) -> int:
    """An independent sampling seed per shard, derived from the dataset's seed."""
    return int(np.random.SeedSequence([seed, shard]).generate_state(1)[0])


def train_generator(
    train_images: str,
    source: str,
    generator: dict,
    out: str,
    device: str,
    checkpoint: str | None = None,
    checkpoint_seconds: float = 60.0 * DEFAULT_MINUTES,
) -> None:
    """Train a generated dataset's diffusion model on its real source and write it to ``out``. With a
    ``checkpoint`` path the run resumes from it, saves it every ``checkpoint_seconds`` and on
    SIGTERM/SIGUSR1 (then exits non-zero), and deletes it once ``out`` is written."""
    from gammasweep.data.diffusion import train_generator as train_ddpm
    from gammasweep.plan.config import generator_config

    images, labels = read_images(train_images)
    config = generator_config(source, generator)
    with resumable(checkpoint, checkpoint_seconds, f"train_generator {out}") as saves:
        train_ddpm(images, labels, config, out, checkpoint=saves, device=str(resolve_device(device)))


def sample_shard(checkpoint: str, sampling: dict, shard: int, out: str, device: str) -> None:
    """Sample one shard of a generated pool, class-balanced, with explicit labels."""
    from gammasweep.data.diffusion import sample_labelled

    count = shard_sizes(sampling["images"], sampling["shards"])[shard]
    seed = shard_seed(sampling["seed"], shard)
    images, labels = sample_labelled(
        checkpoint,
        count,
        seed=seed,
        guidance_weight=sampling["guidance_weight"],
        device=str(resolve_device(device)),
        **{
            key: sampling[key]
            for key in ("sampling_steps", "batch_size", "clip_denoised", "variance", "storage")
            if key in sampling
        },
    )
    write_images(out, images, labels, {"shard": shard, "seed": seed})


def merge_pool(shards: Sequence[str], out: str, manifest: str) -> None:
    """Concatenate the shards into one chunked pool; write a manifest (JSON) with the sha256 of every
    shard and of the pool, and the pool's class counts."""
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open_pool(Path(p))) for p in shards]
        sizes = [len(f["labels"]) for f in files]
        labels = np.concatenate([f["labels"][()] for f in files])
        counts = np.bincount(labels).tolist()
        attrs = {"class_counts": json.dumps(counts)}
        stored = files[0]["images"]
        with image_writer(out, sum(sizes), stored.shape[1:], attrs, stored.dtype) as pool:
            for f in files:
                pool.write(f["images"][()], f["labels"][()])
    record = {
        "pool": {"path": out, "sha256": file_digests(out)["sha256"], "images": int(sum(sizes)), "class_counts": counts},
        "shards": [
            {"path": p, "sha256": file_digests(p)["sha256"], "images": n} for p, n in zip(shards, sizes, strict=True)
        ],
    }
    with atomic_path(manifest) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1))
    print(f"pool {out}: {sum(sizes)} images, class counts {counts}; manifest {manifest}")
