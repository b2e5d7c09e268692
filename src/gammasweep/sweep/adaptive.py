"""Adaptive eta: train only the eta grid points of a gamma column that the phase portrait needs.

On a column's log-spaced eta grid (indices 0..n-1, ascending) the *edge* is the index of the first
point that diverges when every lower point stays stable: eta_max(gamma) is the point just below it.

1. ``find_edges`` (the bracketing stage): batched short runs, seeded by the theory guess
   eta_max ~ gamma^2 (lazy) ~ gamma^(2/L) (rich), widen the search until the edge is bracketed, then
   narrow the gap ``window`` points at a time (a ``window``-section search); every column of an
   experiment searches in lockstep, so that one round's short runs of all columns train together.
2. ``train_window`` (the training stage): full-length runs of the points from the edge (one step
   above eta_max) down to ``depth_steps`` below eta_max. A point stable in its short run may diverge
   later (progressive sharpening): the edge then moves down and the window grows to keep its depth.

Points above the final edge are recorded as diverged (inferred, never trained to the end); points
below the window as skipped. The run functions are callbacks, so this module holds only the search.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gammasweep.theory import toy as theory

TRAINED, INFERRED_DIVERGED, SKIPPED = 0, 1, 2
STATUS_MEANINGS = "trained inferred_diverged skipped"  # CF flag_meanings of the cube's cell_status

# per column, grid indices -> per column, the diverged step of each index's short run (-1: stable)
RunShort = Callable[[dict[str, list[int]]], dict[str, dict[int, int]]]
RunFull = Callable[[list[int]], dict[int, bool]]  # grid indices -> diverged in the full-length run


@dataclass(frozen=True)
class AdaptiveSettings:
    """An experiment's ``adaptive:`` block (config/schema.yaml), defaults filled in."""

    bracket_steps: int  # SGD steps of a bracketing run
    window: int = 4  # grid points per bracketing round, trained together as one batched short run
    depth_decades: float | None = 3.0  # trained depth below eta_max; None: all the way down
    guess_scale: float = 1.0  # the theory guess eta_max(gamma) is multiplied by this

    def depth_steps(self, etas: Sequence[float]) -> int | None:
        """The depth in steps of the eta grid ``etas`` (its median log spacing)."""
        if self.depth_decades is None or len(etas) < 2:
            return None
        spacing = float(np.median(np.diff(np.log10(sorted(etas)))))
        return math.ceil(self.depth_decades / spacing - 1e-9)


def eta_guess(gamma: float, layers: int, loss: str, scale: float = 1.0, optimizer: str = "sgd") -> float:
    """First guess of eta_max(gamma): for SGD the toy model's edge for the loss (``theory.eta_max``:
    ~ gamma^2 or, with cross-entropy, ~ gamma lazy; ~ gamma^(2/L) rich); for the sign-based optimizers
    that edge at gamma = 1 carried by their own exponents (``theory.divergence_slopes``: gamma,
    gamma^(1/L)). Only a start: the bracketing widens from it until it finds the edge."""
    if optimizer == "sgd":
        return scale * float(theory.eta_max(gamma, layers, loss))
    lazy, rich = theory.divergence_slopes(loss, optimizer, layers)
    return scale * float(theory.eta_max(1.0, layers, loss)) * gamma ** (lazy if gamma <= 1 else rich)


def nearest_index(etas: list[float], eta: float) -> int:
    """The grid index whose eta is closest to ``eta`` in log space."""
    return min(range(len(etas)), key=lambda i: abs(math.log(etas[i]) - math.log(eta)))


def bracket(results: dict[int, int], n: int) -> tuple[int, int]:
    """(last stable, first diverged) indices known so far; -1 and n stand for "below" and "above the grid".

    Stable points above the first diverged one are ignored: the edge is where divergence starts from below.
    """
    first_diverged = min((i for i, step in results.items() if step >= 0), default=n)
    last_stable = max((i for i, step in results.items() if step < 0 and i < first_diverged), default=-1)
    return last_stable, first_diverged


def next_trials(results: dict[int, int], n: int, start: int, window: int) -> list[int]:
    """The grid points of the next bracketing round: a window around ``start`` at first; then
    doubling steps up from the last stable point (nothing diverged yet) or down from the first
    diverged one (nothing stable yet), longer each round; then ``window`` points spread evenly over
    the gap between them."""
    last_stable, first_diverged = bracket(results, n)
    stride = 2 ** max(len(results) // window - 1, 0)  # the search widens faster the longer it lasts
    if not results:
        low = min(max(start - window // 2, 0), max(n - window, 0))
        trials = range(low, low + window)
    elif first_diverged == n:
        trials = [last_stable + stride * 2**k for k in range(window)]
    elif last_stable == -1:
        trials = [first_diverged - stride * 2**k for k in range(window)]
    elif (gap := first_diverged - last_stable - 1) <= window:
        trials = range(last_stable + 1, first_diverged)
    else:
        trials = [last_stable + round(k * (gap + 1) / (window + 1)) for k in range(1, window + 1)]
    return sorted({min(max(i, 0), n - 1) for i in trials} - set(results))


def find_edges(
    columns: Mapping[str, tuple[int, int]], window: int, run: RunShort, log: Callable[[str], None] = print
) -> dict[str, tuple[int, dict[int, int]]]:
    """Bracket the edge of every column ``key: (n, start)`` (an ``n``-point grid, searched from index
    ``start``) by short runs (see module doc); each round ``run`` gets the trials of every column not yet
    bracketed. Returns per column (its edge index, n if nothing diverges; every short run's diverged step)."""
    results: dict[str, dict[int, int]] = {key: {} for key in columns}
    for round_ in itertools.count(1):
        trials = {
            key: next_trials(results[key], n, start, window)
            for key, (n, start) in columns.items()
            if not _bracketed(results[key], n)
        }
        if not trials:
            break
        for key, found in run(trials).items():
            results[key] |= found
        log(f"bracket round {round_}: {sum(map(len, trials.values()))} short runs in {len(trials)} columns")
    return {key: (bracket(results[key], n)[1], results[key]) for key, (n, _) in columns.items()}


def _bracketed(results: dict[int, int], n: int) -> bool:
    last_stable, first_diverged = bracket(results, n)
    return last_stable + 1 == first_diverged


def window_indices(n: int, edge: int, depth_steps: int | None) -> range:
    """Grid points trained at full length for an edge: from it (if on the grid) down to ``depth_steps``
    below eta_max (the point below the edge); none when the grid's first point already diverges."""
    if edge == 0:
        return range(0)
    low = 0 if depth_steps is None else max(edge - 1 - depth_steps, 0)
    return range(low, min(edge, n - 1) + 1)


def train_window(
    n: int, edge: int, depth_steps: int | None, run: RunFull, log: Callable[[str], None] = print
) -> tuple[int, dict[int, bool]]:
    """Train the window of ``edge`` at full length with ``run``; a late divergence inside it lowers the
    edge and the window grows down to keep ``depth_steps``, a top point that survives raises it.
    Returns (the full-length edge, every trained point's diverged flag)."""
    trained: dict[int, bool] = {}
    while todo := [i for i in window_indices(n, edge, depth_steps) if i not in trained]:
        trained |= run(todo)
        diverged = [i for i in sorted(trained) if trained[i]]
        new_edge = diverged[0] if diverged else max(trained) + 1
        if new_edge != edge:
            log(f"full-length runs move the edge from index {edge} to {new_edge}; the window follows")
        edge = new_edge
    return edge, trained


def statuses(n: int, edge: int, trained: dict[int, bool]) -> list[int]:
    """Per grid point: TRAINED, INFERRED_DIVERGED (untrained, above the edge) or SKIPPED (untrained, below)."""
    return [TRAINED if i in trained else INFERRED_DIVERGED if i >= edge else SKIPPED for i in range(n)]
