"""What a training run records (``Curves``) and at which steps: plain numpy and xarray, so that
cell files, cubes and figures are read without torch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr


def eval_steps(total_steps: int) -> np.ndarray:
    """Test-evaluation steps 0, 1, 2, 5, 10, 20, 50, ... up to and including ``total_steps``."""
    steps = {0, total_steps}
    decade = 1
    while decade <= total_steps:
        steps.update(m * decade for m in (1, 2, 5) if m * decade <= total_steps)
        decade *= 10
    return np.array(sorted(steps), dtype=np.int64)


def record_steps(total_steps: int, count: int) -> np.ndarray:
    """About ``count`` log-spaced training steps in [0, total_steps - 1] at which the loss is recorded."""
    grid = np.round(np.geomspace(1, max(total_steps - 1, 1), max(count - 1, 1))).astype(np.int64)
    return np.unique(np.concatenate([[0], grid, [total_steps - 1]]))


@dataclass
class Curves:
    """What a training run records. E members, R record steps, V evaluation steps."""

    step: np.ndarray  # (R,) training steps of the train-loss records
    train_loss: np.ndarray  # (E, R) mean batch loss over the steps since the previous record
    train_loss_at_step: np.ndarray  # (E, R) the batch loss at exactly that step
    eval_step: np.ndarray  # (V,) number of SGD updates done when the test set was evaluated
    test_loss: np.ndarray  # (E, V)
    test_accuracy: np.ndarray  # (E, V) fraction in [0, 1]
    diverged: np.ndarray  # (E,) bool
    diverged_step: np.ndarray  # (E,) first step whose loss was non-finite or above the cap; -1 if none
    probes: dict[str, xr.DataArray] = field(default_factory=dict)  # record -> (member, [eval_step,] ...) (``probes``)

    def members(self, rows: slice) -> Curves:
        """The curves of members ``rows`` only (e.g. one cell's seeds out of a pack)."""
        shared = {"step": self.step, "eval_step": self.eval_step}
        sliced = {k: v[rows] for k, v in vars(self).items() if k not in shared and k != "probes"}
        return Curves(**shared, **sliced, probes={k: v.isel(member=rows) for k, v in self.probes.items()})

    def arrays(self) -> dict[str, np.ndarray]:
        """Every recorded array by name, the probes' records under their own names."""
        return {k: v for k, v in vars(self).items() if k != "probes"} | {k: v.values for k, v in self.probes.items()}
