"""What each probe costs: the same packed run with and without it, in this process.

Each probe (``gammasweep.probes.recorder``, with the settings below) is reported in units of one training
step of the run, so the overhead in any config follows: evals x (probe cost in steps) / steps.
Best of three interleaved runs after a warm-up; 28x28x1 random images, batch 128, float32.

    python bench/probes.py                       # MLP width 512, depth 3, K = 16 (the paper's MLP)
    python bench/probes.py --width 128 --steps 50 --probes sharpness alignment
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gammasweep.data.pools import write_images
from gammasweep.data.stream import OnlineStream
from gammasweep.probes.recorder import PROBES
from gammasweep.results.provenance import device_name
from gammasweep.sweep.train import Members, Setup, eval_steps, train

BATCH, CLASSES, SHAPE = 128, 10, (28, 28, 1)


SETTINGS = {
    "sharpness": {"examples": 256, "iterations": 20},
    "spectrum": {"examples": 256, "iterations": 30},
    "alignment": {"examples": 64},
    "outputs": {"examples": 1000},
    "representation": {"examples": 256},
    "weight_movement": {},
}  # the paper config's (config/paper.yaml)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--members", type=int, default=16, help="members of the pack (cells x seeds)")
    parser.add_argument("--steps", type=int, default=100, help="SGD steps per run")
    parser.add_argument("--probes", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    k = args.members
    cells = Members(
        seeds=[c % 2 for c in range(k)], gammas=[(0.1, 1.0, 10.0)[c % 3] for c in range(k)], etas=[1e-3] * k
    )
    setup = {
        "model": {"name": "mlp", "width": args.width, "depth": 3},
        "input_shape": SHAPE,
        "num_classes": CLASSES,
        "loss": "mse",
        "steps": args.steps,
        "mean": (0.5,),
        "std": (0.25,),
        "dtype": torch.float32,
        "device": device,
        "divergence_cap": 1e4,
        "record_points": 10,
        "test_batch_size": 1000,
    }
    test = torch.randint(0, 256, (1000, *SHAPE), dtype=torch.uint8), torch.randint(0, CLASSES, (1000,))
    with tempfile.TemporaryDirectory() as tmp:
        pool = Path(tmp) / "pool.h5"
        rng = np.random.default_rng(0)
        write_images(
            pool,
            rng.integers(0, 256, (BATCH * args.steps, *SHAPE), dtype=np.uint8),
            rng.integers(0, CLASSES, BATCH * args.steps),
        )
        stream = OnlineStream(pool, BATCH, args.steps, data_seed=0)
        variants = {"plain": {}} | {name: {name: SETTINGS[name]} for name in args.probes}
        runs = {
            name: (lambda s=Setup(**setup, probes=p): train(s, cells, stream, *test, log=lambda m: None))
            for name, p in variants.items()
        }
        best = {name: float("inf") for name in runs}
        for run in runs.values():
            run()  # warm-up
        for _ in range(3):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                best[name] = min(best[name], time.perf_counter() - start)
    evals, paper = len(eval_steps(args.steps)), eval_steps(7500)
    step = best["plain"] / args.steps  # includes the plain run's test evaluations: a slight overestimate
    print(
        f"device: {device_name(device)}; torch threads {torch.get_num_threads()}; MLP width {args.width}, depth 3; "
        f"K = {k}; batch {BATCH}; {args.steps} steps, {evals} evals; plain run {best['plain']:.2f} s"
    )
    print(
        "| probe | settings | run with it / plain | one measurement, in training steps | at the paper's 7,500 steps |"
    )
    print("|---|---|---|---|---|")
    for name in args.probes:
        measurements = 1 if PROBES[name].final_only else evals  # final-only probes measure once per run
        in_steps = (best[name] - best["plain"]) / measurements / step
        at_paper = (1 if measurements == 1 else len(paper)) * in_steps / 7500
        print(
            f"| {name} | {SETTINGS[name]} | {best[name] / best['plain']:.2f} | {in_steps:.1f} "
            f"| +{100 * at_paper:.1f}% |"
        )


if __name__ == "__main__":
    main()
