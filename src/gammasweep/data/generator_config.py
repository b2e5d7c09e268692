"""The diffusion generator's settings (a generated dataset's ``generator:`` block), checked and
torch-free: the plan validates them before any job runs (``gammasweep.data.diffusion`` trains and
samples with them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# where the pixel values 0 and 1 lie in the space the diffusion runs in
DATA_RANGES: dict[str, tuple[float, float]] = {"symmetric": (-1.0, 1.0), "unit": (0.0, 1.0)}


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
        timesteps: number T of diffusion steps (objective 'pred_noise'); must exceed 20 with the
            package's rescaled schedule (``betas`` None).
        cond_drop_prob: probability of replacing the class by the null class during training.
        train_steps: total number of optimizer steps of a run.
        batch_size: minibatch size; an epoch is a permutation of the N images in ceil(N / batch_size)
            batches, the last of the remainder (the authors' shuffled DataLoader).
        learning_rate: Adam learning rate.
        ema_decay: maximal EMA decay per optimizer step (warmed up as (1 + t) / (10 + t)).
        seed: seed of the weight initialisation and of the training random stream.
        betas: None: the package's 'linear' schedule, rescaled by 1000 / T (1e-4 * 1000 / T ..
            0.02 * 1000 / T). (start, end): the authors' unrescaled linear schedule
            beta_t = start + (end - start) t / T at the steps t = 1..T (``gammasweep.data.diffusion``).
        data_range: the interval the pixels 0..1 are mapped to before diffusion: 'symmetric' [-1, 1]
            (the package's) or 'unit' [0, 1] (the authors' diffuse MNIST as it is).
        lr_schedule: 'constant', or 'linear': learning_rate (1 - e / E) in epoch e = 0..E-1, an epoch
            being ceil(N / batch_size) steps for N training images (the authors').
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
    betas: tuple[float, float] | None = None
    data_range: str = "symmetric"
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_mults", tuple(int(m) for m in self.dim_mults))
        if self.betas is not None:
            object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
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
        if self.betas is None and self.timesteps <= 20:
            problems.append(f"timesteps={self.timesteps} must exceed 20 (last beta is 20 / timesteps)")
        if self.betas is not None and (len(self.betas) != 2 or not 0.0 < self.betas[0] <= self.betas[1] < 1.0):
            problems.append(f"betas={self.betas} must be (start, end) with 0 < start <= end < 1")
        if self.timesteps < 1:
            problems.append(f"timesteps={self.timesteps} must be >= 1")
        if self.data_range not in DATA_RANGES:
            problems.append(f"data_range={self.data_range!r} must be one of {sorted(DATA_RANGES)}")
        if self.lr_schedule not in ("constant", "linear"):
            problems.append(f"lr_schedule={self.lr_schedule!r} must be 'constant' or 'linear'")
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
        """Plain-Python dict of the fields (dim_mults and betas as tuples), as stored in checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeneratorConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing ones take their defaults (a
        checkpoint written before an option existed holds the option's default behaviour)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown GeneratorConfig keys: {unknown}")
        return cls(**d)
