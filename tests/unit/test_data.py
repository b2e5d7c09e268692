"""The online stream: one seeded pass over a pool of one or several files, read block by block."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_setup

from gammasweep.data.pools import read_images, write_images
from gammasweep.data.stream import OnlineStream, normalize
from gammasweep.sweep.train import Members, train


def _stream_batches(stream: OnlineStream, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    batches = [stream.batch(t) for t in range(steps)]
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def test_a_pool_in_parts_streams_exactly_as_the_same_pool_in_one_file(digits_files, tmp_path):
    images, labels = read_images(digits_files[0])
    write_images(tmp_path / "part0.h5", images[:500], labels[:500])
    write_images(tmp_path / "part1.h5", images[500:], labels[500:])
    whole = OnlineStream(digits_files[0], batch_size=50, steps=20, data_seed=3)
    parts = OnlineStream([tmp_path / "part0.h5", tmp_path / "part1.h5"], 50, 20, 3, block_rows=7)
    got, expected = _stream_batches(parts, 20), _stream_batches(whole, 20)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    # the seeded order itself: batch t is order[B t : B (t + 1)] of a permutation of the pool
    order = np.random.default_rng(3).permutation(len(labels))[:1000]
    assert torch.equal(expected[0], torch.from_numpy(images[order]))
    assert len(set(order.tolist())) == 1000  # no sample reused within the pass


def test_a_missing_or_truncated_pool_is_a_clear_error(digits_files, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist: the workflow makes it \(snakemake .*nope.h5\)"):
        OnlineStream(tmp_path / "nope.h5", 10, 2, 0)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(digits_files[0].read_bytes()[:3000])
    with pytest.raises(OSError, match="cut.h5 is unreadable .* delete it and rebuild it"):
        OnlineStream(cut, 10, 2, 0)
    with pytest.raises(ValueError, match="needs steps x batch = 100 x 20 = 2000 samples, but the pool"):
        OnlineStream(digits_files[0], 20, 100, 0)


def test_a_multi_epoch_stream_reshuffles_every_epoch_and_holds_the_pool_once(digits_files):
    """epochs=True: 2.5 passes over the 1400 images; each epoch is a fresh seeded permutation (the
    first the one-pass order), every image appears once per epoch, and only the pool is in memory."""
    images, labels = read_images(digits_files[0])
    steps, batch = 35, 100  # 3500 samples = 2.5 epochs
    stream = OnlineStream(digits_files[0], batch, steps, data_seed=4, epochs=True)
    got = _stream_batches(stream, steps)
    rng = np.random.default_rng(4)
    order = np.concatenate([rng.permutation(1400) for _ in range(3)])[:3500]
    assert torch.equal(got[0], torch.from_numpy(images[order])) and torch.equal(got[1], torch.from_numpy(labels[order]))
    assert not np.array_equal(order[:1400], order[1400:2800])
    assert sorted(order[1400:2800].tolist()) == list(range(1400))
    assert len(stream.images) == 1400
    one_pass = OnlineStream(digits_files[0], batch, 14, data_seed=4)
    assert torch.equal(_stream_batches(one_pass, 14)[0], got[0][:1400])


def _window_budget(stream: OnlineStream, steps: int) -> int:
    """A device budget that holds ``steps`` steps' batches but not the pass: windows of ``steps``."""
    image_bytes = stream.images[0].nbytes
    return steps * stream.batch_size * (image_bytes + 8) + stream.batch_size * image_bytes // 2


@pytest.mark.parametrize("window", [None, 7, 1], ids=["held", "windows-of-7", "windows-of-1"])
def test_a_placed_stream_serves_the_host_batches_bit_identically(digits_files, window):
    """Held on the device (the CPU here) or served in windows of 7 steps (not a divisor of the 23
    steps) or 1, every batch equals the host stream's: values, dtypes, shapes; batches taken earlier
    are not overwritten by later windows."""
    host = OnlineStream(digits_files[0], 50, 23, data_seed=5)
    placed = OnlineStream(digits_files[0], 50, 23, data_seed=5)
    messages = []
    placed.to_device("cpu", None if window is None else _window_budget(placed, window), log=messages.append)
    assert placed.window_steps == window and placed.device == torch.device("cpu")
    assert len(messages) == 1 and messages[0].startswith("training pool of 1,150 images 8x8x1: ")
    assert ("held on cpu (budget no limit)" in messages[0]) == (window is None)
    assert (f"streamed in windows of {window} steps" in messages[0]) == (window is not None)
    got, expected = _stream_batches(placed, 23), _stream_batches(host, 23)
    assert got[0].dtype == torch.uint8 and got[1].dtype == torch.int64 and got[0].shape == (1150, 8, 8, 1)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    placed.to_device("cpu", None if window is None else _window_budget(placed, window), log=messages.append)
    assert len(messages) == 1  # the same placement again: nothing to do


def test_a_windowed_stream_serves_any_step_in_any_order_as_after_a_resume(digits_files):
    """Random access: steps in a shuffled order with repeats, backwards, and a resume at step 13 of a
    fresh stream (its first window starts mid-window) all give the host's batches."""
    host = OnlineStream(digits_files[0], 40, 30, data_seed=2)
    windowed = OnlineStream(digits_files[0], 40, 30, data_seed=2)
    windowed.to_device("cpu", _window_budget(windowed, 4), log=lambda m: None)
    assert windowed.window_steps == 4
    steps = [*np.random.default_rng(0).permutation(30).tolist(), *range(29, -1, -1), 5, 5, 29, 0]
    for t in steps:
        assert all(torch.equal(a, b) for a, b in zip(windowed.batch(t), host.batch(t))), t
    resumed = OnlineStream(digits_files[0], 40, 30, data_seed=2)
    resumed.to_device("cpu", _window_budget(resumed, 4), log=lambda m: None)
    after_resume = [resumed.batch(t) for t in range(13, 30)]
    expected = _stream_batches(host, 30)
    assert torch.equal(torch.cat([images for images, _ in after_resume]), expected[0][13 * 40 :])
    assert torch.equal(torch.cat([labels for _, labels in after_resume]), expected[1][13 * 40 :])
    with pytest.raises(IndexError, match="step 30 is outside the stream's 30 steps"):
        windowed.batch(30)
    with pytest.raises(IndexError, match="step -1 is outside"):
        host.batch(-1)


def test_a_multi_epoch_stream_in_windows_follows_every_epochs_order(digits_files):
    """epochs=True in windows of 3 steps: 2.5 epochs of the seeded per-epoch permutations, with windows
    that straddle the epoch boundaries (steps 14 and 28)."""
    images, labels = read_images(digits_files[0])
    stream = OnlineStream(digits_files[0], 100, 35, data_seed=4, epochs=True)
    stream.to_device("cpu", _window_budget(stream, 3), log=lambda m: None)
    assert stream.window_steps == 3 and len(stream.images) == 1400
    got = _stream_batches(stream, 35)
    rng = np.random.default_rng(4)
    order = np.concatenate([rng.permutation(1400) for _ in range(3)])[:3500]
    assert torch.equal(got[0], torch.from_numpy(images[order])) and torch.equal(got[1], torch.from_numpy(labels[order]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("window", [None, 6], ids=["held", "windows-of-6"])
def test_a_stream_on_a_gpu_serves_the_host_batches_there(digits_files, window):
    """On a GPU: held whole under the default budget, or in pinned-staged windows of 6 of 20 steps."""
    host = OnlineStream(digits_files[0], 64, 20, data_seed=1)
    gpu = OnlineStream(digits_files[0], 64, 20, data_seed=1)
    gpu.to_device("cuda", None if window is None else _window_budget(gpu, window), log=lambda m: None)
    assert gpu.window_steps == window
    batches = [gpu.batch(t) for t in [*range(20), 19, 3, 12]]
    assert all(b.is_cuda for batch in batches for b in batch)
    for t, (images, labels) in zip([*range(20), 19, 3, 12], batches):
        assert torch.equal(images.cpu(), host.batch(t)[0]) and torch.equal(labels.cpu(), host.batch(t)[1])


def _as_float32_pool(digits_files, path):
    """The digits pool stored as float32 on the [0, 1] scale (images / 255): its images, labels and path."""
    images, labels = read_images(digits_files[0])
    write_images(path, (images / 255.0).astype(np.float32), labels)
    return images, labels, path


def test_a_float32_pool_round_trips_and_streams_as_stored(digits_files, tmp_path):
    """float32 images are written, merged and read back as they are, values outside [0, 1] included;
    the stream serves them as float32 and normalizes them as it does the uint8 pool's."""
    from gammasweep.jobs.data import merge_pool

    images, labels, path = _as_float32_pool(digits_files, tmp_path / "pool.h5")
    raw = (images[:5] / 255.0 * 1.4 - 0.2).astype(np.float32)  # unclipped samples overshoot
    write_images(tmp_path / "raw.h5", raw, labels[:5])
    got = read_images(tmp_path / "raw.h5")
    assert got[0].dtype == np.float32 and np.array_equal(got[0], raw) and np.array_equal(got[1], labels[:5])
    merge_pool([str(tmp_path / "raw.h5"), str(path)], str(tmp_path / "merged.h5"), str(tmp_path / "manifest.json"))
    merged = read_images(tmp_path / "merged.h5")[0]
    assert (
        merged.dtype == np.float32
        and np.array_equal(merged[:5], raw)
        and np.array_equal(merged[5:], read_images(path)[0])
    )
    with pytest.raises(ValueError, match="uint8 or float32"):
        write_images(tmp_path / "x.h5", raw.astype(np.float64), labels[:5])

    as_float, as_uint8 = OnlineStream(path, 50, 20, data_seed=3), OnlineStream(digits_files[0], 50, 20, data_seed=3)
    got_float, got_uint8 = _stream_batches(as_float, 20), _stream_batches(as_uint8, 20)
    assert got_float[0].dtype == torch.float32 and torch.equal(got_float[1], got_uint8[1])
    mean, std = (0.3,), (0.4,)
    assert torch.equal(
        normalize(got_float[0], mean, std, torch.float32), normalize(got_uint8[0], mean, std, torch.float32)
    )
    with pytest.raises(ValueError, match="different dtypes"):
        OnlineStream([path, digits_files[0]], 50, 20, data_seed=3)


def test_a_float32_pool_trains_as_the_uint8_pool_it_holds(digits_files, test_set, tmp_path):
    """Stored as images / 255 in float32, the pool trains a float32 MLP exactly as the uint8 pool."""
    *_, path = _as_float32_pool(digits_files, tmp_path / "pool.h5")
    setup, members = make_setup(steps=20), Members([0, 1], [1.0, 0.1], [0.5, 0.05])
    runs = [
        train(setup, members, OnlineStream(pool, 16, 20, data_seed=0), *test_set, log=lambda m: None)
        for pool in (digits_files[0], path)
    ]
    assert np.isfinite(runs[1].test_loss).all()
    np.testing.assert_array_equal(runs[0].test_loss, runs[1].test_loss)
    np.testing.assert_array_equal(runs[0].train_loss, runs[1].train_loss)
