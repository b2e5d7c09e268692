"""Class-conditional DDPM with classifier-free guidance, for generating labelled image data sets.

The network and the noise schedule come from ``denoising_diffusion_pytorch.classifier_free_guidance``
(``Unet`` and ``GaussianDiffusion``).  The training loop, the EMA, checkpointing and the sampling
loops are written here because the package's ``Trainer`` cannot take labels and its samplers draw
from the global RNG (no per-call seed) and, by default, modify the guidance update (projection
onto the conditional output).  This module uses plain classifier-free guidance::

    eps = eps_cond + w * (eps_cond - eps_uncond) = (1 + w) * eps_cond - w * eps_uncond,

with ``cond_scale = 1 + w`` and no rescaling (``rescaled_phi = 0``).

Noise schedule: the package's ``'linear'`` schedule, i.e. betas linear from ``1e-4 * 1000 / T`` to
``0.02 * 1000 / T``.  This is DDPM's 1e-4..0.02 schedule for T = 1000, rescaled so that the data is
fully noised at step T for any T (which the unscaled schedule is not for T < 1000).  The last beta
is ``20 / T``, so T must exceed 20.

Every random draw of training (minibatch indices, diffusion times, noise, condition dropout) and of
sampling comes from a ``torch.Generator`` owned by this module, so runs are reproducible on CPU and a
resumed training run equals an uninterrupted one bit for bit.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gammasweep.data.generator_config import GeneratorConfig
from gammasweep.results.io import atomic_path

__all__ = [
    "GeneratorConfig",
    "load_generator_config",
    "sample_labelled",
    "train_generator",
]

_FORMAT = "gammasweep.data.diffusion/1"
_EMA_WARMUP = 10.0  # EMA decay at optimizer step t is min(ema_decay, (1 + t) / (_EMA_WARMUP + t))


# --------------------------------------------------------------------------------------------
# model construction


def _build(config: GeneratorConfig) -> nn.Module:
    """The package's GaussianDiffusion wrapping its class-conditional Unet.

    Weights are initialised from ``config.seed`` without touching the caller's global RNG.
    """
    # imported here: the package import is slow (it pulls in the whole trainer stack)
    from denoising_diffusion_pytorch.classifier_free_guidance import GaussianDiffusion, Unet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        unet = Unet(
            dim=config.dim,
            num_classes=config.num_classes,
            cond_drop_prob=config.cond_drop_prob,
            dim_mults=config.dim_mults,
            channels=config.channels,
        )
    return GaussianDiffusion(
        unet,
        image_size=config.image_size,
        timesteps=config.timesteps,
        objective="pred_noise",
        beta_schedule="linear",
    )


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


def _ema_decay_at(step: int, max_decay: float) -> float:
    """EMA decay used after optimizer step number ``step`` (1-based)."""
    return min(max_decay, (1.0 + step) / (_EMA_WARMUP + step))


def _data_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(repr((images.shape, labels.shape)).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()


def _load(checkpoint: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    ckpt = torch.load(Path(checkpoint), map_location=device, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
        raise ValueError(f"{checkpoint} is not a gammasweep diffusion checkpoint ({_FORMAT})")
    return ckpt


def load_generator_config(checkpoint: Path) -> GeneratorConfig:
    """The :class:`GeneratorConfig` stored in a checkpoint written by :func:`train_generator`."""
    return GeneratorConfig.from_dict(_load(checkpoint)["config"])


def _config_mismatch(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    keys = sorted(set(stored) | set(wanted))
    return [k for k in keys if stored.get(k, "<missing>") != wanted.get(k, "<missing>")]


# --------------------------------------------------------------------------------------------
# training


def train_generator(
    images: np.ndarray,
    labels: np.ndarray,
    config: GeneratorConfig,
    checkpoint: Path,
    *,
    device: str = "cpu",
    checkpoint_every: int = 100,
    log: Callable[[str], None] = print,
) -> None:
    """Train the class-conditional DDPM for ``config.train_steps`` Adam steps; write ``checkpoint``.

    Args:
        images: uint8 array (N, H, W, C), pixel values 0..255, H == W == config.image_size,
            C == config.channels.
        labels: integer array (N,), values in 0..config.num_classes-1.
        config: architecture and training hyper-parameters.
        checkpoint: output file (torch.save dict with model, EMA and optimizer state, step, config
            as a dict, RNG state and the per-step loss history), written atomically every
            ``checkpoint_every`` steps and at the end.
        device: torch device for training.
        checkpoint_every: steps between checkpoints (>= 1).
        log: receives progress lines (step, mean loss since the last line, steps/s), ~15 per run.

    If ``checkpoint`` exists: a finished run with the same config and data returns at once, an
    unfinished one is resumed (the result equals an uninterrupted run bit for bit on CPU); a
    different config or different data raises ValueError.
    """
    checkpoint = Path(checkpoint)
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={checkpoint_every} must be >= 1")
    images = np.asarray(images)
    labels = np.asarray(labels)
    want = (config.image_size, config.image_size, config.channels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != want:
        raise ValueError(
            f"images must be uint8 of shape (N, {want[0]}, {want[1]}, {want[2]}); got {images.dtype} {images.shape}"
        )
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape ({images.shape[0]},); got {labels.dtype} {labels.shape}")
    if images.shape[0] == 0:
        raise ValueError("no training images")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= config.num_classes:
        raise ValueError(f"labels must lie in 0..{config.num_classes - 1}; got {labels.min()}..{labels.max()}")
    fingerprint = _data_fingerprint(images, labels)

    state = None
    if checkpoint.exists():
        state = _load(checkpoint, device)
        differing = _config_mismatch(state["config"], config.to_dict())
        if differing:
            details = ", ".join(
                f"{k}: {state['config'].get(k)!r} in checkpoint vs {getattr(config, k, None)!r}" for k in differing
            )
            raise ValueError(
                f"{checkpoint} was trained with a different config (differing keys: {details}); "
                "delete it or use another path"
            )
        if state["data_sha256"] != fingerprint:
            raise ValueError(f"{checkpoint} was trained on different images/labels; delete it or use another path")
        if state["step"] >= config.train_steps:
            log(f"{checkpoint}: finished run ({state['step']} steps) found, nothing to do")
            return
        log(f"{checkpoint}: resuming from step {state['step']}/{config.train_steps}")

    diffusion = _build(config).to(device)
    unet = diffusion.model
    ema = copy.deepcopy(unet).requires_grad_(False)
    optimizer = torch.optim.Adam(unet.parameters(), lr=config.learning_rate)
    gen = torch.Generator(device=device)
    gen.manual_seed(config.seed)
    losses: list[float] = []
    step = 0
    if state is not None:
        unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["rng_state"].cpu())
        losses = list(state["losses"])
        step = int(state["step"])
        del state
    else:
        n_params = sum(p.numel() for p in unet.parameters())
        log(
            f"training class-conditional DDPM ({n_params} parameters) for {config.train_steps} steps "
            f"on {images.shape[0]} images, device {device}"
        )

    x_all = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)  # (N, C, H, W) uint8
    y_all = torch.from_numpy(labels).to(device)
    n = x_all.shape[0]
    bsz = config.batch_size

    def save() -> None:
        obj = {
            "format": _FORMAT,
            "config": config.to_dict(),
            "step": step,
            "finished": step >= config.train_steps,
            "model": unet.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng_state": gen.get_state(),
            "losses": list(losses),
            "data_sha256": fingerprint,
        }
        with atomic_path(checkpoint) as tmp:
            torch.save(obj, tmp)

    log_every = max(1, math.ceil(config.train_steps / 15))
    unet.train()
    t0, last_step, last_loss_idx = time.perf_counter(), step, len(losses)
    while step < config.train_steps:
        idx = torch.randint(0, n, (bsz,), generator=gen, device=device)
        times = torch.randint(0, config.timesteps, (bsz,), generator=gen, device=device)
        x = x_all[idx].float() / 255.0
        noise = torch.randn(x.shape, generator=gen, device=device)
        keep = torch.rand((bsz,), generator=gen, device=device) >= config.cond_drop_prob
        loss = diffusion(x, classes=y_all[idx], times=times, noise=noise, cond_keep_mask=keep)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        _ema_update(ema, unet, _ema_decay_at(step, config.ema_decay))
        losses.append(float(loss.detach()))

        if step % checkpoint_every == 0 or step == config.train_steps:
            save()
        if step % log_every == 0 or step == config.train_steps:
            now = time.perf_counter()
            rate = (step - last_step) / max(now - t0, 1e-9)
            mean_loss = float(np.mean(losses[last_loss_idx:]))
            log(f"step {step}/{config.train_steps}  loss {mean_loss:.4f}  {rate:.2f} steps/s")
            t0, last_step, last_loss_idx = now, step, len(losses)
    log(f"wrote {checkpoint}")


# --------------------------------------------------------------------------------------------
# sampling


def _guided_eps(
    unet: nn.Module, x: torch.Tensor, t: torch.Tensor, classes: torch.Tensor, guidance_weight: float
) -> torch.Tensor:
    """Classifier-free-guided noise prediction (1 + w) eps(x, t, c) - w eps(x, t, null); (B, C, H, W)."""
    b = x.shape[0]
    if guidance_weight == 0.0:
        keep = torch.ones(b, dtype=torch.bool, device=x.device)
        return unet(x, t, classes, cond_keep_mask=keep)
    keep = torch.cat(
        [torch.ones(b, dtype=torch.bool, device=x.device), torch.zeros(b, dtype=torch.bool, device=x.device)]
    )
    out = unet(torch.cat([x, x]), torch.cat([t, t]), torch.cat([classes, classes]), cond_keep_mask=keep)
    eps_cond, eps_uncond = out[:b], out[b:]
    return eps_cond + guidance_weight * (eps_cond - eps_uncond)


def _sample_batch(
    diffusion: nn.Module,
    unet: nn.Module,
    classes: torch.Tensor,
    guidance_weight: float,
    ddim_times: list[int] | None,
    gen: torch.Generator,
    clip_denoised: bool = True,
) -> torch.Tensor:
    """One batch of images in [-1, 1], shape (B, C, H, W).

    ``ddim_times`` None: ancestral DDPM sampling over all T steps. Otherwise deterministic DDIM
    (eta = 0) over the given increasing time indices (the last update goes to the clean image).
    The predicted clean image is clipped to [-1, 1] at every step, as in the package, unless
    ``clip_denoised`` is False (the authors' sampler never clips).
    """
    b, dev = classes.shape[0], classes.device

    def clean(x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The predicted clean image, clipped to [-1, 1] if ``clip_denoised``."""
        x0 = diffusion.predict_start_from_noise(x, t, eps)
        return x0.clamp(-1.0, 1.0) if clip_denoised else x0

    shape = (b, diffusion.channels, diffusion.image_size, diffusion.image_size)
    x = torch.randn(shape, generator=gen, device=dev)
    if ddim_times is None:
        for i in reversed(range(diffusion.num_timesteps)):
            t = torch.full((b,), i, dtype=torch.long, device=dev)
            eps = _guided_eps(unet, x, t, classes, guidance_weight)
            x0 = clean(x, t, eps)
            mean, _, log_var = diffusion.q_posterior(x_start=x0, x_t=x, t=t)
            if i > 0:
                x = mean + (0.5 * log_var).exp() * torch.randn(shape, generator=gen, device=dev)
            else:
                x = mean
        return x
    alphas_cumprod = diffusion.alphas_cumprod
    seq = list(reversed(ddim_times))
    for i, t_now in enumerate(seq):
        t = torch.full((b,), t_now, dtype=torch.long, device=dev)
        eps = _guided_eps(unet, x, t, classes, guidance_weight)
        x0 = clean(x, t, eps)
        if i == len(seq) - 1:
            x = x0
            break
        eps = diffusion.predict_noise_from_start(x, t, x0)  # consistent with the clipped x0
        a_next = alphas_cumprod[seq[i + 1]]
        x = a_next.sqrt() * x0 + (1.0 - a_next).sqrt() * eps
    return x


def sample_labelled(
    checkpoint: Path,
    n: int,
    *,
    seed: int,
    guidance_weight: float = 0.5,
    sampling_steps: int | None = None,
    batch_size: int = 256,
    clip_denoised: bool = True,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` class-balanced labelled images from the EMA weights of a finished run.

    Labels are ``arange(n) % num_classes`` shuffled with ``seed``; each image is generated
    conditioned on its label with classifier-free guidance weight ``w = guidance_weight``
    (cond_scale = 1 + w, rescaled_phi = 0).  ``sampling_steps`` None (or T) gives ancestral
    sampling with all T steps; an int in 1..T-1 gives DDIM (eta = 0) with that many network
    evaluations.  ``clip_denoised`` clips the predicted clean image to [-1, 1] at every step (the
    package's default; the authors' sampler does not).  The output is a deterministic function of
    (checkpoint, n, seed, guidance_weight, sampling_steps, batch_size, clip_denoised) on CPU.

    Returns:
        images: uint8 (n, H, W, C), pixel values 0..255.
        labels: int64 (n,).
    """
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if not math.isfinite(guidance_weight):
        raise ValueError(f"guidance_weight={guidance_weight} must be finite")
    ckpt = _load(checkpoint, device)
    config = GeneratorConfig.from_dict(ckpt["config"])
    if ckpt["step"] < config.train_steps:
        raise ValueError(f"{checkpoint} holds an unfinished run (step {ckpt['step']} of {config.train_steps})")
    T = config.timesteps
    if sampling_steps is not None and not 1 <= sampling_steps <= T:
        raise ValueError(f"sampling_steps={sampling_steps} must lie in 1..timesteps={T}")
    if sampling_steps is None or sampling_steps == T:
        ddim_times = None
        method = f"ancestral sampling, {T} steps"
    else:
        ddim_times = [int(v) for v in np.round(np.linspace(0, T - 1, sampling_steps))]
        method = f"DDIM (eta=0), {sampling_steps} of {T} steps"

    diffusion = _build(config).to(device)
    unet = diffusion.model
    unet.load_state_dict(ckpt["ema"])
    unet.eval()
    del ckpt

    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    labels = torch.arange(n, dtype=torch.int64) % config.num_classes
    labels = labels[torch.randperm(n, generator=gen)]
    # the sampling noise comes from a device generator seeded from the same stream
    dev_gen = torch.Generator(device=device)
    dev_gen.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))

    h = w = config.image_size
    out = np.empty((n, h, w, config.channels), dtype=np.uint8)
    log(f"sampling {n} images, {method}, guidance weight {guidance_weight}, device {device}")
    t0 = time.perf_counter()
    n_batches = math.ceil(n / batch_size)
    log_every = max(1, math.ceil(n_batches / 10))
    with torch.inference_mode():
        for bi, start in enumerate(range(0, n, batch_size)):
            classes = labels[start : start + batch_size].to(device)
            x = _sample_batch(diffusion, unet, classes, float(guidance_weight), ddim_times, dev_gen, clip_denoised)
            img = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
            out[start : start + classes.shape[0]] = img.permute(0, 2, 3, 1).cpu().numpy()
            if (bi + 1) % log_every == 0 or bi + 1 == n_batches:
                done = start + classes.shape[0]
                log(f"sampled {done}/{n} images  {done / max(time.perf_counter() - t0, 1e-9):.1f} images/s")
    return out, labels.numpy()
