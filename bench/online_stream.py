"""Is data ever the bottleneck? Images per second the online stream delivers against images per
second a training pack consumes, in the same process.

Loader: ``OnlineStream`` reads a seeded pass of ``steps x batch`` images out of a pool in two HDF5
parts (block by block; from the page cache, as on a node that has just written or read the pool),
is placed on the device (``OnlineStream.to_device``) and serves every batch there, normalized as the
trainer does; twice: held whole on the device (the default budget), and with a budget of
``WINDOW_STEPS`` steps that forces windows (a pool too large for the device, e.g. CIFAR-5M). The
serve time includes the placement. Consumer: the packed trainer (``gammasweep.sweep.train.train``) on a
pack of K members at batch 128. The ratio loader / consumer is what counts: above 1, data is not
the bottleneck.

    python bench/online_stream.py
    python bench/online_stream.py --steps 100 --trainer-steps 5 --json stream.json   # shorter; rows as JSON too
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gammasweep.data.pools import write_images
from gammasweep.data.stream import OnlineStream, normalize
from gammasweep.results.provenance import device_name
from gammasweep.sweep.train import Members, Setup, train

BATCH, CLASSES = 128, 10
WINDOW_STEPS = 64  # the windowed case: a budget of this many steps' batches (400 steps: 6.25 windows)


def serve_rate(stream: OnlineStream, device: torch.device, budget_bytes: float | None) -> float:
    """Images/s of placing the stream on the device under ``budget_bytes`` and serving every batch
    there, normalized."""
    start = time.perf_counter()
    stream.to_device(device, budget_bytes, log=lambda m: None)
    for t in range(stream.steps):
        images, _ = stream.batch(t)
        normalize(images, (0.5,), (0.25,), torch.float32)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return BATCH * stream.steps / (time.perf_counter() - start)


def loader_rates(parts: list[Path], steps: int, device: torch.device) -> tuple[float, float, float]:
    """Images/s of (building a pass of ``steps`` batches, serving it held on the device, serving it in windows)."""
    start = time.perf_counter()
    stream = OnlineStream(parts, BATCH, steps, data_seed=0)
    build = BATCH * steps / (time.perf_counter() - start)
    held = serve_rate(stream, device, None)
    window_budget = WINDOW_STEPS * BATCH * (stream.images[0].nbytes + stream.labels.element_size())
    windowed = serve_rate(stream, device, window_budget)
    assert stream.window_steps == WINDOW_STEPS
    return build, held, windowed


def training_rate(
    parts: list[Path], shape: tuple[int, int, int], spec: dict, k: int, steps: int, device: torch.device
) -> float:
    """Images/s consumed by a pack of k members over ``steps`` steps (each reads one batch, shared by the members)."""
    stream = OnlineStream(parts, BATCH, steps, data_seed=0)
    test = torch.randint(0, 256, (256, *shape), dtype=torch.uint8), torch.randint(0, CLASSES, (256,))
    setup = Setup(
        model=spec,
        input_shape=shape,
        num_classes=CLASSES,
        loss="mse",
        steps=steps,
        mean=(0.5,),
        std=(0.25,),
        dtype=torch.float32,
        device=device,
        divergence_cap=1e4,
        record_points=10,
        test_batch_size=256,
    )
    members = Members(seeds=[m % 2 for m in range(k)], gammas=[1.0] * k, etas=[1e-3] * k)
    train(setup, members, stream, *test, log=lambda m: None)  # warm-up
    start = time.perf_counter()
    train(setup, members, stream, *test, log=lambda m: None)
    return BATCH * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400, help=f"batches in the pass (more than {WINDOW_STEPS})")
    parser.add_argument("--trainer-steps", type=int, default=20, help="steps of the timed training run")
    parser.add_argument("--json", type=Path, help="also write the device and the rows here")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {device_name(device)}; torch threads {torch.get_num_threads()}; batch {BATCH}\n")
    print(
        f"| pool | trainer | loader: build pass img/s | serve held img/s | serve in windows of {WINDOW_STEPS} "
        "steps img/s | trainer img/s | held / trainer | windows / trainer |"
    )
    print("|---|---|---|---|---|---|---|---|")
    cases = [
        ((28, 28, 1), {"name": "mlp", "width": 512, "depth": 3}, 16),
        ((32, 32, 3), {"name": "cnn", "width": 16}, 4),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape, spec, k in cases:
            rng = np.random.default_rng(0)
            parts = []
            for p in range(2):  # a pool in two parts, like CIFAR-5M's
                parts.append(Path(tmp) / f"{'x'.join(map(str, shape))}_{p}.h5")
                images = rng.integers(0, 256, (BATCH * args.steps // 2 + 1000, *shape), dtype=np.uint8)
                write_images(parts[-1], images, rng.integers(0, CLASSES, len(images)))
            build, held, windowed = loader_rates(parts, args.steps, device)
            consume = training_rate(parts, shape, spec, k, args.trainer_steps, device)
            name = ", ".join(f"{key} {value}" for key, value in spec.items() if key != "name")
            print(
                f"| {'x'.join(map(str, shape))} | {spec['name']} ({name}), K={k} | {build:,.0f} | {held:,.0f} | "
                f"{windowed:,.0f} | {consume:,.0f} | {held / consume:.0f} | {windowed / consume:.0f} |",
                flush=True,
            )
            rates = {"build": build, "held": held, "windowed": windowed, "trainer": consume}
            rows.append({"pool": list(shape), "trainer": spec, "k": k, "images_per_s": rates})
    if args.json:
        summary = {"device": device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
        args.json.write_text(json.dumps(summary | {"batch": BATCH, "steps": args.steps, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
