"""Strong, batched, seeded data augmentation for the online stream (TinyImageNet).

A pool smaller than the number of samples a run consumes is stretched by augmenting every batch,
so that the online stream practically never shows an identical image twice (crop boxes,
flips and colour factors are continuous, drawn afresh for every sample and step). Everything runs batched on the
images' device -- one ``affine_grid`` + ``grid_sample`` for all crops and flips, plain tensor
arithmetic for the colour jitter, no Python loop over samples -- and every random number comes
from one ``torch.rand`` call on a caller-given generator, so a batch is a pure function of
(images, settings, generator state). :func:`step_generator` gives each (data seed, step) its own
generator, so a resumed run re-creates the augmentations of every step exactly.

The transformations follow torchvision's ``RandomResizedCrop``, ``RandomHorizontalFlip``,
``ColorJitter`` and ``RandomGrayscale`` (same parameter distributions, same formulas, colour ops in a
random order per sample as ColorJitter does per image), with two documented differences: crop boxes
are not rounded to whole pixels (``grid_sample`` resamples a continuous box, which only adds
variety), and near a crop's edge the bilinear resampling reads the pixels just outside the box
instead of clamping to the box (the crop is a region of a continuous image, not a separate
picture); both are within interpolation error.

Layout: inputs are uint8 (B, H, W, C) as stored in the pools; outputs are float32 (B, H, W, C)
in [0, 1]; the caller normalises afterwards. C is 1 or 3 (saturation, hue and grayscale leave a
1-channel image unchanged, as in torchvision).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

# ITU-R 601-2 luma, the weights of torchvision's rgb_to_grayscale.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)

# Number of uniforms drawn per sample, fixed whatever the settings so the generator always
# advances by the same amount: 10 crop tries x (scale, log ratio), top, left, flip, 4 jitter
# factors, 4 order keys, grayscale.
_TRIES = 10
_DRAWS = 2 * _TRIES + 2 + 1 + 4 + 4 + 1

# Jitter operations, in the order of ``color_jitter``'s identity order.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3

# Domain tag mixed into augmentation seeds, so they never coincide with other uses of a data seed.
_SEED_TAG = 0x41554731  # "AUG1"


@dataclass(frozen=True)
class StrongAugment:
    """Settings of the strong augmentation (defaults: the usual ImageNet-style recipe).

    - ``scale``, ``ratio``: random resized crop -- area fraction and aspect ratio (w / h) ranges of
      the box, drawn as in torchvision (uniform area, log-uniform ratio, 10 tries, then a centre
      crop), resampled back to the input size. ``scale=(1, 1), ratio=(1, 1)`` is the identity on
      square images.
    - ``flip``: probability of a horizontal flip.
    - ``brightness``, ``contrast``, ``saturation``: factor drawn uniformly from
      [max(0, 1 - x), 1 + x]; ``hue``: shift drawn uniformly from [-x, x] (x <= 0.5), as in
      ``ColorJitter``; the four are applied in a random order per sample. 0 switches one off.
    - ``grayscale``: probability of turning the (jittered) image gray, after the jitter.
    """

    scale: tuple[float, float] = (0.25, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale: float = 0.2

    def __post_init__(self) -> None:
        for name in ("scale", "ratio"):
            value = getattr(self, name)
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ValueError(f"StrongAugment.{name} must be a pair (min, max) of numbers, got {value!r}") from None
            object.__setattr__(self, name, (lo, hi))
        for f in fields(self):
            value = getattr(self, f.name)
            for v in value if isinstance(value, tuple) else (value,):
                if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                    raise ValueError(f"StrongAugment.{f.name} must be finite numbers, got {value!r}")
            if not isinstance(value, tuple):
                object.__setattr__(self, f.name, float(value))
        lo, hi = self.scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(
                f"StrongAugment.scale must satisfy 0 < min <= max <= 1 (area fraction of the crop), got {self.scale}"
            )
        lo, hi = self.ratio
        if not 0.0 < lo <= hi:
            raise ValueError(
                f"StrongAugment.ratio must satisfy 0 < min <= max (aspect ratio w / h of the crop), got {self.ratio}"
            )
        for name in ("flip", "grayscale"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"StrongAugment.{name} is a probability and must lie in [0, 1], got {getattr(self, name)}"
                )
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0.0:
                raise ValueError(
                    f"StrongAugment.{name} must be >= 0 (factor drawn from [max(0, 1 - x), 1 + x]), "
                    f"got {getattr(self, name)}"
                )
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"StrongAugment.hue must lie in [0, 0.5] (a shift of the hue circle), got {self.hue}")

    @property
    def jitter(self) -> bool:
        """Whether any colour jitter is switched on."""
        return any(x > 0 for x in (self.brightness, self.contrast, self.saturation, self.hue))


@dataclass
class AugmentParams:
    """Per-sample parameters of one augmented batch, all tensors of length B on one device.

    Crop boxes are in input pixels (rows ``top .. top + height``, columns ``left .. left + width``,
    floats); jitter factors follow torchvision (1 and 0 for hue are the identity); ``order`` (B, 4)
    is a permutation of (BRIGHTNESS, CONTRAST, SATURATION, HUE) per sample.
    """

    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    flip: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    order: torch.Tensor
    grayscale: torch.Tensor


def step_generator(data_seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator on ``device`` whose state depends only on (data_seed, step).

    The seed is a hash (numpy's SeedSequence) of (tag, data_seed, step), so nearby seeds and steps
    give unrelated streams and a run resumed at step t draws exactly what an uninterrupted run drew.
    Note that CPU and CUDA generators turn one seed into different numbers: the stream is
    reproducible per device type (draw on a CPU generator for a device-independent stream;
    ``augment`` accepts a generator on another device than the images).
    """
    for name, value in (("data_seed", data_seed), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"step_generator: {name} must be an integer >= 0, got {value!r}")
    seed = int(np.random.SeedSequence([_SEED_TAG, int(data_seed), int(step)]).generate_state(1, np.uint64)[0])
    return torch.Generator(device=torch.device(device)).manual_seed(seed & (2**63 - 1))


def sample_params(
    batch: int,
    height: int,
    width: int,
    settings: StrongAugment,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> AugmentParams:
    """Draw the parameters of ``batch`` samples of (height, width) images from ``generator``.

    One ``torch.rand((batch, 32))`` call on the generator's device, whatever the settings; the
    results are moved to ``device`` (default: the generator's).
    """
    gen_device = generator.device
    u = torch.rand((batch, _DRAWS), generator=generator, device=gen_device, dtype=torch.float64)
    u = u.to(gen_device if device is None else torch.device(device))
    s = settings
    area = float(height * width)

    # Random resized crop, torchvision's algorithm vectorised over the 10 tries.
    scale = s.scale[0] + (s.scale[1] - s.scale[0]) * u[:, :_TRIES]
    log_lo, log_hi = math.log(s.ratio[0]), math.log(s.ratio[1])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, _TRIES : 2 * _TRIES])
    w = torch.sqrt(area * scale * ratio)
    h = torch.sqrt(area * scale / ratio)
    tol = 1 + 1e-9
    valid = (w <= width * tol) & (h <= height * tol)
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # first valid try (0 if none)
    found = valid.any(dim=1)
    # Fallback as in torchvision: the largest centred box with an aspect ratio within range.
    in_ratio = width / height
    if in_ratio < s.ratio[0]:
        fw, fh = float(width), width / s.ratio[0]
    elif in_ratio > s.ratio[1]:
        fw, fh = height * s.ratio[1], float(height)
    else:
        fw, fh = float(width), float(height)
    w = torch.where(found, w.gather(1, first).squeeze(1), fw).clamp(max=width)
    h = torch.where(found, h.gather(1, first).squeeze(1), fh).clamp(max=height)
    k = 2 * _TRIES
    top = torch.where(found, u[:, k] * (height - h), (height - h) / 2)
    left = torch.where(found, u[:, k + 1] * (width - w), (width - w) / 2)

    flip = u[:, k + 2] < s.flip

    def factor(x: float, v: torch.Tensor) -> torch.Tensor:
        lo = max(0.0, 1.0 - x)
        return lo + (1.0 + x - lo) * v

    f32 = torch.float32
    return AugmentParams(
        top=top.to(f32),
        left=left.to(f32),
        height=h.to(f32),
        width=w.to(f32),
        flip=flip,
        brightness=factor(s.brightness, u[:, k + 3]).to(f32),
        contrast=factor(s.contrast, u[:, k + 4]).to(f32),
        saturation=factor(s.saturation, u[:, k + 5]).to(f32),
        hue=(s.hue * (2 * u[:, k + 6] - 1)).to(f32),
        order=torch.argsort(u[:, k + 7 : k + 11], dim=1),
        grayscale=u[:, k + 11] < s.grayscale,
    )


def augment(images: torch.Tensor, settings: StrongAugment, generator: torch.Generator) -> torch.Tensor:
    """Strongly augment a batch: uint8 (B, H, W, C) -> float32 (B, H, W, C) in [0, 1].

    Crop + flip (one grid_sample), colour jitter in a random order per sample, random grayscale.
    Per-sample parameters come from ``generator`` (normally on the images' device; one on another
    device works too, its draws are moved over). Deterministic given the generator's state.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"augment expects uint8 images (B, H, W, C) with C in (1, 3), got {images.dtype} {tuple(images.shape)}"
        )
    b, h, w, _ = images.shape
    p = sample_params(b, h, w, settings, generator, device=images.device)
    x = images.permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()  # (B, C, H, W)
    x = _crop_flip(x, p.top, p.left, p.height, p.width, p.flip, (h, w))
    if settings.jitter:
        x = _color_jitter(x, p.brightness, p.contrast, p.saturation, p.hue if settings.hue > 0 else None, p.order)
    if settings.grayscale > 0:
        x = _random_grayscale(x, p.grayscale)
    return x.clamp_(0.0, 1.0).permute(0, 2, 3, 1).contiguous()


# --- the transformations with explicit parameters, on float (B, H, W, C) images -----------------


def resized_crop_flip(
    images: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    height: torch.Tensor,
    width: torch.Tensor,
    flip: torch.Tensor,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Crop each image to its box and resize it to ``size`` (default: the input size), flipping it
    horizontally where ``flip`` is true; float (B, H, W, C) -> float (B, h, w, C).

    Box of sample i: rows ``top[i] .. top[i] + height[i]``, columns ``left[i] .. left[i] + width[i]``
    in input pixels (torchvision's ``resized_crop`` convention; fractional boxes allowed). One
    affine grid + bilinear ``grid_sample`` (align_corners=False, border padding) for the batch.
    """
    x = images.permute(0, 3, 1, 2)
    size = tuple(images.shape[1:3]) if size is None else size
    return _crop_flip(x, top, left, height, width, flip, size).permute(0, 2, 3, 1)


def color_jitter(
    images: torch.Tensor,
    brightness: torch.Tensor,
    contrast: torch.Tensor,
    saturation: torch.Tensor,
    hue: torch.Tensor | None,
    order: torch.Tensor | None = None,
) -> torch.Tensor:
    """torchvision's adjust_brightness / contrast / saturation / hue with per-sample factors, on float
    (B, H, W, C) images in [0, 1], applied per sample in ``order`` ((B, 4) permutations of
    BRIGHTNESS, CONTRAST, SATURATION, HUE; default that order); ``hue=None`` skips hue.

    brightness b: clamp(b x); contrast c: clamp(c x + (1 - c) mean gray of the image);
    saturation s: clamp(s x + (1 - s) gray); hue h: shift of the HSV hue by h (in turns).
    """
    b = images.shape[0]
    if order is None:
        order = torch.arange(4, device=images.device).expand(b, 4)
    x = images.permute(0, 3, 1, 2)
    return _color_jitter(x, brightness, contrast, saturation, hue, order).permute(0, 2, 3, 1)


def random_grayscale(images: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Replace the images where ``which`` (B,) is true by their luma, repeated over the channels."""
    return _random_grayscale(images.permute(0, 3, 1, 2), which).permute(0, 2, 3, 1)


# --- kernels on (B, C, H, W) --------------------------------------------------------------------


def _crop_flip(
    x: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    height: torch.Tensor,
    width: torch.Tensor,
    flip: torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor:
    b, c, hin, win = x.shape
    dt = x.dtype
    top, left, height, width = (t.to(device=x.device, dtype=dt) for t in (top, left, height, width))
    # Output coordinate u in [-1, 1] (pixel edges, align_corners=False) maps to input edge coordinate
    # left + (u + 1) width / 2, i.e. input normalised coordinate (width / W) u + (2 left + width) / W - 1.
    sign = 1.0 - 2.0 * flip.to(device=x.device, dtype=dt)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=dt)
    theta[:, 0, 0] = sign * width / win
    theta[:, 0, 2] = (2 * left + width) / win - 1
    theta[:, 1, 1] = height / hin
    theta[:, 1, 2] = (2 * top + height) / hin - 1
    grid = F.affine_grid(theta, [b, c, *size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma (B, 1, H, W) of (B, C, H, W) images (the image itself when C = 1)."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + b * GRAY_WEIGHTS[2]).unsqueeze(1)


def _color_jitter(
    x: torch.Tensor,
    brightness: torch.Tensor,
    contrast: torch.Tensor,
    saturation: torch.Tensor,
    hue: torch.Tensor | None,
    order: torch.Tensor,
) -> torch.Tensor:
    """Per-sample order without a pass per (sample, op): brightness, contrast and saturation are all
    blends clamp(f x + (1 - f) target) (target 0, the mean gray, the gray image), so one blend pass
    serves every sample, each with its own op. Each sample's three blends are split around its hue:
    three blend passes for the ops before the hue (inactive, f = 1, where the sample's hue comes
    earlier), one hue pass for all, three blend passes for the ops after it. Hue, the costly op,
    runs once; nothing depends on data-dependent sizes, so there is no host-device sync."""
    b, c = x.shape[:2]
    rgb = c == 3
    dev, dt = x.device, x.dtype
    order = order.to(dev)
    if not rgb:
        saturation = torch.ones_like(saturation)  # saturation and hue leave one channel alone
    factors = torch.stack([brightness, contrast, saturation], dim=1).to(device=dev, dtype=dt)  # by op
    is_hue = order == HUE
    # The three blend ops of each sample in its order (a stable sort moves HUE to the end).
    blends = order.gather(1, torch.sort(is_hue.to(torch.uint8), dim=1, stable=True).indices[:, :3])
    f_all = factors.gather(1, blends)  # (B, 3) factor of each sample's j-th blend
    use_hue = hue is not None and rgb
    hue_at = is_hue.to(torch.uint8).argmax(dim=1) if use_hue else torch.full((b,), 3, device=dev)
    zero = torch.zeros((), device=dev, dtype=dt)

    def blend(x: torch.Tensor, j: int, active: torch.Tensor) -> torch.Tensor:
        op = blends[:, j]
        f = torch.where(active, f_all[:, j], 1.0).view(-1, 1, 1, 1)
        gray = _gray(x)
        target = torch.where(
            (op == SATURATION).view(-1, 1, 1, 1),
            gray,
            torch.where((op == CONTRAST).view(-1, 1, 1, 1), gray.mean(dim=(1, 2, 3), keepdim=True), zero),
        )
        return (x * f).add_(target * (1.0 - f)).clamp_(0.0, 1.0)

    for j in range(3):
        x = blend(x, j, hue_at > j)
    if use_hue:
        x = _hue_shift(x, hue.to(device=dev, dtype=dt))
        for j in range(3):
            x = blend(x, j, hue_at <= j)
    return x


def _hue_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of RGB images (B, 3, H, W) in [0, 1] by ``shift`` (B,) turns.

    Same result as torchvision's adjust_hue (to float rounding) in fewer passes: with V = max,
    C = max - min and the hue H6 in [0, 6) (torchvision's _rgb_to_hsv times 6), channel n of the
    output is V - C clamp(min(k, 4 - k), 0, 1), k = (n + H6 + 6 shift) mod 6, n = 5, 3, 1 for R, G, B.
    """
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    # H6 = (g - b) / C where max = r, 2 + (b - r) / C where max = g (!= r), 4 + (r - g) / C otherwise.
    num = torch.where(
        maxc == r, g - b, torch.where(maxc == g, (b - r).add_(chroma, alpha=2.0), (r - g).add_(chroma, alpha=4.0))
    )
    h6 = num.div_(torch.where(chroma == 0, 1.0, chroma)).add_((6.0 * shift).view(-1, 1, 1))  # in (-3, 9]
    h6 = torch.remainder(h6, 6.0)
    k = h6.unsqueeze(1) + torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)  # [1, 11)
    k = torch.where(k >= 6.0, k - 6.0, k)
    t = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return maxc.unsqueeze(1) - chroma.unsqueeze(1) * t


def _random_grayscale(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return torch.where(which.to(x.device).view(-1, 1, 1, 1), _gray(x).expand_as(x), x)
