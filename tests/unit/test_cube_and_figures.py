"""Aggregation into NetCDF cubes, the analysis read off them, and every figure kind rendering."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import cf_units
import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.image import imread

from gammasweep.figures import DATASET_PLOTS, PLOTS, RELATED_PLOTS, TOY_PLOTS, render
from gammasweep.jobs.train import train_pack
from gammasweep.related import diagonal_nets, linear_equilibrium, nonlinear_equilibrium, teacher_student, toy_catapult
from gammasweep.results.analysis import adaptive_cost, eta_max, eta_star, final_metric, fit_power_law
from gammasweep.results.cells import BadCellFile, read_cell
from gammasweep.results.cube import CHUNK_BYTES, BadCubeFile, build_cube, open_cube, set_column_status, write_cube
from gammasweep.results.records import RECORDS, stored_dtype
from gammasweep.sweep.adaptive import INFERRED_DIVERGED, SKIPPED, TRAINED
from gammasweep.theory import toy
from gammasweep.theory.toy import toy_cube

GAMMAS, ETAS = [0.1, 10.0], [1e-3, 1e-1, 1e4]
PROBES = {
    "sharpness": {"examples": 32, "iterations": 4},
    "spectrum": {"examples": 32, "iterations": 5},
    "alignment": {"examples": 16},
    "outputs": {"examples": 32},
    "representation": {"examples": 16},
    "weight_movement": {},
    "noether_charge": {},
    "feature_sparsity": {"examples": 16},
}  # every probe, so that
# every figure kind renders from this cube


@pytest.fixture(scope="module")
def cell_files(tmp_path_factory, digits_files):
    root = tmp_path_factory.mktemp("cells")
    pool, test = digits_files
    files, cells = [], []
    for gamma in GAMMAS:
        for eta in ETAS:
            cells.append(
                {
                    "experiment": "tiny",
                    "dataset": "digits",
                    "model": {"name": "mlp", "width": 32, "depth": 3},
                    "loss": "mse",
                    "batch_size": 16,
                    "steps": 40,
                    "seeds": [0, 1],
                    "data_seed": 0,
                    "gamma": gamma,
                    "eta": eta,
                    "dtype": "float32",
                    "input_shape": [8, 8, 1],
                    "num_classes": 10,
                    "normalization": {"mean": [0.3], "std": [0.4]},
                    "device": "cpu",
                    "float64_below_gamma": 1e-2,
                    "divergence_cap": 1e4,
                    "record_points": 12,
                    "test_batch_size": 200,
                    "test_examples": 397,
                    "probes": PROBES,
                }
            )
            files.append(root / f"g{gamma}_e{eta}.h5")
    train_pack(cells, str(pool), str(test), [str(f) for f in files], "tiny")
    return files


@pytest.fixture(scope="module")
def cube_file(cell_files, tmp_path_factory):
    path = tmp_path_factory.mktemp("cube") / "tiny.nc"
    write_cube(build_cube(cell_files, {"note": "test"}), path)
    return path


def test_cube_layout_units_and_divergence(cube_file):
    cube = open_cube(cube_file)
    assert dict(cube.sizes) == {
        "gamma": 2,
        "eta": 3,
        "seed": 2,
        "step": len(cube["step"]),
        "eval_step": 7,
        "layer": 3,
        "start": 1,
        "ritz": 5,
        "output_example": 32,
        "class": 10,
        "kernel_example": 16,
        "kernel_example_b": 16,
        "layer_pair": 2,
        "stage": 2,
    }
    assert cube["train_loss"].dims == ("gamma", "eta", "seed", "step")
    assert cube["test_loss"].dims == ("gamma", "eta", "seed", "eval_step")
    assert cube["gamma"].values.tolist() == GAMMAS and cube["eta"].values.tolist() == ETAS
    assert cube["eval_step"].values.tolist() == [0, 1, 2, 5, 10, 20, 40]
    assert cube["wall_time"].attrs["units"] == "s" and np.all(cube["wall_time"].values > 0)
    assert json.loads(cube.attrs["experiment_config"]) == {"note": "test"}
    assert json.loads(cube.attrs["cell_params"])["model"]["depth"] == 3
    # The probes' records: their own dimensions after (gamma, eta, seed), labelled where they have names.
    assert cube["sharpness"].dims == ("gamma", "eta", "seed", "eval_step") and cube["sharpness"].attrs["units"] == "1"
    assert cube["weight_movement"].dims == ("gamma", "eta", "seed", "eval_step", "layer")
    assert cube["layer"].values.tolist() == ["hidden.0", "hidden.1", "readout"]
    assert cube["hessian_ritz_value"].dims == ("gamma", "eta", "seed", "eval_step", "start", "ritz")
    assert cube["probe_output"].dims == ("gamma", "eta", "seed", "output_example", "class")
    assert cube["feature_kernel"].shape[-2:] == (16, 16) and "long_name" in cube["ntk_alignment"].attrs
    assert cube["probe_output"].sel(eta=1e4).isnull().all() and cube["probe_output"].sel(eta=1e-3).notnull().all()
    # eta = 1e4 diverges at every gamma; the small etas do not.
    assert cube["diverged"].sel(eta=1e4).all() and not cube["diverged"].sel(eta=[1e-3, 1e-1]).any()
    last = cube["test_loss"].isel(eval_step=-1)
    assert last.sel(eta=1e4).isnull().all() and last.sel(eta=1e-1).notnull().all()


def test_a_cube_is_stored_compressed_its_probes_in_float32_and_opened_lazily(cube_file, cell_files):
    """Losses and divergence in float64, probe records in ``stored_dtype`` (float32 but the Noether charge),
    every numeric variable gzip-compressed: its data take under half the bytes of the same arrays in plain
    float64; opened lazily, a selection reads only its part; the values are the cell files' to float32's
    precision."""
    with open_cube(cube_file) as cube:
        assert not any(v._in_memory for v in cube.data_vars.values())  # xarray's lazy backend arrays: nothing read
        cell = cube["feature_kernel"].sel(gamma=GAMMAS[0], eta=ETAS[0]).values
        assert cell.dtype == np.float32 and not cube["feature_kernel"].variable._in_memory
        for path in cell_files:
            curves, params, _ = read_cell(path)
            at = {"gamma": params["gamma"], "eta": params["eta"]}
            np.testing.assert_array_equal(cube["train_loss"].sel(at).values, curves.train_loss)
            for name, record in curves.probes.items():
                np.testing.assert_allclose(cube[name].sel(at).values, record.values, rtol=1e-6, err_msg=name)
        names = list(cube.data_vars)
    with h5py.File(cube_file) as f:
        for name in names:
            assert f[name].compression == "gzip" and f[name].shuffle, name
        for name in ("train_loss", "test_loss", "test_accuracy", "noether_charge", "feature_kernel", "sharpness"):
            assert f[name].dtype == (stored_dtype(name) if name in RECORDS else np.float64), name
        assert f["feature_kernel"].chunks[:2] == (1, 1) or f["feature_kernel"].size * 4 <= CHUNK_BYTES
        stored = sum(f[name].id.get_storage_size() for name in names)  # bytes on disk, compressed
        plain = sum(f[name].size * 8 for name in names)  # in float64, uncompressed
    assert stored < 0.5 * plain, (stored, plain)


def test_a_cube_replaced_while_open_lazily_is_read_anew_and_the_open_one_keeps_its_own(tmp_path):
    """write_cube replaces a cube atomically (a new file renamed over the name), so a figure job still reading
    the old one lazily reads the old values to the end, and the next open reads the new file."""
    path = tmp_path / "toy.nc"
    old, new = (toy_cube(np.logspace(-2, 2, 3), np.logspace(-6, 2, 9), depth, 20, "mse") for depth in (2, 3))
    write_cube(old, path)
    with open_cube(path) as reading:
        write_cube(new, path)
        with open_cube(path) as fresh:
            np.testing.assert_array_equal(fresh["eta_max_theory"].values, new["eta_max_theory"].values)
        np.testing.assert_array_equal(reading["eta_max_theory"].values, old["eta_max_theory"].values)
    assert not (old["eta_max_theory"] == new["eta_max_theory"]).all()


UDUNITS = {"1", "s"}  # every unit string a cube uses; each parses in UDUNITS-2 (the test below, with cf-units)


def test_every_unit_a_cube_holds_is_a_udunits_unit(cube_file, toy_cube_file):
    """CF units must be UDUNITS-2 strings: counts and steps are "1", curvatures (on the scale of 1/eta) too."""
    tables = [RECORDS, toy._TOY_ATTRS, diagonal_nets.ABOUT, teacher_student.ABOUT, toy_catapult.ABOUT]
    tables += [linear_equilibrium.ABOUT, nonlinear_equilibrium.AUTOENCODER_ABOUT]
    tables += [nonlinear_equilibrium.SCALE_INVARIANT_ABOUT]
    units = {about[-1] for table in tables for about in table.values()}
    for path in (cube_file, toy_cube_file):
        with open_cube(path) as cube:
            units |= {v.attrs["units"] for v in cube.variables.values() if "units" in v.attrs}
    assert units <= UDUNITS, units - UDUNITS


def test_the_units_cubes_use_parse_in_udunits():
    """UDUNITS-2 with the CF extensions (cf-units bundles it) accepts every unit the cubes write."""
    for unit in UDUNITS:
        assert cf_units.Unit(unit).is_unknown() is False
    with pytest.raises(ValueError):
        cf_units.Unit("1/eta")  # what the curvature records said before: no UDUNITS unit


def test_build_cube_rejects_mismatched_cells(cell_files, tmp_path, digits_files):
    other = tmp_path / "other.h5"
    params = json.loads(__import__("h5py").File(cell_files[0]).attrs["params"]) | {"steps": 30, "gamma": 5.0}
    train_pack([params], str(digits_files[0]), str(digits_files[1]), [str(other)])
    with pytest.raises(ValueError, match="other steps or seeds"):
        build_cube([cell_files[0], other])


def test_truncated_or_misplaced_cell_files_are_named_with_the_rebuild_command(cell_files, tmp_path):
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(cell_files[0].read_bytes()[:2000])
    with pytest.raises(BadCellFile, match=rf"cell file {truncated} cannot be read.*rm '{truncated}' && snakemake"):
        build_cube([cell_files[1], truncated])
    # cell_files[1] is the cell gamma = 0.1, eta = 1e-1 (GAMMAS x ETAS order); the params the plan gives a cell
    # (all of them, test_aggregate.py) are here the file's own.
    params = read_cell(cell_files[1])[1]
    with pytest.raises(BadCellFile, match=r"holds other parameters than the config gives.*'eta': \(0.1, 0.001\)"):
        build_cube([cell_files[1]], expected=[params | {"eta": 1e-3}])
    cube = build_cube([cell_files[1]], expected=[params])
    assert cube.sizes["gamma"] == 1


@pytest.mark.parametrize(
    "item,attribute,value,problem",
    [
        ("/", "params", "{not json", r"has no readable JSON in attribute 'params' \(JSONDecodeError"),
        ("/", "params", "[1, 2]", r"holds a list in attribute 'params', not a dict"),
        ("/", "provenance", "null", r"holds a NoneType in attribute 'provenance', not a dict"),
        ("probes/sharpness", "dims", "{broken", r"has no readable JSON in attribute 'dims' of /probes/sharpness"),
        ("probes/sharpness", "labels", KeyError, r"has no readable JSON in attribute 'labels' of /probes/sharpness"),
        ("probes/sharpness", "dims", '["member"]', r"has a probe record /probes/sharpness that does not fit its dims"),
    ],
)
def test_a_cell_file_with_broken_attributes_is_named_with_the_rebuild_command(
    cell_files, tmp_path, item, attribute, value, problem
):
    broken = tmp_path / "broken.h5"
    shutil.copy(cell_files[0], broken)
    with h5py.File(broken, "r+") as f:
        if value is KeyError:
            del f[item].attrs[attribute]
        else:
            f[item].attrs[attribute] = value
    path = re.escape(str(broken))
    with pytest.raises(BadCellFile, match=rf"cell file {path} {problem}.*; rebuild it with: rm '{path}' && snakemake"):
        read_cell(broken)


def test_an_unreadable_cube_is_named_with_the_rebuild_command(cube_file, tmp_path):
    truncated, garbage = tmp_path / "truncated.nc", tmp_path / "garbage.nc"
    truncated.write_bytes(cube_file.read_bytes()[:2000])
    garbage.write_text("not a cube")
    for path in (truncated, garbage, tmp_path / "missing.nc"):
        name = re.escape(str(path))
        with pytest.raises(
            BadCubeFile, match=rf"cube {name} cannot be read \(.*; rebuild it with: rm '{name}' && snakemake"
        ):
            open_cube(path)


def test_an_adaptive_cube_records_trained_inferred_and_skipped_cells(cell_files, cube_file, tmp_path):
    """The trained cells of the fixture on a grid with one more eta below (skipped) and above (inferred)."""
    etas = [1e-5, *ETAS, 1e6]
    cube = build_cube(cell_files, grid=(GAMMAS, etas))
    for gamma in GAMMAS:
        set_column_status(cube, gamma, [SKIPPED, TRAINED, TRAINED, TRAINED, INFERRED_DIVERGED], {4: 0})
    assert cube["cell_status"].attrs["flag_meanings"] == "trained inferred_diverged skipped"
    assert (cube["cell_status"].sel(eta=ETAS) == TRAINED).all()
    assert cube["diverged"].sel(eta=1e6).all() and (cube["diverged_step"].sel(eta=1e6) == 0).all()
    assert not cube["diverged"].sel(eta=1e-5).any() and cube["test_loss"].sel(eta=1e-5).isnull().all()
    full = open_cube(cube_file)
    xr.testing.assert_identical(cube["test_loss"].sel(eta=ETAS), full["test_loss"])
    assert eta_max(cube).values.tolist() == eta_max(full).values.tolist()
    assert eta_star(cube).values.tolist() == eta_star(full).values.tolist()
    path = tmp_path / "adaptive.nc"
    write_cube(cube, path)
    outputs = {fmt: tmp_path / f"coverage.{fmt}" for fmt in ("pdf", "png", "csv")}
    render("adaptive_coverage", [path, cube_file], {}, outputs)
    table = pd.read_csv(outputs["csv"])
    assert table["trained"].tolist() == [3, 3] and (table["eta_max"] == table["eta_max_full"]).all()
    assert adaptive_cost(open_cube(path)) == {
        "trained_cells": 6,
        "grid_cells": 10,
        "bracket_cells": 0,
        "cell_steps": 6 * 40,
        "full_cell_steps": 10 * 40,
    }


def _synthetic_cube() -> xr.Dataset:
    """gamma x eta grid with a known divergence edge and a known best eta per gamma."""
    gammas, etas = np.array([0.01, 1.0, 100.0]), np.array([1e-3, 1e-2, 1e-1, 1.0])
    diverged = np.zeros((3, 4, 1), bool)
    diverged[0, 2:], diverged[1, 3:] = True, True  # edges: 1e-2, 1e-1, 1.0 (nothing diverges)
    loss = np.array([[0.5, 0.4, np.nan, np.nan], [0.5, 0.2, 0.3, np.nan], [0.9, 0.8, 0.7, 0.1]])[..., None, None]
    return xr.Dataset(
        {"test_loss": (("gamma", "eta", "seed", "eval_step"), loss), "diverged": (("gamma", "eta", "seed"), diverged)},
        coords={"gamma": gammas, "eta": etas, "seed": [0], "eval_step": [10]},
    )


def test_eta_max_and_eta_star_known_answers():
    cube = _synthetic_cube()
    assert eta_max(cube).values.tolist() == [1e-2, 1e-1, 1.0]
    assert eta_star(cube, "test_loss").values.tolist() == [1e-2, 1e-2, 1.0]
    assert np.isnan(final_metric(cube).sel(gamma=0.01, eta=1e-1))


def test_power_law_fit_recovers_exponent():
    gammas = np.logspace(-3, 3, 13)
    fit = fit_power_law(gammas, 3.0 * gammas**2, 0, 1.0)
    assert fit.slope == pytest.approx(2.0) and 10**fit.intercept == pytest.approx(3.0) and fit.points == 7
    assert np.isnan(fit_power_law(gammas, gammas, 1e5, 1e6).slope)


@pytest.fixture(scope="module")
def toy_cube_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "toy.nc"
    write_cube(toy_cube(np.logspace(-2, 2, 5), np.logspace(-6, 2, 17), depth=3, steps=50, loss="mse"), path)
    return path


def test_cubes_and_figures_are_read_without_torch(repo):
    """Figure jobs start fast: reading cubes and drawing figures never imports torch."""
    code = (
        "import sys, gammasweep.figures, gammasweep.results.cube; assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "plot", sorted(set(PLOTS) - RELATED_PLOTS - DATASET_PLOTS)
)  # those: test_related*.py, test_sample_grid.py
def test_every_figure_kind_renders_from_a_cube(plot, cube_file, toy_cube_file, tmp_path):
    outputs = {fmt: tmp_path / f"fig.{fmt}" for fmt in ("pdf", "png", "csv")}
    render(plot, [toy_cube_file if plot in TOY_PLOTS else cube_file], {}, outputs, title=f"test {plot}")
    assert outputs["pdf"].read_bytes()[:5] == b"%PDF-"
    image = imread(outputs["png"])
    assert image.shape[0] > 200 and image.shape[1] > 200 and image[..., :3].std() > 0.05  # not blank
    table = pd.read_csv(outputs["csv"])
    assert len(table) > 0
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written left behind


def test_eta_star_table_holds_fits_with_expected_slopes(cube_file, tmp_path):
    outputs = {fmt: tmp_path / f"s.{fmt}" for fmt in ("pdf", "png", "csv")}
    render("eta_star_scaling", [cube_file, cube_file], {"lazy_max": 0.1, "rich_min": 10}, outputs)
    table = pd.read_csv(outputs["csv"])
    assert set(table["quantity"]) == {"eta_max", "eta_star"} and set(table["regime"]) == {"lazy", "rich"}
    assert table.loc[table["regime"] == "rich", "expected_slope"].iloc[0] == pytest.approx(2 / 3)


def test_feature_sparsity_curves_draw_every_trained_cell_or_each_gammas_eta_star(cube_file, tmp_path):
    outputs = {fmt: tmp_path / f"f.{fmt}" for fmt in ("pdf", "png", "csv")}
    render("feature_sparsity_curves", [cube_file], {}, outputs)
    every = pd.read_csv(outputs["csv"])
    assert len(every) == 2 * 2  # 2 gamma x the 2 etas that did not diverge
    assert {"feature_sparsity_hidden.1", "feature_sparsity_readout"} <= set(every.columns)
    assert every["feature_sparsity_readout"].between(0, 1).all()
    render("feature_sparsity_curves", [cube_file], {"at_eta_star": True}, outputs)
    best = pd.read_csv(outputs["csv"])
    expected = eta_star(open_cube(cube_file))
    assert sorted(zip(best["gamma"], best["eta"])) == sorted(zip(expected["gamma"].values, expected.values))
