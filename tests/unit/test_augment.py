"""Strong batched augmentation: shapes, determinism, identity, and each transformation against
torchvision's reference kernels with explicit parameters."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from conftest import make_setup

from gammasweep.data.augment import (
    BRIGHTNESS,
    CONTRAST,
    GRAY_WEIGHTS,
    HUE,
    SATURATION,
    StrongAugment,
    augment,
    color_jitter,
    random_grayscale,
    resized_crop_flip,
    sample_params,
    step_generator,
)
from gammasweep.data.stream import OnlineStream
from gammasweep.sweep.train import Members, train

OFF = StrongAugment(
    scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, grayscale=0.0
)


def random_images(b: int = 16, h: int = 32, w: int = 32, c: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, h, w, c), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def smooth_images(b: int, h: int, w: int) -> tuple[torch.Tensor, float]:
    """Float (B, H, W, 3) images in [0, 1] made of low-frequency waves, and a bound on the change
    of any channel between neighbouring pixels."""
    yy = torch.arange(h, dtype=torch.float64).view(1, h, 1, 1)
    xx = torch.arange(w, dtype=torch.float64).view(1, 1, w, 1)
    k = torch.arange(b, dtype=torch.float64).view(b, 1, 1, 1)
    ch = torch.arange(3, dtype=torch.float64).view(1, 1, 1, 3)
    fy, fx = 2 * math.pi / h, 2 * math.pi / w
    img = 0.5 + 0.25 * torch.sin(fy * yy * (1 + ch) + k) + 0.25 * torch.cos(fx * xx * (1 + (ch + k) % 2) + 0.3 * k)
    slope = 0.25 * max(fy, fx) * 3 * 2  # |d/dy| + |d/dx| bound
    return img.float(), slope


# --- settings and seeding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(scale=(0.0, 1.0)), "scale"),
        (dict(scale=(0.8, 0.5)), "scale"),
        (dict(scale=(0.5, 1.2)), "scale"),
        (dict(scale=0.5), "scale"),
        (dict(ratio=(-1.0, 1.0)), "ratio"),
        (dict(ratio=(2.0, 1.0)), "ratio"),
        (dict(flip=1.5), "flip"),
        (dict(grayscale=-0.1), "grayscale"),
        (dict(brightness=-0.1), "brightness"),
        (dict(contrast=float("nan")), "contrast"),
        (dict(saturation="0.4"), "saturation"),
        (dict(hue=0.6), "hue"),
    ],
)
def test_settings_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StrongAugment(**kwargs)


def test_settings_defaults_and_normalisation():
    s = StrongAugment(scale=[0.5, 1], flip=1)
    assert s.scale == (0.5, 1.0) and isinstance(s.flip, float)
    d = StrongAugment()
    assert d.scale == (0.25, 1.0) and d.ratio == (3 / 4, 4 / 3) and d.flip == 0.5
    assert (d.brightness, d.contrast, d.saturation, d.hue, d.grayscale) == (0.4, 0.4, 0.4, 0.1, 0.2)
    assert d.jitter and not OFF.jitter


def test_step_generator_is_a_function_of_seed_and_step():
    draw = lambda g: torch.rand(8, generator=g)  # noqa: E731
    assert torch.equal(draw(step_generator(3, 17)), draw(step_generator(3, 17)))
    assert not torch.equal(draw(step_generator(3, 17)), draw(step_generator(3, 18)))
    assert not torch.equal(draw(step_generator(3, 17)), draw(step_generator(4, 17)))
    assert not torch.equal(draw(step_generator(0, 1)), draw(step_generator(1, 0)))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="step"):
            step_generator(0, bad)
        with pytest.raises(ValueError, match="data_seed"):
            step_generator(bad, 0)


# --- the full augmentation ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16, 64, 64, 3), (8, 28, 28, 1), (4, 24, 40, 3)])
def test_augment_shape_dtype_range(shape):
    images = random_images(*shape)
    out = augment(images, StrongAugment(), step_generator(0, 5))
    assert out.shape == images.shape and out.dtype == torch.float32 and out.device == images.device
    assert out.is_contiguous()
    assert torch.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert out.std() > 0.05  # not collapsed


def test_augment_is_deterministic_per_seed_and_step():
    images = random_images(16, 32, 32)
    s = StrongAugment()
    a = augment(images, s, step_generator(7, 3))
    assert torch.equal(a, augment(images, s, step_generator(7, 3)))
    assert not torch.allclose(a, augment(images, s, step_generator(7, 4)), atol=1e-3)
    assert not torch.allclose(a, augment(images, s, step_generator(8, 3)), atol=1e-3)
    # The same generator state gives the same batch whatever happened before (resume).
    g = step_generator(7, 3)
    assert torch.equal(a, augment(images, s, g))
    assert not torch.equal(a, augment(images, s, g))  # the generator advanced


def test_copies_of_one_image_all_differ():
    b = 64
    images = random_images(1, 32, 32).expand(b, -1, -1, -1)
    out = augment(images, StrongAugment(), step_generator(1, 0)).reshape(b, -1)
    gap = (out[:, None] - out[None]).abs().amax(dim=2) + torch.eye(b) * 1e9
    assert gap.min() > 1e-2  # every pair differs by more than 2.5 grey levels somewhere


def test_parameter_distributions():
    s = StrongAugment()
    p = sample_params(4096, 64, 48, s, step_generator(0, 0))
    area = p.height * p.width / (64 * 48)
    aspect = p.width / p.height
    assert area.min() >= s.scale[0] - 1e-5 and area.max() <= s.scale[1] + 1e-5
    assert aspect.min() >= s.ratio[0] - 1e-5 and aspect.max() <= s.ratio[1] + 1e-5
    assert p.top.min() >= 0 and (p.top + p.height).max() <= 64 + 1e-4
    assert p.left.min() >= 0 and (p.left + p.width).max() <= 48 + 1e-4
    assert abs(p.flip.float().mean() - 0.5) < 0.05 and abs(p.grayscale.float().mean() - 0.2) < 0.03
    assert p.brightness.min() >= 0.6 and p.brightness.max() <= 1.4 and p.hue.abs().max() <= 0.1
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(4096, 4))
    assert len(set(map(tuple, p.order.tolist()))) == 24  # every order occurs


def test_all_randomness_off_is_identity():
    images = random_images(16, 32, 32)
    out = augment(images, OFF, step_generator(0, 0))
    torch.testing.assert_close(out, images.float() / 255, atol=1e-5, rtol=0)
    gray = random_images(4, 16, 16, 1)
    torch.testing.assert_close(augment(gray, OFF, step_generator(0, 0)), gray.float() / 255, atol=1e-5, rtol=0)


# --- crop and flip, against torchvision --------------------------------------------------------------


CROPS = [(0, 0, 64, 64), (5, 9, 40, 30), (20, 3, 44, 61), (0, 32, 32, 32), (11, 0, 22, 64), (30, 30, 34, 34)]


def test_crop_matches_torchvision_resized_crop():
    """Interior pixels match to 1e-4. The outer ring of output pixels may differ by at most half a
    pixel step of the image: there torchvision's interpolate clamps the source coordinate to the crop,
    grid_sample reads the neighbouring pixel of the full image (exact at image borders)."""
    b, h, w = len(CROPS), 64, 64
    images, slope = smooth_images(b, h, w)
    top, left, height, width = (torch.tensor(col, dtype=torch.float32) for col in zip(*CROPS))
    out = resized_crop_flip(images, top, left, height, width, torch.zeros(b, dtype=torch.bool))
    ref = torch.stack(
        [
            TF.resized_crop(
                images[i].permute(2, 0, 1),
                *CROPS[i],
                size=[h, w],
                antialias=False,
                interpolation=TF.InterpolationMode.BILINEAR,
            ).permute(1, 2, 0)
            for i in range(b)
        ]
    )
    assert out.shape == ref.shape
    torch.testing.assert_close(out[:, 1:-1, 1:-1], ref[:, 1:-1, 1:-1], atol=1e-4, rtol=0)
    assert (out - ref).abs().max() <= 0.5 * slope
    torch.testing.assert_close(out[0], ref[0], atol=1e-5, rtol=0)  # full image: exact everywhere


def test_crop_to_other_size_matches_torchvision():
    images, _ = smooth_images(2, 32, 32)
    crop = (0, 0, 32, 32)
    out = resized_crop_flip(
        images, *(torch.full((2,), float(v)) for v in crop), torch.zeros(2, dtype=torch.bool), size=(48, 40)
    )
    ref = TF.resized_crop(images.permute(0, 3, 1, 2), *crop, size=[48, 40], antialias=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_forced_flip_is_torch_flip_along_width():
    b = len(CROPS)
    images, _ = smooth_images(b, 64, 64)
    params = [torch.tensor(col, dtype=torch.float32) for col in zip(*CROPS)]
    plain = resized_crop_flip(images, *params, torch.zeros(b, dtype=torch.bool))
    flipped = resized_crop_flip(images, *params, torch.ones(b, dtype=torch.bool))
    torch.testing.assert_close(flipped, torch.flip(plain, dims=[2]), atol=1e-5, rtol=0)
    mixed = resized_crop_flip(images, *params, torch.arange(b) % 2 == 1)
    torch.testing.assert_close(mixed[1::2], flipped[1::2], atol=0, rtol=0)
    torch.testing.assert_close(mixed[0::2], plain[0::2], atol=0, rtol=0)


# --- colour jitter -----------------------------------------------------------------------------------


def float_images(b: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 16, 16, 3, generator=torch.Generator().manual_seed(seed))


def ones(b: int) -> torch.Tensor:
    return torch.ones(b)


def test_brightness_scales_and_clamps():
    x = float_images(4)
    f = torch.tensor([0.0, 0.5, 1.0, 1.7])
    out = color_jitter(x, f, ones(4), ones(4), None)
    torch.testing.assert_close(out, (x * f.view(-1, 1, 1, 1)).clamp(0, 1), atol=1e-6, rtol=0)
    assert out[3].max() == 1.0 and torch.equal(out[2], x[2])


def test_saturation_zero_is_grayscale():
    x = float_images(3)
    out = color_jitter(x, ones(3), ones(3), torch.zeros(3), None)
    gray = x @ torch.tensor(GRAY_WEIGHTS)
    for c in range(3):
        torch.testing.assert_close(out[..., c], gray, atol=1e-6, rtol=0)


def test_contrast_zero_is_constant_mean_gray():
    x = float_images(3)
    out = color_jitter(x, ones(3), torch.zeros(3), ones(3), None)
    mean_gray = (x @ torch.tensor(GRAY_WEIGHTS)).mean(dim=(1, 2))
    torch.testing.assert_close(out, mean_gray.view(-1, 1, 1, 1).expand_as(out), atol=1e-6, rtol=0)


def test_jitter_matches_torchvision_in_per_sample_order():
    """Random factors and a random order per sample == torchvision's adjust_* applied in that order."""
    b = 24
    g = torch.Generator().manual_seed(0)
    x = float_images(b, seed=1)
    x[:2] = x[:2, :, :, :1]  # gray pixels (zero chroma) for the hue
    bright, contrast, sat = (0.3 + 1.4 * torch.rand(b, generator=g) for _ in range(3))
    hue = torch.rand(b, generator=g) - 0.5
    order = torch.argsort(torch.rand(b, 4, generator=g), dim=1)
    assert set((order == HUE).int().argmax(dim=1).tolist()) == {0, 1, 2, 3}  # hue at every position
    out = color_jitter(x, bright, contrast, sat, hue, order)
    fns = {
        BRIGHTNESS: (TF.adjust_brightness, bright),
        CONTRAST: (TF.adjust_contrast, contrast),
        SATURATION: (TF.adjust_saturation, sat),
        HUE: (TF.adjust_hue, hue),
    }
    for i in range(b):
        ref = x[i].permute(2, 0, 1)
        for op in order[i].tolist():
            fn, factor = fns[op]
            ref = fn(ref, float(factor[i]))
        torch.testing.assert_close(out[i], ref.permute(1, 2, 0), atol=2e-5, rtol=0)


def test_grayscale_and_single_channel():
    x = float_images(4)
    out = random_grayscale(x, torch.tensor([True, False, True, False]))
    assert torch.equal(out[1], x[1]) and torch.equal(out[3], x[3])
    assert torch.equal(out[0, ..., 0], out[0, ..., 1]) and torch.equal(out[0, ..., 0], out[0, ..., 2])
    torch.testing.assert_close(
        out[0], TF.rgb_to_grayscale(x[0].permute(2, 0, 1), 3).permute(1, 2, 0), atol=1e-6, rtol=0
    )
    # One channel: saturation, hue and grayscale are no-ops, brightness and contrast act.
    y = x[..., :1]
    assert torch.equal(color_jitter(y, ones(4), ones(4), torch.zeros(4), torch.full((4,), 0.3)), y)
    assert torch.equal(random_grayscale(y, torch.ones(4, dtype=torch.bool)), y)
    flat = color_jitter(y, ones(4), torch.zeros(4), ones(4), None)
    torch.testing.assert_close(flat, y.mean(dim=(1, 2, 3), keepdim=True).expand_as(y), atol=1e-6, rtol=0)


# --- GPU (extra) -------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_augment_on_cuda():
    images = random_images(32, 64, 64).cuda()
    s = StrongAugment()
    out = augment(images, s, step_generator(2, 9, "cuda"))
    assert out.device.type == "cuda" and out.shape == images.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, augment(images, s, step_generator(2, 9, "cuda")))
    # Parameters drawn on the CPU give the CPU's batch (device-independent stream).
    on_cpu = augment(images.cpu(), s, step_generator(2, 9, "cpu"))
    torch.testing.assert_close(augment(images, s, step_generator(2, 9, "cpu")).cpu(), on_cpu, atol=1e-4, rtol=0)


def test_the_trainer_augments_every_step_afresh_and_reproducibly(digits_files, test_set):
    """`Setup.augment` (a dataset's `augment:`): with every randomness off it is the plain run;
    switched on, each step's batch is augmented with that step's own generator, so two runs agree
    to the bit and differ from the plain one."""
    quiet = {"log": lambda message: None}
    stream = OnlineStream(digits_files[0], 16, 20, data_seed=1)
    members, setup = Members([0], [1.0], [0.5]), make_setup(steps=20)
    plain = train(setup, members, stream, *test_set, **quiet)
    off = {
        f: getattr(OFF, f)
        for f in ("scale", "ratio", "flip", "brightness", "contrast", "saturation", "hue", "grayscale")
    }
    identity = train(dataclasses.replace(setup, augment=off), members, stream, *test_set, **quiet)
    np.testing.assert_allclose(identity.test_loss, plain.test_loss, rtol=1e-4)
    strong = [
        train(dataclasses.replace(setup, augment={"scale": [0.5, 1.0]}), members, stream, *test_set, **quiet)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(strong[0].test_loss, strong[1].test_loss)
    assert not np.allclose(strong[0].test_loss[:, -1], plain.test_loss[:, -1], rtol=1e-3)
