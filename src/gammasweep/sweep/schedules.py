"""Step-size schedules: the factor on a run's step size at each step.

A schedule is data (``training: {schedule: ...}`` of an experiment, or one entry of a related
experiment's ``schedules``) and is the same object for the gamma-eta trainer (``gammasweep.sweep.train``)
and the related papers' small nets (``gammasweep.related.experiments``):

* ``warmup: {steps, start, shape}``: the first ``steps`` steps run at ``start`` x the step size,
  held there (``constant``, e.g. a small step size switched to the large one) or rising to it
  ``linear``-ly or ``exponential``-ly (a fixed factor per step).
* ``decay: {at, factor}``: from the fraction ``at`` of the run on, the step size is divided by
  ``factor`` ("large then decayed", Andriushchenko et al. 2023).

No keys: constant (factor 1 at every step, so a run without a schedule is bit-identical).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WARMUP_SHAPES = ("constant", "linear", "exponential")


@dataclass(frozen=True)
class Schedule:
    """Factors (float64) on the step size; ``decay_at`` is a fraction of the run's steps."""

    warmup_steps: int = 0
    warmup_start: float = 1.0
    warmup_shape: str = "linear"
    decay_at: float | None = None
    decay_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.warmup_shape not in WARMUP_SHAPES:
            raise ValueError(f"warm-up shape {self.warmup_shape!r}: use one of {WARMUP_SHAPES}")
        if self.warmup_steps < 0 or not self.warmup_start > 0 or not self.decay_factor > 0:
            raise ValueError(f"schedule {self}: warm-up steps >= 0, start > 0 and decay factor > 0")
        if self.decay_at is not None and not 0 <= self.decay_at <= 1:
            raise ValueError(f"schedule {self}: decay_at is a fraction of the run, in [0, 1]")

    @classmethod
    def from_config(cls, spec: dict | None) -> Schedule:
        """From the config's ``{warmup: {steps, start, shape}, decay: {at, factor}}`` (either optional)."""
        spec = spec or {}
        fields = {
            "warmup_steps": ("warmup", "steps", int),
            "warmup_start": ("warmup", "start", float),
            "warmup_shape": ("warmup", "shape", str),
            "decay_at": ("decay", "at", float),
            "decay_factor": ("decay", "factor", float),
        }  # the dataclass's defaults fill the rest
        return cls(
            **{
                field: kind(spec[block][key])
                for field, (block, key, kind) in fields.items()
                if key in spec.get(block, {})
            }
        )

    def factors(self, steps: int) -> np.ndarray:
        """The factor at each step 0 .. steps - 1, shape (steps,)."""
        t = np.arange(steps, dtype=np.float64)
        factor = np.ones(steps)
        w = self.warmup_steps
        if w:
            if self.warmup_shape == "constant":
                ramp = np.full(steps, self.warmup_start)
            elif self.warmup_shape == "linear":
                ramp = self.warmup_start + (1 - self.warmup_start) * t / w
            else:
                ramp = self.warmup_start ** (1 - t / w)
            factor = np.where(t < w, ramp, factor)
        if self.decay_at is not None:
            factor = np.where(t >= round(self.decay_at * steps), factor / self.decay_factor, factor)
        return factor

    def describe(self) -> str:
        parts = []
        if self.warmup_steps:
            parts.append(f"{self.warmup_shape} warm-up from x{self.warmup_start:g} over {self.warmup_steps} steps")
        if self.decay_at is not None:
            parts.append(f"/{self.decay_factor:g} from {100 * self.decay_at:g} % of the steps")
        return ", ".join(parts) or "constant"
