"""Training steps/s and sampling images/s of a generated dataset's diffusion generator at its config's settings,
and the hours its whole pool takes at those rates (training all its steps, sampling all its images).

The workflow's own job functions run (``gammasweep.jobs.data.train_generator`` and ``sample_shard``: the same
code as the rules), on random images of the source's shape. Training: a warm-up run, then runs of N and 2N steps;
the rate is N over the difference of their times (start-up, model build and the output's write cancel). Sampling:
one shard of ``--images`` images (default: one batch of the config's sampling batch size), the pool's write
included, after a warm-up shard of ten images.

    python bench/generator.py config/paper.yaml mnist1m                            # MNIST-1M's generator: GPU work
    python bench/generator.py config/config.yaml digits --train-steps 4 --images 16   # the miniature's (a smoke test)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from gammasweep.data.pools import write_images
from gammasweep.data.sources import SOURCES
from gammasweep.jobs.data import sample_shard, train_generator
from gammasweep.plan.config import generator_config
from gammasweep.plan.plan import Plan
from gammasweep.results.provenance import device_name, resolve_device

REPO = Path(__file__).resolve().parents[1]


def seconds(run: Callable[[], object]) -> float:
    """Wall-clock seconds of one call of ``run``."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="a config file, e.g. config/paper.yaml")
    parser.add_argument("dataset", help="a generated dataset of the config, e.g. mnist1m")
    parser.add_argument("--train-steps", type=int, default=50, help="N: the training runs are N and 2N steps")
    parser.add_argument("--train-images", type=int, default=60_000, help="random training images (MNIST: 60,000)")
    parser.add_argument("--images", type=int, help="images sampled (default: one batch, the config's batch_size)")
    parser.add_argument("--json", type=Path, help="also write the settings and rates here")
    args = parser.parse_args()
    dataset = Plan.from_files(args.config, REPO / "config" / "schema.yaml").config["datasets"][args.dataset]
    generator, sampling = dataset["generator"], dataset["sampling"]
    settings = generator_config(dataset["source"], generator)  # the generator's settings, its defaults filled in
    images = args.images or sampling["batch_size"]
    device = resolve_device("auto")
    print(f"device: {device_name(device)}; torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{args.config} {args.dataset}: generator {generator}\nsampling {sampling}\n", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rng, source = np.random.default_rng(0), SOURCES[dataset["source"]]
        train_images = Path(tmp) / "train.h5"
        pixels = rng.integers(0, 256, (args.train_images, *source.shape), dtype=np.uint8)
        write_images(train_images, pixels, rng.integers(0, source.num_classes, args.train_images))
        checkpoint = str(Path(tmp) / "generator.pt")

        def training(steps: int) -> float:
            """Seconds of the training job for ``steps`` steps."""
            run = {**generator, "train_steps": steps}
            return seconds(lambda: train_generator(str(train_images), dataset["source"], run, checkpoint, "auto"))

        training(min(5, args.train_steps))  # warm-up
        extra = training(2 * args.train_steps) - training(args.train_steps)  # seconds of N more steps
        if extra <= 0:
            raise SystemExit(f"{args.train_steps} more steps took no time: timing noise; raise --train-steps")
        steps_per_s = args.train_steps / extra

        def sampling_seconds(count: int) -> float:
            """Seconds of the sampling job for one shard of ``count`` images, written."""
            shard = {**sampling, "images": count, "shards": 1}
            return seconds(lambda: sample_shard(checkpoint, shard, 0, str(Path(tmp) / "shard.h5"), "auto"))

        sampling_seconds(10)  # warm-up
        images_per_s = images / sampling_seconds(images)
    hours = {"train": settings.train_steps / steps_per_s / 3600, "sample": sampling["images"] / images_per_s / 3600}
    print(
        f"\n| dataset | train steps/s (batch {settings.batch_size}) | sampling images/s ({images} images) | "
        f"hours: {settings.train_steps} training steps | hours: {sampling['images']:,} images | hours in all |\n"
        f"|---|---|---|---|---|---|\n| {args.dataset} | {steps_per_s:.2f} | {images_per_s:.1f} | "
        f"{hours['train']:.2f} | {hours['sample']:.2f} | {sum(hours.values()):.2f} |"
    )
    if args.json:
        summary = {"device": device_name(device), "torch": torch.__version__, "config": str(args.config)}
        summary |= {"dataset": args.dataset, "generator": generator, "sampling": sampling}
        summary |= {"train_steps_per_s": steps_per_s, "sample_images_per_s": images_per_s, "hours": hours}
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
