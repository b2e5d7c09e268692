"""Tests of the class-conditional DDPM (gammasweep.data.diffusion) on sklearn's 8x8 digits, CPU only (a
killed generator job under the workflow: tests/workflow/test_workflow.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from gammasweep.data import diffusion as diffusion_module
from gammasweep.data.diffusion import (
    GeneratorConfig,
    _build,
    _guided_eps,
    _sample_batch,
    _schedule_buffers,
    learning_rate_at,
    load_generator_config,
    sample_labelled,
    train_generator,
)
from gammasweep.data.pools import as_uint8
from gammasweep.sweep.checkpoints import STOP, Checkpoint, Interrupted

# micro configuration: trains in a few seconds on 2 CPU cores
MICRO = GeneratorConfig(
    image_size=8,
    channels=1,
    dim=8,
    dim_mults=(1, 2),
    timesteps=50,
    train_steps=30,
    batch_size=32,
    learning_rate=2e-3,
    seed=3,
)


def quiet(_msg: str) -> None:
    pass


def _stop_at(images: np.ndarray, labels: np.ndarray, config: GeneratorConfig, checkpoint: Path, step: int) -> None:
    """Train until a stop request (SIGTERM's) at ``step``, which saves ``checkpoint`` and raises Interrupted;
    the run's output (``checkpoint``'s sibling ``out.pt``) is never written."""

    def stop_there(message: str) -> None:
        if message.startswith(f"step {step}/"):
            STOP.set()

    out = checkpoint.parent / "out.pt"
    try:
        with pytest.raises(Interrupted, match=f"stopped before step {step} of {config.train_steps}"):
            train_generator(images, labels, config, out, checkpoint=Checkpoint(checkpoint, 1e9, quiet), log=stop_there)
    finally:
        STOP.clear()
    assert torch.load(checkpoint, weights_only=True)["step"] == step and not out.exists()


def _resume(images: np.ndarray, labels: np.ndarray, config: GeneratorConfig, checkpoint: Path, out: Path) -> list[str]:
    """Rerun a stopped run (``_stop_at``) to ``out``; returns its log, which says it resumed."""
    lines: list[str] = []
    train_generator(images, labels, config, out, checkpoint=Checkpoint(checkpoint, 1e9, lines.append), log=lines.append)
    assert any("checkpoint: resuming from step" in m for m in lines), lines
    assert out.exists() and not checkpoint.exists()
    return lines


def _assert_same_run(a: Path, b: Path) -> None:
    """Two finished runs hold the same numbers: losses, RNG state, weights, EMA and optimizer state."""
    a, b = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert a["step"] == b["step"] and a["losses"] == b["losses"]
    assert torch.equal(a["rng_state"], b["rng_state"]) and torch.equal(a["order"], b["order"])
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    for pid, state in a["optimizer"]["state"].items():
        for k, v in state.items():
            assert torch.equal(b["optimizer"]["state"][pid][k], v), (pid, k)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn digits as uint8 (1797, 8, 8, 1) in 0..255 and int64 labels (1797,)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
    return images, d.target.astype(np.int64)


@pytest.fixture(scope="module")
def micro_run(digits, tmp_path_factory) -> tuple[Path, list[str]]:
    """A finished MICRO run, uninterrupted; returns (generator, log lines)."""
    ckpt = tmp_path_factory.mktemp("micro") / "gen.pt"
    lines: list[str] = []
    train_generator(*digits, MICRO, ckpt, log=lines.append)
    return ckpt, lines


def test_training_reduces_loss_and_logs(micro_run):
    ckpt, lines = micro_run
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == MICRO.train_steps and state["finished"]
    losses = np.asarray(state["losses"])
    assert losses.shape == (MICRO.train_steps,) and np.isfinite(losses).all()
    first, last = losses[:5].mean(), losses[-5:].mean()
    assert last < 0.6 * first, (first, last)
    progress = [m for m in lines if m.startswith("step ")]
    assert 10 <= len(progress) <= 20
    assert "loss" in progress[-1] and "steps/s" in progress[-1]
    assert load_generator_config(ckpt) == MICRO
    assert not list(ckpt.parent.glob("*.tmp"))  # atomic writes leave no temporaries


def test_resume_equals_uninterrupted_run(micro_run, digits, tmp_path):
    """Stopped at step 10 (SIGTERM's stop request, in the first epoch of 57 steps), the checkpoint resumes
    to the uninterrupted run's generator bit for bit; it is deleted once the generator is written."""
    ref_path, _ = micro_run
    ckpt, out = tmp_path / "checkpoint.pt", tmp_path / "gen.pt"
    _stop_at(*digits, MICRO, ckpt, 10)
    assert not torch.load(ckpt, weights_only=True)["finished"]
    assert any("resuming from step 10 " in m for m in _resume(*digits, MICRO, ckpt, out))
    _assert_same_run(out, ref_path)
    a = sample_labelled(ref_path, 12, seed=5, sampling_steps=3, log=quiet)
    b = sample_labelled(out, 12, seed=5, sampling_steps=3, log=quiet)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_a_checkpoint_of_another_config_or_other_images_is_reported_and_never_used(micro_run, digits, tmp_path):
    ref_path, _ = micro_run
    images, labels = digits
    ckpt = tmp_path / "checkpoint.pt"
    _stop_at(images, labels, MICRO, ckpt, 10)
    saved = ckpt.read_bytes()
    other = dataclasses.replace(MICRO, learning_rate=1e-3, train_steps=4)
    for run, expected in (
        ((images, labels, other), "belongs to other settings"),
        ((images[:-1], labels[:-1], MICRO), "other data"),
    ):
        ckpt.write_bytes(saved)
        lines: list[str] = []
        train_generator(*run, tmp_path / "gen.pt", checkpoint=Checkpoint(ckpt, 1e9, lines.append), log=lines.append)
        assert any(expected in m and "starting from step 0" in m for m in lines), lines
        assert torch.load(tmp_path / "gen.pt", weights_only=True)["step"] == run[2].train_steps


def test_an_epoch_uses_every_training_image_once(monkeypatch, tmp_path):
    """As the authors' shuffled DataLoader (MNIST_script.py l. 319, 330): each epoch a new permutation of
    the images in batches of batch_size, the last of the remainder: 100 images at batch 32 are 32, 32, 32, 4."""
    n = 100
    images = np.zeros((n, 8, 8, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(n)  # image i says i in its first pixel
    labels = np.arange(n) % 10
    seen: list[list[int]] = []
    build = diffusion_module._build

    def spying_build(config: GeneratorConfig) -> torch.nn.Module:
        diffusion = build(config)
        p_losses = diffusion.p_losses

        def spy(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            seen.append(((x[:, 0, 0, 0] + 1.0) * 127.5).round().long().tolist())  # symmetric range: -1 is pixel 0
            return p_losses(x, *args, **kwargs)

        diffusion.p_losses = spy
        return diffusion

    monkeypatch.setattr(diffusion_module, "_build", spying_build)
    train_generator(images, labels, dataclasses.replace(MICRO, train_steps=8), tmp_path / "gen.pt", log=quiet)
    assert [len(batch) for batch in seen] == [32, 32, 32, 4] * 2
    first, second = sum(seen[:4], []), sum(seen[4:], [])
    assert sorted(first) == sorted(second) == list(range(n))
    assert first != second  # reshuffled


def test_sampling_shapes_balance_and_determinism(micro_run):
    ckpt, _ = micro_run
    lines: list[str] = []
    images, labels = sample_labelled(ckpt, 23, seed=1, sampling_steps=4, batch_size=10, log=lines.append)
    assert images.shape == (23, 8, 8, 1) and images.dtype == np.uint8
    assert labels.shape == (23,) and labels.dtype == np.int64
    counts = np.bincount(labels, minlength=10)
    assert counts.tolist() == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert not np.array_equal(labels, np.arange(23) % 10)  # shuffled
    assert lines

    again = sample_labelled(ckpt, 23, seed=1, sampling_steps=4, batch_size=10, log=quiet)
    assert np.array_equal(images, again[0]) and np.array_equal(labels, again[1])
    other = sample_labelled(ckpt, 23, seed=2, sampling_steps=4, batch_size=10, log=quiet)
    assert not np.array_equal(images, other[0])
    assert not np.array_equal(labels, other[1])

    # full ancestral sampling: None and sampling_steps == T are the same sampler
    anc = sample_labelled(ckpt, 6, seed=4, sampling_steps=None, log=quiet)
    anc_t = sample_labelled(ckpt, 6, seed=4, sampling_steps=MICRO.timesteps, log=quiet)
    assert anc[0].shape == (6, 8, 8, 1)
    assert np.array_equal(anc[0], anc_t[0])

    # the authors' sampler never clips the predicted clean image: an untrained model's overshoots then
    # carry through the trajectory, deterministically
    unclipped = sample_labelled(ckpt, 6, seed=4, sampling_steps=None, clip_denoised=False, log=quiet)
    assert not np.array_equal(unclipped[0], anc[0]) and np.array_equal(unclipped[1], anc[1])
    again = sample_labelled(ckpt, 6, seed=4, sampling_steps=None, clip_denoised=False, log=quiet)
    assert np.array_equal(unclipped[0], again[0])

    empty = sample_labelled(ckpt, 0, seed=0, sampling_steps=2, log=quiet)
    assert empty[0].shape == (0, 8, 8, 1) and empty[1].shape == (0,)
    with pytest.raises(ValueError):
        sample_labelled(ckpt, 4, seed=0, sampling_steps=MICRO.timesteps + 1, log=quiet)


def test_unfinished_checkpoint_cannot_be_sampled(digits, tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    _stop_at(*digits, dataclasses.replace(MICRO, train_steps=4), ckpt, 2)
    with pytest.raises(ValueError, match="unfinished"):
        sample_labelled(ckpt, 4, seed=0, sampling_steps=2, log=quiet)


def test_guidance_is_plain_classifier_free_guidance():
    """eps = (1 + w) eps(x, c) - w eps(x, null), with the package's own conditional/null passes."""
    unet = _build(MICRO).model.eval()
    torch.manual_seed(0)
    x, t, c = torch.randn(5, 1, 8, 8), torch.randint(0, 50, (5,)), torch.arange(5)
    with torch.no_grad():
        eps_c = unet(x, t, c, cond_drop_prob=0.0)
        eps_u = unet(x, t, c, cond_drop_prob=1.0)
        for w in (0.0, 0.5, 3.0):
            torch.testing.assert_close(_guided_eps(unet, x, t, c, w), (1 + w) * eps_c - w * eps_u)


def test_mnist_sized_architecture(tmp_path):
    """28x28 works with dim_mults (1, 2, 4); (1, 2, 4, 8) is rejected (28 is not divisible by 8)."""
    cfg = GeneratorConfig(
        image_size=28, channels=1, dim=8, dim_mults=(1, 2, 4), timesteps=50, train_steps=2, batch_size=4
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 28, 28, 1), dtype=np.uint8)
    labels = np.arange(16, dtype=np.int64) % 10
    ckpt = tmp_path / "mnist.pt"
    train_generator(images, labels, cfg, ckpt, log=quiet)
    out, lab = sample_labelled(ckpt, 3, seed=0, sampling_steps=2, log=quiet)
    assert out.shape == (3, 28, 28, 1) and out.dtype == np.uint8 and lab.shape == (3,)
    with pytest.raises(ValueError, match="image_size"):
        dataclasses.replace(cfg, dim_mults=(1, 2, 4, 8))


def test_bad_inputs_are_rejected(digits, tmp_path):
    images, labels = digits
    with pytest.raises(ValueError, match="timesteps"):
        dataclasses.replace(MICRO, timesteps=20)
    assert dataclasses.replace(MICRO, timesteps=20, betas=(1e-4, 0.02)).timesteps == 20  # unrescaled: any T
    for bad in (dict(betas=(0.02, 1e-4)), dict(betas=(0.0, 0.02)), dict(data_range="byte"), dict(lr_schedule="cos")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            dataclasses.replace(MICRO, **bad)
    with pytest.raises(ValueError, match="uint8"):
        train_generator(images.astype(np.float32), labels, MICRO, tmp_path / "x.pt", log=quiet)
    with pytest.raises(ValueError, match="labels"):
        train_generator(images, labels + 5, MICRO, tmp_path / "x.pt", log=quiet)
    assert not (tmp_path / "x.pt").exists()


def _schedule(diffusion: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The diffusion's own buffers (not its network's), by name."""
    return {name: b for name, b in diffusion.named_buffers() if not name.startswith("model.")}


def test_the_default_schedule_is_the_packages_and_every_buffer_is_rebuilt():
    """Without ``betas`` the package's rescaled 'linear' schedule is untouched; ``_schedule_buffers``
    computes exactly the buffers the package derives from its betas, every one of them (so a new
    buffer in a later package version fails here)."""
    from denoising_diffusion_pytorch.classifier_free_guidance import GaussianDiffusion, linear_beta_schedule

    ours = _schedule(_build(MICRO))
    package = _schedule(
        GaussianDiffusion(
            _build(MICRO).model, image_size=8, timesteps=50, objective="pred_noise", beta_schedule="linear"
        )
    )
    rebuilt = _schedule_buffers(linear_beta_schedule(50))
    assert ours.keys() == package.keys() == rebuilt.keys()
    for name in package:
        assert torch.equal(ours[name], package[name]) and torch.equal(rebuilt[name], package[name]), name
    torch.testing.assert_close(ours["betas"][[0, -1]], torch.tensor([1e-4 * 1000 / 50, 0.02 * 1000 / 50]))


def test_the_authors_betas_give_the_closed_form_buffers():
    """betas (1e-4, 0.02), T = 400: beta_t = 1e-4 + 0.0199 t / 400 at t = 1..400 (MNIST_script.py l. 196)
    and every buffer its closed form; their alpha-bar also multiplies (1 - beta_0) = 1 - 1e-4 in."""
    T = 400
    diffusion = _build(dataclasses.replace(MICRO, timesteps=T, betas=(1e-4, 0.02)))
    assert diffusion.num_timesteps == T
    beta = 1e-4 + (0.02 - 1e-4) * np.arange(1, T + 1) / T  # float64
    alpha_bar = np.cumprod(1.0 - beta)
    alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
    expected = {
        "betas": beta,
        "alphas_cumprod": alpha_bar,
        "alphas_cumprod_prev": alpha_bar_prev,
        "sqrt_alphas_cumprod": np.sqrt(alpha_bar),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alpha_bar),
        "log_one_minus_alphas_cumprod": np.log(1.0 - alpha_bar),
        "sqrt_recip_alphas_cumprod": 1.0 / np.sqrt(alpha_bar),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alpha_bar - 1.0),
        "posterior_variance": beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar),
        "posterior_log_variance_clipped": np.log(np.maximum(beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar), 1e-20)),
        "posterior_mean_coef1": beta * np.sqrt(alpha_bar_prev) / (1.0 - alpha_bar),
        "posterior_mean_coef2": (1.0 - alpha_bar_prev) * np.sqrt(1.0 - beta) / (1.0 - alpha_bar),
        "loss_weight": np.ones(T),
    }
    buffers = _schedule(diffusion)
    assert buffers.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(buffers[name].numpy(), value, rtol=1e-6, atol=1e-30, err_msg=name)
    assert buffers["betas"][0].item() == pytest.approx(1.4975e-4) and buffers["betas"][-1].item() == pytest.approx(0.02)
    assert buffers["alphas_cumprod"][-1].item() == pytest.approx(0.0173, rel=1e-3)  # x_T keeps 0.13 x_0
    authors = np.exp(np.cumsum(np.log(1.0 - (1e-4 + (0.02 - 1e-4) * np.arange(T + 1) / T))))  # l. 196-200
    np.testing.assert_allclose(alpha_bar * (1.0 - 1e-4), authors[1:], rtol=1e-12)


class _LinearEps(torch.nn.Module):
    """A stand-in network: eps(x, t, c) = 0.3 x + 0.01 (t + 1) + 0.1 c, the same with or without the class."""

    def forward(self, x, t, classes, cond_keep_mask):
        return 0.3 * x + 0.01 * (t + 1).view(-1, 1, 1, 1) + 0.1 * classes.view(-1, 1, 1, 1)


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_the_ancestral_step_has_the_chosen_variance(variance):
    """Unclipped ancestral sampling is, step by step, the authors' update (MNIST_script.py l. 284-294)
    x_{t-1} = (x_t - beta_t / sqrt(1 - alpha-bar_t) eps) / sqrt(alpha_t) + sigma_t z, with sigma_t^2 =
    beta_t ('beta') or the posterior's beta_t (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) ('posterior')."""
    T = 6
    diffusion = _build(dataclasses.replace(MICRO, timesteps=T, betas=(0.05, 0.3)))
    classes = torch.arange(4)
    got = _sample_batch(diffusion, _LinearEps(), classes, 0.0, None, torch.Generator().manual_seed(7), None, variance)

    beta = 0.05 + 0.25 * np.arange(1, T + 1) / T
    alpha_bar = np.cumprod(1.0 - beta)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn((4, 1, 8, 8), generator=gen).double()
    for k in reversed(range(T)):  # our index k is the authors' step t = k + 1
        eps = 0.3 * x + 0.01 * (k + 1) + 0.1 * classes.view(-1, 1, 1, 1).double()
        x = (x - beta[k] / np.sqrt(1.0 - alpha_bar[k]) * eps) / np.sqrt(1.0 - beta[k])
        if k > 0:
            var = beta[k] if variance == "beta" else beta[k] * (1.0 - alpha_bar[k - 1]) / (1.0 - alpha_bar[k])
            x = x + np.sqrt(var) * torch.randn((4, 1, 8, 8), generator=gen).double()
    torch.testing.assert_close(got.double(), x, rtol=1e-5, atol=1e-5)


def test_linear_learning_rate_decay_is_the_authors():
    """lr (1 - epoch / 20) over 20 epochs of ceil(60000 / 256) = 235 steps (MNIST_script.py l. 326, 334)."""
    cfg = dataclasses.replace(MICRO, train_steps=4700, batch_size=256, learning_rate=1e-4, lr_schedule="linear")
    lrs = [learning_rate_at(cfg, step, 60_000) for step in (0, 234, 235, 470, 4464, 4465, 4699)]
    np.testing.assert_allclose(lrs, [1e-4, 1e-4, 9.5e-5, 9e-5, 1e-5, 5e-6, 5e-6], rtol=1e-12)
    constant = dataclasses.replace(cfg, lr_schedule="constant")
    assert {learning_rate_at(constant, step, 60_000) for step in (0, 235, 4699)} == {1e-4}
    partial = dataclasses.replace(cfg, train_steps=500)  # 3 epochs, the last one partial
    assert learning_rate_at(partial, 499, 60_000) == pytest.approx(1e-4 / 3)


def test_a_decayed_run_resumes_exactly(digits, tmp_path):
    """On 100 images at batch 32 an epoch is 4 steps: the 30 steps are 8 epochs of decay, resumed
    from a stop at step 10, in the middle of the third epoch, bit for bit."""
    images, labels = digits[0][:100], digits[1][:100]
    cfg = dataclasses.replace(MICRO, lr_schedule="linear")
    ref, ckpt, out = tmp_path / "ref.pt", tmp_path / "checkpoint.pt", tmp_path / "gen.pt"
    train_generator(images, labels, cfg, ref, log=quiet)
    _stop_at(images, labels, cfg, ckpt, 10)
    _resume(images, labels, cfg, ckpt, out)
    _assert_same_run(out, ref)
    a, b = torch.load(ref, weights_only=True), torch.load(out, weights_only=True)
    assert b["optimizer"]["param_groups"][0]["lr"] == learning_rate_at(cfg, 29, 100) == pytest.approx(2e-3 / 8)
    constant = tmp_path / "constant.pt"
    train_generator(images, labels, MICRO, constant, log=quiet)
    assert torch.load(constant, weights_only=True)["losses"][4:] != a["losses"][4:]  # decay from the second epoch


@pytest.mark.parametrize("data_range,low,high", [("symmetric", -1.0, 1.0), ("unit", 0.0, 1.0)])
def test_the_first_training_loss_diffuses_pixels_in_the_data_range(digits, tmp_path, data_range, low, high):
    """The loss of step 1, recomputed from the same draws: pixels 0..1 are diffused as [low, high]."""
    cfg = dataclasses.replace(MICRO, train_steps=1, data_range=data_range)
    train_generator(*digits, cfg, tmp_path / "gen.pt", log=quiet)
    images, labels = digits
    gen = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randperm(len(images), generator=gen)[: cfg.batch_size]  # the first batch of the first epoch
    times = torch.randint(0, cfg.timesteps, (cfg.batch_size,), generator=gen)
    x = torch.from_numpy(images[idx.numpy()]).permute(0, 3, 1, 2).double() / 255.0
    noise = torch.randn(x.shape, generator=gen)
    keep = torch.rand((cfg.batch_size,), generator=gen) >= cfg.cond_drop_prob
    diffusion = _build(cfg)
    with torch.no_grad():
        expected = diffusion.p_losses(
            (low + (high - low) * x).float(),
            times,
            classes=torch.from_numpy(labels[idx.numpy()]),
            noise=noise,
            cond_keep_mask=keep,
        )
    assert torch.load(tmp_path / "gen.pt", weights_only=True)["losses"][0] == pytest.approx(float(expected), rel=1e-6)


def test_float32_storage_is_the_unclipped_unit_scale(micro_run):
    """float32 samples are the uint8 ones before rounding and clipping, on the [0, 1] scale."""
    ckpt, _ = micro_run
    kwargs = dict(seed=4, sampling_steps=None, clip_denoised=False, log=quiet)
    raw, labels = sample_labelled(ckpt, 12, storage="float32", **kwargs)
    quantized, same_labels = sample_labelled(ckpt, 12, **kwargs)
    assert raw.dtype == np.float32 and raw.shape == (12, 8, 8, 1) and np.array_equal(labels, same_labels)
    assert np.array_equal(as_uint8(raw), quantized)
    assert raw.min() < 0.0 or raw.max() > 1.0  # an untrained-ish model overshoots: kept, not clipped
    beta = sample_labelled(ckpt, 12, storage="float32", variance="beta", **kwargs)[0]
    assert not np.array_equal(beta, raw)  # sigma_t^2 = beta_t > the posterior's beta~_t
    with pytest.raises(ValueError, match="DDIM"):
        sample_labelled(ckpt, 4, seed=0, sampling_steps=3, variance="beta", log=quiet)
    with pytest.raises(ValueError, match="storage"):
        sample_labelled(ckpt, 4, seed=0, storage="float16", log=quiet)


# Conditioning quality after a few hundred steps (~30 s of training on 2 CPU cores).  Observed on
# 200 samples (guidance weight 4, 10 DDIM steps): 0.48 with seed 0 (0.545 when batches were drawn with
# replacement; 0.44..0.68 over other seeds and learning rates 3e-3..5e-3); with 500 steps at batch 64 it
# reached 0.97..1.0.  Chance is 0.1.
QUALITY = GeneratorConfig(
    image_size=8,
    channels=1,
    dim=8,
    dim_mults=(1, 2),
    timesteps=50,
    train_steps=300,
    batch_size=32,
    learning_rate=3e-3,
    seed=0,
)


def test_samples_are_recognised_as_their_class(digits, tmp_path):
    from sklearn.linear_model import LogisticRegression

    images, labels = digits
    x_real = images.reshape(len(images), -1) / 255.0
    clf = LogisticRegression(max_iter=2000).fit(x_real, labels)
    ckpt = tmp_path / "gen.pt"
    train_generator(images, labels, QUALITY, ckpt, log=quiet)
    samples, cond = sample_labelled(ckpt, 200, seed=0, guidance_weight=4.0, sampling_steps=10, log=quiet)
    acc = float((clf.predict(samples.reshape(len(samples), -1) / 255.0) == cond).mean())
    print(f"conditioning accuracy {acc:.3f}")
    assert acc >= 0.3, acc  # 3x chance; a 200-sample rate of 0.3 is ~10 standard errors above 0.1
