"""Why the miniature's rich-regime slope of eta_max(gamma) is steeper than the theory's 2/L: the run
length or the width? (README, "What the miniature measures".)

Trains the default config's MLP-MSE cells at the rich gammas (3.16 ... 1000, 2 per decade) on the full
eta grid 10^1 ... 10^5 at 4 per decade, 2 seeds, no loss cap (the authors' divergence rule), for a few
(width, steps), and prints per gamma log10 eta_max (the last eta below the first one where a seed
diverged) and the least-squares slope of log eta_max on log gamma. The pool and test set are the
quickstart's.

    python bench/rich_slope.py results/data/digits/pool.h5 results/data/sources/sklearn_digits/test.h5

Measured (2 cores, about 20 min; run from the repository root): width 128: slope 0.86 after 200
steps, 0.84 after 50 (the run length does not matter); width 512, 200 steps: 0.79. Theory: 2/3.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from gammasweep.data.pools import read_images
from gammasweep.data.stream import OnlineStream
from gammasweep.sweep.train import Members, Setup, train

GAMMAS = 10.0 ** np.arange(0.5, 3.01, 0.5)
ETAS = 10.0 ** np.arange(1.0, 5.01, 0.25)
SEEDS = (0, 1)


def log_eta_max(pool: str, test: tuple[torch.Tensor, torch.Tensor], width: int, steps: int) -> np.ndarray:
    """log10 eta_max per gamma (NaN where the grid's first eta diverges) for the depth-3 MLP of ``width``."""
    setup = Setup(
        model={"name": "mlp", "width": width, "depth": 3},
        input_shape=(8, 8, 1),
        num_classes=10,
        loss="mse",
        steps=steps,
        mean=(0.3,),
        std=(0.4,),
        dtype=torch.float32,
        device=torch.device("cpu"),
        divergence_cap=None,
        record_points=10,
        test_batch_size=1000,
    )
    edges = []
    for gamma in GAMMAS:
        members = Members(
            [s for s in SEEDS for _ in ETAS], [float(gamma)] * len(SEEDS) * len(ETAS), list(ETAS) * len(SEEDS)
        )
        curves = train(setup, members, OnlineStream(pool, 16, steps, 0), *test, log=lambda _: None)
        diverged = curves.diverged.reshape(len(SEEDS), len(ETAS)).any(0)
        first = int(np.argmax(diverged)) if diverged.any() else len(ETAS)
        edges.append(np.log10(ETAS[first - 1]) if first > 0 else np.nan)
    return np.array(edges)


def main(pool: str, test_file: str) -> None:
    torch.set_num_threads(1)
    images, labels = read_images(test_file)
    test = (torch.from_numpy(images), torch.from_numpy(labels))
    for width, steps in ((128, 200), (128, 50), (512, 200)):
        edges = log_eta_max(pool, test, width, steps)
        slope = np.polyfit(np.log10(GAMMAS), edges, 1)[0]
        print(f"width {width:4d}, {steps:3d} steps: log10 eta_max {np.round(edges, 2).tolist()}, slope {slope:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
