"""The diffusion generator's settings (a generated dataset's ``generator:`` block), checked and
torch-free: the plan validates them before any job runs (``gammasweep.data.diffusion`` trains and
samples with them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture and training hyper-parameters of the class-conditional DDPM.

    Attributes:
        image_size: height == width of the images in pixels (8 for sklearn digits, 28 for MNIST).
        channels: number of image channels (1 for digits/MNIST).
        num_classes: number of class labels; labels are 0..num_classes-1.
        dim: U-Net base width (channels of the first level).
        dim_mults: width multipliers per U-Net level; image_size must be divisible by
            2 ** (len(dim_mults) - 1), e.g. (1, 2) for 8x8 and (1, 2, 4) for 28x28.
        timesteps: number T of diffusion steps (linear beta schedule, see module docstring;
            objective 'pred_noise'); must exceed 20.
        cond_drop_prob: probability of replacing the class by the null class during training.
        train_steps: total number of optimizer steps of a run.
        batch_size: minibatch size (images drawn uniformly with replacement).
        learning_rate: Adam learning rate.
        ema_decay: maximal EMA decay per optimizer step (warmed up as (1 + t) / (10 + t)).
        seed: seed of the weight initialisation and of the training random stream.
    """

    image_size: int
    channels: int
    num_classes: int = 10
    dim: int = 16
    dim_mults: tuple[int, ...] = (1, 2)
    timesteps: int = 400
    cond_drop_prob: float = 0.1
    train_steps: int = 300
    batch_size: int = 128
    learning_rate: float = 2e-4
    ema_decay: float = 0.995
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_mults", tuple(int(m) for m in self.dim_mults))
        problems = []
        if self.image_size < 1 or self.image_size % 2 ** (len(self.dim_mults) - 1):
            problems.append(
                f"image_size={self.image_size} must be a positive multiple of "
                f"2 ** (len(dim_mults) - 1) = {2 ** (len(self.dim_mults) - 1)}"
            )
        if not self.dim_mults or min(self.dim_mults) < 1:
            problems.append(f"dim_mults={self.dim_mults} must be non-empty positive integers")
        if self.channels < 1:
            problems.append(f"channels={self.channels} must be >= 1")
        if self.num_classes < 1:
            problems.append(f"num_classes={self.num_classes} must be >= 1")
        if self.dim < 4 or self.dim % 2:
            problems.append(f"dim={self.dim} must be an even integer >= 4")
        if self.timesteps <= 20:
            problems.append(f"timesteps={self.timesteps} must exceed 20 (last beta is 20 / timesteps)")
        if not 0.0 < self.cond_drop_prob < 1.0:
            problems.append(f"cond_drop_prob={self.cond_drop_prob} must lie in (0, 1)")
        if self.train_steps < 1 or self.batch_size < 1:
            problems.append("train_steps and batch_size must be >= 1")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate={self.learning_rate} must be > 0")
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append(f"ema_decay={self.ema_decay} must lie in [0, 1)")
        if problems:
            raise ValueError("invalid GeneratorConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict of the fields (dim_mults as a tuple), as stored in checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeneratorConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown GeneratorConfig keys: {unknown}")
        return cls(**d)
