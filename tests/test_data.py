"""The online stream: one seeded pass over a pool of one or several files, read block by block."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gammasweep.data import OnlineStream, read_images, write_images


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
