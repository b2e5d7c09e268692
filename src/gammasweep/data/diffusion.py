"""Class-conditional DDPM with classifier-free guidance, for generating labelled image data sets.

The network and the noise schedule come from ``denoising_diffusion_pytorch.classifier_free_guidance``
(``Unet`` and ``GaussianDiffusion``).  The training loop, the EMA, checkpointing and the sampling
loops are written here because the package's ``Trainer`` cannot take labels and its samplers draw
from the global RNG (no per-call seed) and, by default, modify the guidance update (projection
onto the conditional output).  This module uses plain classifier-free guidance::

    eps = eps_cond + w * (eps_cond - eps_uncond) = (1 + w) * eps_cond - w * eps_uncond,

with ``cond_scale = 1 + w`` and no rescaling (``rescaled_phi = 0``).

Noise schedule (``GeneratorConfig.betas``): by default the package's ``'linear'`` schedule, i.e.
betas linear from ``1e-4 * 1000 / T`` to ``0.02 * 1000 / T``.  This is DDPM's 1e-4..0.02 schedule for
T = 1000, rescaled so that the data is fully noised at step T for any T (which the unscaled schedule
is not for T < 1000); the last beta is ``20 / T``, so T must exceed 20.  With ``betas = (start, end)``
the schedule is the authors' unrescaled one (Pehlevan-Group/Richness_Sweep, ``MNIST-1M/MNIST_script.py``
l. 196): ``beta_t = start + (end - start) t / T`` at the steps t = 1..T (our time index t - 1).  The
package builds its buffers from the names of its schedules only, so ``_set_betas`` rebuilds them.

Pixels in [0, 1] are diffused as [-1, 1] (``data_range`` 'symmetric', the package's) or as they are
(``data_range`` 'unit', the authors': ``MNIST_script.py`` l. 323); the clipping of the predicted
clean image (``clip_denoised``) clips to that range.

Training passes over the images in epochs, as the authors' shuffled ``DataLoader`` (``MNIST_script.py``
l. 319, 330): each epoch a permutation of the N images, in batches of ``batch_size``, the last of the
remainder, so an epoch is ceil(N / batch_size) steps. Every random draw of training (the epochs'
permutations, diffusion times, noise, condition dropout) and of sampling comes from a ``torch.Generator``
owned by this module, so runs are reproducible on CPU and a resumed training run (``Checkpoint``: on a
timer and on SIGTERM/SIGUSR1) equals an uninterrupted one bit for bit, even from the middle of an epoch.
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

from gammasweep.data.generator_config import DATA_RANGES, GeneratorConfig
from gammasweep.results.io import atomic_path
from gammasweep.sweep.checkpoints import STOP, Checkpoint, Interrupted, fingerprint

__all__ = [
    "GeneratorConfig",
    "learning_rate_at",
    "load_generator_config",
    "sample_labelled",
    "train_generator",
]

_FORMAT = "gammasweep.data.diffusion/1"
_EMA_WARMUP = 10.0  # EMA decay at optimizer step t is min(ema_decay, (1 + t) / (_EMA_WARMUP + t))
VARIANCES = ("posterior", "beta")  # the ancestral step's variance: the posterior's beta~_t, or beta_t
STORAGES = ("uint8", "float32")  # the dtype of sampled images


# --------------------------------------------------------------------------------------------
# model construction


def _build(config: GeneratorConfig) -> nn.Module:
    """The package's GaussianDiffusion wrapping its class-conditional Unet, on ``config``'s betas.

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
    diffusion = GaussianDiffusion(
        unet,
        image_size=config.image_size,
        timesteps=config.timesteps,
        objective="pred_noise",
        beta_schedule="linear",
    )
    if config.betas is not None:
        start, end = config.betas
        _set_betas(diffusion, torch.linspace(start, end, config.timesteps + 1, dtype=torch.float64)[1:])
    return diffusion


def _schedule_buffers(betas: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every buffer ``GaussianDiffusion.__init__`` derives from its betas, by the package's formulas
    (objective 'pred_noise', no min-SNR weighting: loss weight 1), computed in float64, float32 out.

    betas: float64 (T,), beta at each time index. Returns tensors of shape (T,) keyed by buffer name.
    """
    alphas = 1.0 - betas
    cumprod = torch.cumprod(alphas, dim=0)  # alpha-bar_t
    cumprod_prev = torch.nn.functional.pad(cumprod[:-1], (1, 0), value=1.0)
    posterior_variance = betas * (1.0 - cumprod_prev) / (1.0 - cumprod)
    buffers = {
        "betas": betas,
        "alphas_cumprod": cumprod,
        "alphas_cumprod_prev": cumprod_prev,
        "sqrt_alphas_cumprod": torch.sqrt(cumprod),
        "sqrt_one_minus_alphas_cumprod": torch.sqrt(1.0 - cumprod),
        "log_one_minus_alphas_cumprod": torch.log(1.0 - cumprod),
        "sqrt_recip_alphas_cumprod": torch.sqrt(1.0 / cumprod),
        "sqrt_recipm1_alphas_cumprod": torch.sqrt(1.0 / cumprod - 1),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": torch.log(posterior_variance.clamp(min=1e-20)),
        "posterior_mean_coef1": betas * torch.sqrt(cumprod_prev) / (1.0 - cumprod),
        "posterior_mean_coef2": (1.0 - cumprod_prev) * torch.sqrt(alphas) / (1.0 - cumprod),
        "loss_weight": torch.ones_like(betas),
    }
    return {name: value.to(torch.float32) for name, value in buffers.items()}


def _set_betas(diffusion: nn.Module, betas: torch.Tensor) -> None:
    """Rebuild every schedule buffer of ``diffusion`` (a GaussianDiffusion of T = len(betas) steps) from
    ``betas``, float64 (T,), in place."""
    for name, value in _schedule_buffers(betas).items():
        getattr(diffusion, name).copy_(value)


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
    """The :class:`GeneratorConfig` stored in a generator (or checkpoint) written by :func:`train_generator`."""
    return GeneratorConfig.from_dict(_load(checkpoint)["config"])


def _steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Steps of one pass over ``n_train`` images in batches of ``batch_size``, the last one smaller."""
    return math.ceil(n_train / batch_size)


def learning_rate_at(config: GeneratorConfig, step: int, n_train: int) -> float:
    """Adam's learning rate for optimizer step ``step`` (0-based) of a run on ``n_train`` images.

    'constant': ``config.learning_rate``. 'linear': ``learning_rate (1 - e / E)`` in epoch
    ``e = step // S`` with ``S = ceil(n_train / batch_size)`` steps per epoch (a pass of a loader that
    keeps the last, smaller batch) and ``E = ceil(train_steps / S)`` epochs: the authors' decay, set
    at the start of each epoch (``MNIST_script.py`` l. 326, 334).
    """
    if config.lr_schedule == "constant":
        return config.learning_rate
    per_epoch = _steps_per_epoch(n_train, config.batch_size)
    epochs = math.ceil(config.train_steps / per_epoch)
    return config.learning_rate * (1.0 - (step // per_epoch) / epochs)


# --------------------------------------------------------------------------------------------
# training


def train_generator(
    images: np.ndarray,
    labels: np.ndarray,
    config: GeneratorConfig,
    out: Path,
    *,
    checkpoint: Checkpoint | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> None:
    """Train the class-conditional DDPM for ``config.train_steps`` Adam steps; write ``out``.

    Args:
        images: uint8 array (N, H, W, C), pixel values 0..255, H == W == config.image_size,
            C == config.channels.
        labels: integer array (N,), values in 0..config.num_classes-1.
        config: architecture and training hyper-parameters (the learning rate at each step:
            :func:`learning_rate_at`).
        out: the finished run (torch.save dict with model, EMA and optimizer state, step, config as a
            dict, RNG state, the epoch's order and the per-step loss history), written atomically at the end.
        checkpoint: where the unfinished run is saved (outside the outputs) when ``checkpoint.due()`` (its
            timer, or SIGTERM/SIGUSR1: then it raises Interrupted) and resumed from if it was written for
            this config and these images (else the log says why it was ignored); deleted once ``out`` is
            written. A resumed run equals an uninterrupted one bit for bit on CPU.
        device: torch device for training.
        log: receives progress lines (step, mean loss since the last line, steps/s), ~15 per run.
    """
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
    data = {"data_sha256": _data_fingerprint(images, labels)}
    key = fingerprint(_FORMAT, config.to_dict())

    diffusion = _build(config).to(device)
    unet = diffusion.model
    ema = copy.deepcopy(unet).requires_grad_(False)
    optimizer = torch.optim.Adam(unet.parameters(), lr=config.learning_rate)
    gen = torch.Generator(device=device)
    gen.manual_seed(config.seed)
    x_all = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)  # (N, C, H, W) uint8
    y_all = torch.from_numpy(labels).to(device)
    n = x_all.shape[0]
    bsz = config.batch_size
    per_epoch = _steps_per_epoch(n, bsz)
    low, high = DATA_RANGES[config.data_range]  # where pixel values 0 and 1 lie for the diffusion
    losses: list[float] = []
    order = torch.empty(0, dtype=torch.long, device=device)  # the epoch's permutation, drawn at its first step
    step = 0
    if checkpoint is not None and (saved := checkpoint.load(key, data)) is not None:
        unet.load_state_dict(saved["model"])
        ema.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])
        gen.set_state(saved["rng_state"].cpu())
        order = saved["order"].to(device)
        losses = list(saved["losses"])
        step = int(saved["step"])
        del saved
    else:
        n_params = sum(p.numel() for p in unet.parameters())
        log(
            f"training class-conditional DDPM ({n_params} parameters) for {config.train_steps} steps "
            f"({per_epoch} an epoch) on {n} images, device {device}"
        )

    def state() -> dict[str, Any]:
        """Everything the run is, to resume it or sample from it."""
        return {
            "format": _FORMAT,
            "config": config.to_dict(),
            "step": step,
            "finished": step >= config.train_steps,
            "model": unet.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng_state": gen.get_state(),
            "order": order,
            "losses": list(losses),
            **data,
        }

    log_every = max(1, math.ceil(config.train_steps / 15))
    unet.train()
    t0, last_step, last_loss_idx = time.perf_counter(), step, len(losses)
    while step < config.train_steps:
        if step % per_epoch == 0:
            order = torch.randperm(n, generator=gen, device=device)
        first = (step % per_epoch) * bsz
        idx = order[first : first + bsz]
        times = torch.randint(0, config.timesteps, (len(idx),), generator=gen, device=device)
        x = low + (high - low) * (x_all[idx].float() / 255.0)
        noise = torch.randn(x.shape, generator=gen, device=device)
        keep = torch.rand((len(idx),), generator=gen, device=device) >= config.cond_drop_prob
        loss = diffusion.p_losses(x, times, classes=y_all[idx], noise=noise, cond_keep_mask=keep)
        lr = learning_rate_at(config, step, n)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        _ema_update(ema, unet, _ema_decay_at(step, config.ema_decay))
        losses.append(float(loss.detach()))

        if step % log_every == 0 or step == config.train_steps:
            now = time.perf_counter()
            rate = (step - last_step) / max(now - t0, 1e-9)
            mean_loss = float(np.mean(losses[last_loss_idx:]))
            log(f"step {step}/{config.train_steps}  loss {mean_loss:.4f}  lr {lr:.3g}  {rate:.2f} steps/s")
            t0, last_step, last_loss_idx = now, step, len(losses)
        if checkpoint is not None and step < config.train_steps and checkpoint.due():
            checkpoint.save(state(), key, data)
            if STOP.is_set():
                raise Interrupted(
                    f"stopped before step {step} of {config.train_steps}; rerun to resume from {checkpoint.path}"
                )
    with atomic_path(out) as tmp:
        torch.save(state(), tmp)
    if checkpoint is not None:
        checkpoint.remove()
    log(f"wrote {out}")


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
    clip: tuple[float, float] | None = (-1.0, 1.0),
    variance: str = "posterior",
) -> torch.Tensor:
    """One batch of images in the space the diffusion runs in, shape (B, C, H, W).

    ``ddim_times`` None: ancestral DDPM sampling over all T steps. Otherwise deterministic DDIM
    (eta = 0) over the given increasing time indices (the last update goes to the clean image).
    The predicted clean image is clipped to the interval ``clip`` (the data range) at every step, as
    in the package, unless ``clip`` is None (the authors' sampler never clips). An ancestral step
    draws x_{t-1} ~ N(posterior mean, sigma_t^2) with sigma_t^2 the posterior's variance
    beta~_t = beta_t (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) (``variance`` 'posterior', the
    package's) or beta_t ('beta', the authors': ``MNIST_script.py`` l. 284, 294); the last step
    adds no noise.
    """
    b, dev = classes.shape[0], classes.device

    def clean(x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The predicted clean image, clipped to ``clip`` unless it is None."""
        x0 = diffusion.predict_start_from_noise(x, t, eps)
        return x0 if clip is None else x0.clamp(*clip)

    shape = (b, diffusion.channels, diffusion.image_size, diffusion.image_size)
    x = torch.randn(shape, generator=gen, device=dev)
    if ddim_times is None:
        for i in reversed(range(diffusion.num_timesteps)):
            t = torch.full((b,), i, dtype=torch.long, device=dev)
            eps = _guided_eps(unet, x, t, classes, guidance_weight)
            x0 = clean(x, t, eps)
            mean, _, log_var = diffusion.q_posterior(x_start=x0, x_t=x, t=t)
            if i > 0:
                std = (0.5 * log_var).exp() if variance == "posterior" else diffusion.betas[i].sqrt()
                x = mean + std * torch.randn(shape, generator=gen, device=dev)
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
    variance: str = "posterior",
    storage: str = "uint8",
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` class-balanced labelled images from the EMA weights of a finished run.

    Labels are ``arange(n) % num_classes`` shuffled with ``seed``; each image is generated
    conditioned on its label with classifier-free guidance weight ``w = guidance_weight``
    (cond_scale = 1 + w, rescaled_phi = 0).  ``sampling_steps`` None (or T) gives ancestral
    sampling with all T steps; an int in 1..T-1 gives DDIM (eta = 0) with that many network
    evaluations.  ``clip_denoised`` clips the predicted clean image to the data range at every step
    (the package's default; the authors' sampler does not).  ``variance`` is the ancestral step's:
    'posterior' (beta~_t, the package's) or 'beta' (beta_t, the authors'); DDIM has none, so 'beta'
    with DDIM is an error.  The output is a deterministic function of (checkpoint, n, seed,
    guidance_weight, sampling_steps, batch_size, clip_denoised, variance, storage) on CPU.

    Returns:
        images: (n, H, W, C); ``storage`` 'uint8': pixel values 0..255, rounded and clipped;
            'float32': on the [0, 1] scale of pixel values, unclipped (the authors' storage).
        labels: int64 (n,).
    """
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if not math.isfinite(guidance_weight):
        raise ValueError(f"guidance_weight={guidance_weight} must be finite")
    if variance not in VARIANCES or storage not in STORAGES:
        raise ValueError(f"variance={variance!r} must be one of {VARIANCES}, storage={storage!r} one of {STORAGES}")
    ckpt = _load(checkpoint, device)
    config = GeneratorConfig.from_dict(ckpt["config"])
    if ckpt["step"] < config.train_steps:
        raise ValueError(f"{checkpoint} holds an unfinished run (step {ckpt['step']} of {config.train_steps})")
    T = config.timesteps
    if sampling_steps is not None and not 1 <= sampling_steps <= T:
        raise ValueError(f"sampling_steps={sampling_steps} must lie in 1..timesteps={T}")
    if sampling_steps is None or sampling_steps == T:
        ddim_times = None
        method = f"ancestral sampling, {T} steps, {variance} variance"
    else:
        if variance != "posterior":
            raise ValueError(
                f"variance={variance!r} is the ancestral step's noise; DDIM (sampling_steps={sampling_steps}) has none"
            )
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
    out = np.empty((n, h, w, config.channels), dtype=np.dtype(storage))
    low, high = DATA_RANGES[config.data_range]
    clip = (low, high) if clip_denoised else None
    log(f"sampling {n} images as {storage}, {method}, guidance weight {guidance_weight}, device {device}")
    t0 = time.perf_counter()
    n_batches = math.ceil(n / batch_size)
    log_every = max(1, math.ceil(n_batches / 10))
    with torch.inference_mode():
        for bi, start in enumerate(range(0, n, batch_size)):
            classes = labels[start : start + batch_size].to(device)
            x = _sample_batch(diffusion, unet, classes, float(guidance_weight), ddim_times, dev_gen, clip, variance)
            if storage == "uint8":
                img = ((x - low) * (255.0 / (high - low))).round().clamp(0, 255).to(torch.uint8)
            else:
                img = (x - low) / (high - low)
            out[start : start + classes.shape[0]] = img.permute(0, 2, 3, 1).cpu().numpy()
            if (bi + 1) % log_every == 0 or bi + 1 == n_batches:
                done = start + classes.shape[0]
                log(f"sampled {done}/{n} images  {done / max(time.perf_counter() - t0, 1e-9):.1f} images/s")
    return out, labels.numpy()
