"""The online trainer: divergence as a result, determinism, ensembles, recording, float64."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import torch
from conftest import h5_datasets, make_setup

from gammasweep.data.stream import OnlineStream
from gammasweep.jobs.train import train_pack
from gammasweep.results.cells import read_cell
from gammasweep.sweep import train as train_module
from gammasweep.sweep.models import build_model
from gammasweep.sweep.train import Members, eval_steps, record_steps, train

QUIET = {"log": lambda m: None}


def test_eval_and_record_steps():
    assert eval_steps(200).tolist() == [0, 1, 2, 5, 10, 20, 50, 100, 200]
    assert eval_steps(7).tolist() == [0, 1, 2, 5, 7]
    rec = record_steps(1000, 50)
    assert rec[0] == 0 and rec[-1] == 999 and np.all(np.diff(rec) > 0) and 30 <= len(rec) <= 50


def test_stream_is_one_pass_in_seeded_order(digits_files):
    pool = digits_files[0]
    a, b = OnlineStream(pool, 10, 100, data_seed=1), OnlineStream(pool, 10, 100, data_seed=1)
    other = OnlineStream(pool, 10, 100, data_seed=2)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, other.images)
    # No image reused within the pass (the pool's images are distinct digits).
    flat = a.images.reshape(len(a.images), -1).numpy()
    assert len(np.unique(flat, axis=0)) == len(
        np.unique(OnlineStream(pool, 1, 1000, 1).images.reshape(1000, -1).numpy(), axis=0)
    )
    with pytest.raises(ValueError, match="needs steps x batch"):
        OnlineStream(pool, 100, 100, data_seed=0)


def test_divergence_is_recorded_per_member_and_survivors_are_unaffected(digits_files, test_set):
    pool = digits_files[0]
    setup = make_setup(steps=30)
    stream = OnlineStream(pool, 16, 30, data_seed=0)
    both = train(setup, Members([0, 0], [1.0, 1.0], [0.05, 1e6]), stream, *test_set, **QUIET)
    alone = train(setup, Members([0], [1.0], [0.05]), stream, *test_set, **QUIET)
    assert both.diverged.tolist() == [False, True]
    assert both.diverged_step.tolist() == [-1, 1]  # step 0 has f = 0: the first update blows up
    # Recorded values are real up to the divergence, NaN after it.
    assert both.train_loss[1, 0] == pytest.approx(0.1) and np.all(np.isnan(both.train_loss[1, 1:]))
    assert both.test_loss[1, 1] > 1e4 and np.all(np.isnan(both.test_loss[1, 2:]))
    np.testing.assert_allclose(both.test_loss[0], alone.test_loss[0], rtol=1e-5)
    np.testing.assert_allclose(both.train_loss[0], alone.train_loss[0], rtol=1e-5)


def test_a_blow_up_by_the_last_update_is_recorded_as_divergence(digits_files, test_set):
    """No training loss reads the weights after the last update: their blow-up is read off the final test loss."""
    stream = OnlineStream(digits_files[0], 16, 1, data_seed=0)
    curves = train(make_setup(steps=1), Members([0, 0], [1.0, 1.0], [0.05, 1e6]), stream, *test_set, **QUIET)
    assert curves.test_loss[1, -1] > 1e4  # the weights after update 0
    assert curves.diverged.tolist() == [False, True] and curves.diverged_step.tolist() == [-1, 1]


def test_divergence_cap_counts_as_divergence(digits_files, test_set):
    setup = make_setup(steps=10, divergence_cap=0.05)  # below the initial MSE of 0.1
    curves = train(setup, Members([0], [1.0], [1e-6]), OnlineStream(digits_files[0], 16, 10, 0), *test_set, **QUIET)
    assert curves.diverged.tolist() == [True] and curves.diverged_step.tolist() == [0]


def test_without_a_cap_a_catapult_is_a_result_and_only_a_non_finite_loss_diverges(digits_files, test_set):
    """The authors' rule (NaN only). Just above the lazy edge (gamma = 1e-4, float64) the loss catapults
    to ~1e5 and comes back down: a cap of 1e4 called that divergence, and since the catapult's height
    goes as 1/gamma^2 a fixed cap moved the small-gamma edge (docs/fidelity.md); far above, it overflows."""
    members = Members([0, 0], [1e-4, 1e-4], [10**-6.5, 10**-5.5])
    runs = {
        cap: train(
            make_setup(steps=80, dtype=torch.float64, divergence_cap=cap, record_points=80),
            members,
            OnlineStream(digits_files[0], 16, 80, 0),
            *test_set,
            **QUIET,
        )
        for cap in (1e4, None)
    }
    assert runs[1e4].diverged.tolist() == [True, True]
    catapult = runs[None].train_loss[0]
    assert runs[None].diverged.tolist() == [False, True]
    assert np.nanmax(catapult) > 1e4 and catapult[-1] < np.nanmax(catapult) / 10


def test_members_with_different_seeds_differ_and_all_learn(digits_files, test_set):
    setup = make_setup(steps=60)
    curves = train(
        setup, Members([0, 1, 2], [1.0] * 3, [0.5] * 3), OnlineStream(digits_files[0], 16, 60, 0), *test_set, **QUIET
    )
    final = curves.test_loss[:, -1]
    assert len(set(final.round(8))) == 3
    assert np.all(final < curves.test_loss[:, 0])  # every member learns
    assert np.all(curves.test_accuracy[:, -1] > 0.3)


def _params(tmp_path, **overrides) -> dict:
    params = {
        "experiment": "t",
        "dataset": "digits",
        "model": {"name": "mlp", "width": 32, "depth": 3},
        "loss": "cross_entropy",
        "batch_size": 16,
        "steps": 25,
        "seeds": [0, 1],
        "data_seed": 0,
        "gamma": 1e-3,
        "eta": 1e-5,
        "dtype": "float64",
        "input_shape": [8, 8, 1],
        "num_classes": 10,
        "normalization": {"mean": [0.3], "std": [0.4]},
        "device": "cpu",
        "float64_below_gamma": 1e-2,
        "divergence_cap": 1e4,
        "record_points": 10,
        "test_batch_size": 100,
        "test_examples": 300,
    }
    return params | overrides


def test_identical_seeds_give_identical_cell_files(tmp_path, digits_files):
    pool, test = digits_files
    for name in ("a.h5", "b.h5"):
        train_pack([_params(tmp_path)], str(pool), str(test), [str(tmp_path / name)])
    first, second = h5_datasets(tmp_path / "a.h5"), h5_datasets(tmp_path / "b.h5")
    assert set(first) == set(second) and "test_loss" in first
    for key, values in first.items():
        np.testing.assert_array_equal(values, second[key], err_msg=key)
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        assert a.attrs["params"] == b.attrs["params"]
        assert a["test_loss"].dtype == np.float64 and a["test_loss"].shape == (2, len(eval_steps(25)))


def test_a_cell_file_records_its_jobs_provenance(tmp_path, digits_files, monkeypatch):
    """The SLURM job, the device, and the versions: torchvision, the executor plugin, the CUDA stack."""
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    pool, test = digits_files
    train_pack([_params(tmp_path, steps=5)], str(pool), str(test), [str(tmp_path / "cell.h5")])
    _, _, provenance = read_cell(tmp_path / "cell.h5")
    assert provenance["slurm_job_id"] == "4242" and provenance["device"].startswith("cpu")
    recorded = {"torchvision", "snakemake-executor-plugin-slurm", "cuda", "cudnn", "nvidia_driver"}
    assert recorded <= set(provenance["versions"])


def test_a_cells_optimizer_reaches_its_training_job(tmp_path, digits_files, test_set):
    """A cell's `optimizer` (the config's, resolved) is the one its job trains with."""
    pool, test = digits_files
    cell = _params(tmp_path, gamma=1.0, eta=1e-2, optimizer={"name": "signsgd"})
    train_pack([cell], str(pool), str(test), [str(tmp_path / "sign.h5")])
    curves, params, _ = read_cell(tmp_path / "sign.h5")
    assert params["optimizer"] == {"name": "signsgd"}
    setup = make_setup(steps=25, dtype=torch.float64, loss="cross_entropy", width=32, test_batch_size=100)
    stream = OnlineStream(pool, 16, 25, 0)
    images, labels = test_set[0][:300], test_set[1][:300]
    sign = train(
        dataclasses.replace(setup, optimizer={"name": "signsgd"}),
        Members([0, 1], [1.0] * 2, [1e-2] * 2),
        stream,
        images,
        labels,
        **QUIET,
    )
    plain = train(setup, Members([0, 1], [1.0] * 2, [1e-2] * 2), stream, images, labels, **QUIET)
    np.testing.assert_array_equal(curves.test_loss, sign.test_loss)
    assert not np.allclose(sign.test_loss[:, -1], plain.test_loss[:, -1])


def test_float64_cells_keep_precision_at_tiny_gamma(digits_files, test_set):
    """At gamma = 1e-5 the centered difference needs float64: float32 loses the signal."""
    stream = OnlineStream(digits_files[0], 16, 20, 0)
    runs = {
        dt: train(make_setup(steps=20, dtype=dt), Members([0], [1e-5], [1e-11]), stream, *test_set, **QUIET)
        for dt in (torch.float32, torch.float64)
    }
    f64 = runs[torch.float64]
    assert not f64.diverged[0] and f64.test_loss[0, -1] < f64.test_loss[0, 0]
    assert abs(runs[torch.float32].test_loss[0, -1] - f64.test_loss[0, -1]) > 1e-4 * f64.test_loss[0, -1]


PACK = Members(seeds=[0, 1, 0, 1, 0, 2], gammas=[1.0, 1.0, 0.1, 10.0, 3.0, 0.3], etas=[0.05, 0.5, 0.02, 2.0, 0.2, 0.1])


def _alone(setup, stream, test_set, k: int, members: Members = PACK):
    one = Members([members.seeds[k]], [members.gammas[k]], [members.etas[k]])
    return train(setup, one, stream, *test_set, **QUIET)


@pytest.mark.parametrize(
    "model",
    [{"name": "mlp", "width": 32, "depth": 3}, {"name": "cnn", "width": 4, "padding": 1}],
    ids=lambda m: m["name"],
)
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)], ids=["float64", "float32"])
def test_a_pack_trains_each_cell_exactly_as_alone(digits_files, test_set, model, dtype, rtol):
    """A mix of gamma, eta and seeds trained as one pack equals each cell trained on its own."""
    probes = {
        "sharpness": {"examples": 32, "iterations": 4},
        "spectrum": {"examples": 32, "iterations": 4},
        "alignment": {"examples": 12},
        "outputs": {"examples": 12},
        "representation": {"examples": 12},
        "weight_movement": {},
        "noether_charge": {},
    }
    setup = make_setup(steps=30, dtype=dtype, model=model, probes=probes)
    stream = OnlineStream(digits_files[0], 16, 30, 0)
    pack = train(setup, PACK, stream, *test_set, **QUIET)
    assert not pack.diverged.any() and np.all(pack.test_loss[:, -1] < pack.test_loss[:, 0])
    for k in range(len(PACK.seeds)):
        alone = _alone(setup, stream, test_set, k)
        assert sorted(pack.arrays()) == sorted(alone.arrays())
        for field, values in pack.arrays().items():
            if field not in ("step", "eval_step"):
                scale = np.nanmax(np.abs(values[k])) if np.isfinite(values[k]).any() else 0.0  # centered outputs near 0
                np.testing.assert_allclose(
                    values[k], alone.arrays()[field][0], rtol=rtol, atol=rtol * scale, err_msg=field
                )


@pytest.mark.parametrize("chunk_bytes", [train_module.CPU_CHUNK_BYTES, 1], ids=["one-chunk", "chunks-of-one"])
def test_cells_diverging_at_step_one_leave_the_survivors_of_their_pack_untouched(
    digits_files, test_set, monkeypatch, chunk_bytes
):
    """Four of six cells blow up at step 1 (NaN/inf weights); the pack compacts them away, and the
    two survivors' curves equal their single-cell runs to float64 precision, whether the pack is
    one forward/backward pass per step or one per member (how large packs run on a CPU)."""
    monkeypatch.setattr(train_module, "CPU_CHUNK_BYTES", chunk_bytes)
    members = Members(
        seeds=[0, 1, 0, 1, 0, 1], gammas=[1.0, 1.0, 1.0, 0.1, 1.0, 1e-2], etas=[1e6, 0.05, 1e30, 0.005, 1e12, 1e8]
    )
    setup = make_setup(steps=40, dtype=torch.float64)
    stream = OnlineStream(digits_files[0], 16, 40, 0)
    pack = train(setup, members, stream, *test_set, log=lambda m: None, check_every=4)
    assert pack.diverged.tolist() == [True, False, True, False, True, True]
    assert pack.diverged_step.tolist() == [1, -1, 1, -1, 1, 1]
    for k in (0, 2, 4, 5):
        assert np.all(np.isnan(pack.test_loss[k, 2:])) and np.all(np.isnan(pack.train_loss[k, 1:]))
    for k in (1, 3):
        alone = _alone(setup, stream, test_set, k, members)
        np.testing.assert_allclose(pack.test_loss[k], alone.test_loss[0], rtol=1e-12)
        np.testing.assert_allclose(pack.train_loss[k], alone.train_loss[0], rtol=1e-12)


def test_a_resnet18_pack_in_chunks_of_one_trains_each_cell_as_alone(digits_files, test_set, monkeypatch):
    """Every row keeps its own BatchNorm running statistics, sliced with its chunk and compacted with
    its weights; theta_0 keeps one per seed: each survivor of a ResNet-18 pack trained one row per
    chunk, one row diverged and dropped, has the test losses (on its running statistics) of its cell
    trained alone."""
    monkeypatch.setattr(train_module, "CPU_CHUNK_BYTES", 1)
    members = Members(seeds=[0, 1, 0], gammas=[1.0, 1.0, 3.0], etas=[1e8, 0.05, 0.2])  # the first diverges
    setup = make_setup(steps=12, dtype=torch.float64, model={"name": "resnet18", "width": 2})
    stream = OnlineStream(digits_files[0], 16, 12, 0)
    pack = train(setup, members, stream, *test_set, check_every=4, **QUIET)
    assert pack.diverged.tolist() == [True, False, False]
    for k in (1, 2):
        alone = _alone(setup, stream, test_set, k, members)
        np.testing.assert_allclose(pack.test_loss[k], alone.test_loss[0], rtol=1e-10)
        np.testing.assert_allclose(pack.train_loss[k], alone.train_loss[0], rtol=1e-10)


def test_a_pool_streamed_in_windows_trains_exactly_as_one_held_whole(digits_files, test_set):
    """A pack whose pool does not fit the device budget (windows of 7 of 30 steps, one batch of 16
    images 8x8 each) gives bit-identical curves to the same pack with the pool held whole."""
    setup = make_setup(steps=30, dtype=torch.float64)
    held, windowed = (OnlineStream(digits_files[0], 16, 30, 0) for _ in range(2))
    messages = []
    reference = train(setup, PACK, held, *test_set, log=messages.append)
    curves = train(setup, PACK, windowed, *test_set, log=messages.append, pool_budget_bytes=7 * 16 * (64 + 8))
    assert held.window_steps is None and windowed.window_steps == 7
    placements = [m for m in messages if m.startswith("training pool")]
    assert len(placements) == 2 and "held on cpu" in placements[0] and "in windows of 7 steps" in placements[1]
    assert not reference.diverged.any() and sorted(curves.arrays()) == sorted(reference.arrays())
    for name, values in reference.arrays().items():
        np.testing.assert_array_equal(curves.arrays()[name], values, err_msg=name)


def test_chunk_size_fits_the_cpu_budget(monkeypatch):
    model = build_model({"name": "mlp", "width": 32, "depth": 3}, (8, 8, 1), 10, seeds=range(6))
    weights = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.randn(16, 8, 8, 1)
    one = sum(v[0].numel() * 4 for v in weights.values())  # float32 bytes of one member's weights
    saved = 16 * (64 + 32 + 32 + 32 + 32) * 4  # at least: the input and the pre/post-ReLU activations
    monkeypatch.setattr(train_module, "CPU_CHUNK_BYTES", 1)
    assert train_module.chunk_size(model, weights, x) == 1
    monkeypatch.setattr(train_module, "CPU_CHUNK_BYTES", 10 * (2 * one + saved))
    assert 5 <= train_module.chunk_size(model, weights, x) <= 10
