"""Cell-steps per second of the packed trainer against a per-cell baseline in the paper's style.

Baseline (as the authors' code trains a cell): one nn.Module per cell, a frozen deep copy of its
initial weights evaluated every step for the centering, ``torch.optim.SGD``, the test set
evaluated at the same log-spaced steps, cells one after another. Packed: ``gammasweep.sweep.train.train``
on all K cells at once (shared batch, one GEMM per layer, the frozen network once per distinct
seed), with its loss records. Both run in this process on the same data, best of three
interleaved runs after a warm-up; the ratio is what counts. A "cell" here is one (gamma, eta, seed) network.

    python bench/packed_cells.py               # the table of bench/README.md (a few minutes on 2 cores)
    python bench/packed_cells.py --quick       # the target case only: MLP width 128, K = 32
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gammasweep.data.pools import write_images
from gammasweep.data.stream import OnlineStream
from gammasweep.results.provenance import device_name
from gammasweep.sweep.losses import mse
from gammasweep.sweep.models import build_model
from gammasweep.sweep.parameterization import centered_output, learning_rate
from gammasweep.sweep.train import Members, Setup, eval_steps, train

BATCH, CLASSES = 128, 10


def members(k: int) -> Members:
    """K cells: gamma in {0.1, 1, 10}, eta = 1e-3 (stable: nothing diverges), seeds 0 and 1."""
    return Members(seeds=[c % 2 for c in range(k)], gammas=[(0.1, 1.0, 10.0)[c % 3] for c in range(k)], etas=[1e-3] * k)


def baseline(
    spec: dict,
    shape: tuple[int, int, int],
    cells: Members,
    stream: OnlineStream,
    steps: int,
    test: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
) -> None:
    """The paper-style loop: each cell its own module, frozen copy and optimizer, one after another."""
    x_test, y_test = test[0].to(device, torch.float32) / 255.0, test[1].to(device)
    evals = set(eval_steps(steps).tolist())
    for seed, gamma, eta in zip(cells.seeds, cells.gammas, cells.etas):
        net = build_model(spec, shape, CLASSES, seeds=[seed]).to(device)
        frozen = copy.deepcopy(net).requires_grad_(False)
        optimizer = torch.optim.SGD(net.parameters(), lr=learning_rate(net.width, eta))
        for t in range(steps + 1):
            if t in evals:
                with torch.no_grad():
                    f = centered_output(net(x_test), frozen(x_test), gamma)
                    mse(f, y_test).item(), (f.argmax(-1) == y_test).float().mean().item()
            if t == steps:
                break
            images, labels = stream.batch(t)
            x, y = images.to(device, torch.float32) / 255.0, labels.to(device)
            optimizer.zero_grad()
            mse(centered_output(net(x), frozen(x), gamma), y).sum().backward()
            optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(spec: dict, shape: tuple[int, int, int], k: int, steps: int, pool: Path, device: torch.device) -> dict:
    stream = OnlineStream(pool, BATCH, steps, data_seed=0)
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
    cells = members(k)
    runs = {
        "baseline": lambda: baseline(spec, shape, cells, stream, steps, test, device),
        "packed": lambda: train(setup, cells, stream, *test, log=lambda m: None),
    }
    rates = {}
    for run in runs.values():
        run()  # warm-up (allocator, kernels, caches)
    for _ in range(3):  # interleaved, best of three: this machine's speed drifts
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            rates[name] = max(rates.get(name, 0.0), k * steps / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the target case only (MLP width 128, K = 32)")
    parser.add_argument("--steps", type=int, default=20, help="SGD steps per cell per measurement")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cases = [
        ({"name": "mlp", "width": w, "depth": 3}, shape) for shape in ((8, 8, 1), (28, 28, 1)) for w in (128, 512, 1024)
    ] + [({"name": "cnn", "width": 16}, (28, 28, 1))]
    sizes = (8, 32)
    if args.quick:
        cases, sizes = cases[:1], (32,)
    print(
        f"device: {device_name(device)}; torch threads {torch.get_num_threads()}; batch {BATCH}; "
        f"{args.steps} steps; float32\n"
    )
    print("| model | input | K | baseline cell-steps/s | packed cell-steps/s | ratio |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for spec, shape in cases:
            pool = Path(tmp) / f"pool_{'x'.join(map(str, shape))}.h5"
            if not pool.exists():
                rng = np.random.default_rng(0)
                images = rng.integers(0, 256, (BATCH * args.steps, *shape), dtype=np.uint8)
                write_images(pool, images, rng.integers(0, CLASSES, len(images)))
            for k in sizes:
                rates = measure(spec, shape, k, args.steps, pool, device)
                name = ", ".join(f"{key} {value}" for key, value in spec.items() if key != "name")
                print(
                    f"| {spec['name']} ({name}) | {'x'.join(map(str, shape))} | {k} | {rates['baseline']:.0f} | "
                    f"{rates['packed']:.0f} | {rates['packed'] / rates['baseline']:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
