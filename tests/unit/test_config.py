"""Config validation (schema + cross-checks) and the expansion of experiments into cells."""

from __future__ import annotations

import ast
import copy
import inspect
import math
import re
import textwrap
from collections.abc import Callable

import pytest
import yaml

from gammasweep.figures import PLOTS, open_input
from gammasweep.plan.config import ConfigError, generator_config, grid_values, load_schema, value_key
from gammasweep.plan.plan import Plan, cell_path
from gammasweep.plan.plots import PLOT_KINDS
from gammasweep.probes.recorder import PROBES
from gammasweep.related.experiments import KINDS


@pytest.fixture(scope="module")
def schema(repo):
    return load_schema(repo / "config" / "schema.yaml")


@pytest.fixture(scope="module")
def default_config(repo):
    return yaml.safe_load((repo / "config" / "config.yaml").read_text())


def test_paper_grids_are_the_authors(repo, schema):
    plan = Plan.from_files(repo / "config" / "paper.yaml", repo / "config" / "schema.yaml")
    gammas, etas = plan.grids["mlp3_mnist1m_mse"]
    assert len(gammas) == 21 and len(etas) == 49
    assert min(gammas.values()) == pytest.approx(1e-5) and max(gammas.values()) == pytest.approx(1e5)
    assert min(etas.values()) == pytest.approx(1e-12) and max(etas.values()) == pytest.approx(1e12)
    assert "3.162e-01" in gammas and "1.000e+12" in etas
    assert len(plan.cells("mlp3_mnist1m_mse")) == 21 * 49


def test_the_paper_generator_is_the_authors(repo):
    """MNIST-1M's generator: the authors' unrescaled betas, [0, 1] data, Adam 1e-4 decayed linearly over
    20 epochs of the 60,000 MNIST training images at batch 256, and their sampler and storage."""
    plan = Plan.from_files(repo / "config" / "paper.yaml", repo / "config" / "schema.yaml")
    dataset = plan.dataset("mnist1m")
    config = generator_config(dataset["source"], dataset["generator"])
    assert (config.timesteps, config.betas, config.data_range) == (400, (1e-4, 0.02), "unit")
    assert (config.learning_rate, config.lr_schedule, config.batch_size) == (1e-4, "linear", 256)
    assert config.train_steps == 20 * math.ceil(60_000 / 256) and config.ema_decay == 0.0
    sampling = dataset["sampling"]
    assert (sampling["sampling_steps"], sampling["clip_denoised"], sampling["variance"]) == (None, False, "beta")
    assert (sampling["storage"], sampling["guidance_weight"]) == ("float32", 0.5)


def test_grid_forms():
    assert grid_values({"min": 0.01, "max": 100, "per_decade": 1}, "g") == pytest.approx([0.01, 0.1, 1, 10, 100])
    assert grid_values([3.0, 1.0], "g") == [1.0, 3.0]
    with pytest.raises(ConfigError, match="'x.eta': min and max must be powers"):
        grid_values({"min": 0.02, "max": 100, "per_decade": 1}, "x.eta")
    with pytest.raises(ConfigError, match="closer than 4 significant digits"):
        grid_values([1.0, 1.00001], "g")
    assert value_key(10**-2.5) == "3.162e-03"


def test_cell_params_resolve_dtype_and_overrides(default_config, schema):
    config = copy.deepcopy(default_config)
    config["experiments"]["mlp_mse"]["training"] = {"divergence_cap": 7.0}
    plan = Plan(config, schema)
    small = plan.cell_params("mlp_mse", "1.000e-03", "1.000e-07")
    large = plan.cell_params("mlp_mse", "1.000e+02", "1.000e-07")
    assert small["dtype"] == "float64" and large["dtype"] == "float32"
    assert small["divergence_cap"] == 7.0 and small["record_points"] == config["training"]["record_points"]
    assert small["seeds"] == [0, 1] and small["input_shape"] == [8, 8, 1]
    assert cell_path("mlp_mse", "1.000e-03", "1.000e-07") == plan.cell_files("mlp_mse")[0]
    assert plan.cell_identities("mlp_mse")[0] == small  # all its params: the file of another configuration fails
    with pytest.raises(ConfigError, match="no cell"):
        plan.cell_params("mlp_mse", "2.000e-03", "1.000e-07")
    # the optimizer, resolved: what shapes the results, with Adam's defaults
    assert small["optimizer"] == {"name": "sgd"}
    assert plan.cell_params("mlp_mse_adam", "1.000e-03", "1.000e-07")["optimizer"] == {
        "name": "adam",
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-12,
    }


def _mutate(config: dict, dotted: str, value) -> dict:
    config = copy.deepcopy(config)
    *path, last = dotted.split(".")
    node = config
    for key in path:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return config


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("experiments.mlp_mse.gamma", [0.1, float("nan")]),  # would schedule a gamma_nan job
        ("checkpoint_minutes", float("nan")),  # would switch periodic checkpoints off
        ("experiments.mlp_mse.eta", {"min": 1e-7, "max": float("inf"), "per_decade": 1}),  # an OverflowError
        ("training.divergence_cap", float("inf")),
    ],
)
def test_nan_and_infinite_numbers_fail_naming_the_key(default_config, schema, key, value):
    with pytest.raises(
        ConfigError, match=rf"config key '{re.escape(key)}(\.\d+|\.max)?': (nan|inf) is not a finite number"
    ):
        Plan(_mutate(default_config, key, value), schema)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("experiments.mlp_mse.model.width", -4, r"'experiments.mlp_mse.model.width': -4 is less than the minimum of 1"),
        (
            "experiments.mlp_mse.loss",
            "hinge",
            r"'experiments.mlp_mse.loss': 'hinge' is not one of \['mse', 'cross_entropy'\]",
        ),
        ("experiments.mlp_mse.steps", KeyError, r"'experiments.mlp_mse': 'steps' is a required property"),
        (
            "experiments.mlp_mse.model.name",
            "transformer",
            r"'experiments.mlp_mse.model.name': 'transformer' is not one of",
        ),
        ("experiments.mlp_mse.model.depht", 3, r"'experiments.mlp_mse.model'.*'depht' was unexpected"),
        ("experiments.mlp_mse.gamma", [], r"'experiments.mlp_mse.gamma'"),
        ("experiments.mlp_mse.eta", {"min": 1, "max": 10}, r"'experiments.mlp_mse.eta'"),
        ("training.device", "tpu", r"'training.device': 'tpu' does not match"),
        ("figures.eta_star_mlp_mse.plot", "violin", r"'figures.eta_star_mlp_mse.plot': 'violin' is not one of"),
        (
            "datasets.digits.normalization.std",
            [0.0],
            r"'datasets.digits.normalization.std.0': 0.0 is less than or equal",
        ),
        ("experiments.mlp_mse.dataset", "cifar", r"'experiments.mlp_mse.dataset': unknown dataset 'cifar'"),
        (
            "figures.eta_star_mlp_mse.experiments",
            ["nope"],
            r"'figures.eta_star_mlp_mse.experiments': unknown experiment 'nope'",
        ),
        (
            "experiments.mlp_mse.batch_size",
            10_000,
            r"'experiments.mlp_mse': steps x batch_size = 2000000 exceeds the 3200 images",
        ),
        ("datasets.digits.normalization.mean", [0.1, 0.2, 0.3], r"'datasets.digits.normalization.mean': needs 1 value"),
        (
            "datasets.digits.generator.dim_mults",
            [1, 2, 2, 2, 2],
            r"'datasets.digits.generator': .*image_size=8 must be a positive multiple",
        ),
        (
            "experiments.mlp_mse_adaptive.eta_grid",
            "sparse",
            r"'experiments.mlp_mse_adaptive.eta_grid': 'sparse' is not one of",
        ),
        (
            "experiments.mlp_mse_adaptive.adaptive.depth_decades",
            0,
            r"'experiments.mlp_mse_adaptive.adaptive.depth_decades': 0 is less",
        ),
        (
            "experiments.mlp_mse_adaptive.adaptive.bracket_steps",
            201,
            r"'experiments.mlp_mse_adaptive.adaptive.bracket_steps': longer than",
        ),
        (
            "experiments.mlp_mse_adaptive.eta_grid",
            "full",
            r"'experiments.mlp_mse_adaptive.adaptive': only used with `eta_grid: adaptive`",
        ),
        (  # more than the 5000 test images
            "experiments.mlp_mse_adaptive.training.probes.alignment.examples",
            6000,
            r"'experiments.mlp_mse_adaptive.training.probes.alignment.examples': more than the 3200 images",
        ),
        (  # fewer than the test images, but more than the 200 x 16 of the training pass
            "experiments.mlp_mse_adaptive.training.probes.sharpness.examples",
            4000,
            r"'experiments.mlp_mse_adaptive.training.probes.sharpness.examples': more than the 3200 images a probe "
            r"batch is taken from \(test_examples 5000, or the training pass of steps x batch_size = 3200\)",
        ),
        (
            "experiments.mlp_mse_adaptive.training.probes.weight_movement",
            {"examples": 3},
            r"'experiments.mlp_mse_adaptive.training.probes.weight_movement'.*'examples' was unexpected",
        ),
        (
            "experiments.mlp_mse_adaptive.training.probes.hessian",
            {},
            r"'experiments.mlp_mse_adaptive.training.probes'.*'hessian' was unexpected",
        ),
        (
            "experiments.mlp_mse_adam.optimizer.name",
            "lion",
            r"'experiments.mlp_mse_adam.optimizer.name': 'lion' is not one of",
        ),
        (
            "experiments.mlp_mse_adam.optimizer.beta2",
            1.0,
            r"'experiments.mlp_mse_adam.optimizer.beta2': 1.0 is greater than or equal",
        ),
        ("toy_models.toy_ce.loss", "hinge", r"'toy_models.toy_ce.loss': 'hinge' is not one of"),
        (
            "figures.toy_phase_portrait.toy_models",
            ["toy_l9"],
            r"'figures.toy_phase_portrait.toy_models': unknown toy_model 'toy_l9'",
        ),
        ("figures.toy_phase_portrait.toy_models", KeyError, r"'figures.toy_phase_portrait'"),
        (
            "training.schedule",
            {"decay": {"at": 1.5, "factor": 2}},
            r"'training.schedule.decay.at': 1.5 is greater than the maximum",
        ),
        ("experiments.mlp_mse.training", {"schedule": {"warmup": {"steps": 10}}}, r"'start' is a required property"),
        ("related.sparse_dln_sgd.kind", "resnet", r"'related.sparse_dln_sgd.kind': 'resnet' is not one of"),
        (
            "related.sparse_dln_sgd.variants.constant.eta",
            KeyError,
            r"'related.sparse_dln_sgd.variants.constant': 'eta' is a required",
        ),
        (
            "related.sparse_dln_sgd.settings.dimension",
            3,
            r"'related.sparse_dln_sgd.settings'.*'dimension' was unexpected",
        ),
        (
            "related.sparse_dln_sgd.variants.decay_10.settings",
            {"batch_size": 0},
            r"'related.sparse_dln_sgd.variants.decay_10.settings.batch_size': 0 is less than the minimum",
        ),
        ("related.sparse_dln_sgd.variants.decay_10.decay", {"at": 0.1}, r"'factor' is a required property"),
        (
            "figures.sparse_features_dln.related",
            ["dln"],
            r"'figures.sparse_features_dln.related': unknown related 'dln'",
        ),
        ("figures.digits_samples.datasets", ["mnist"], r"'figures.digits_samples.datasets': unknown dataset 'mnist'"),
        (
            "datasets.digits.sampling.variance",
            "beta",
            r"'datasets.digits.sampling.variance': the ancestral step's noise; DDIM \(sampling_steps 8\) adds none",
        ),
        ("datasets.digits.sampling.storage", "float16", r"'datasets.digits.sampling.storage': 'float16' is not one of"),
        (
            "datasets.digits.generator.betas",
            {"start": 0.02, "end": 1.0e-4},
            r"'datasets.digits.generator': .*betas=\(0.02, 0.0001\) must be \(start, end\)",
        ),
        (
            "datasets.digits.generator.lr_schedule",
            "cosine",
            r"'datasets.digits.generator.lr_schedule': 'cosine' is not",
        ),
        # A grid value's key (value_key) has two exponent digits, as the gamma and eta wildcards.
        ("experiments.mlp_mse.gamma", [1.0e-100, 1.0], r"'experiments.mlp_mse.gamma': \[1e-100\] outside 1e-99"),
        (
            "experiments.mlp_mse.eta",
            {"min": 1.0e98, "max": 1.0e100, "per_decade": 1},
            r"'experiments.mlp_mse.eta': \[1e\+100\] outside 1e-99 \.\. 9\.999e\+99",
        ),
        (
            "figures.eta_star_mlp_mse.options",
            {"lazy_max": 0.1, "colour": "red"},
            r"'figures.eta_star_mlp_mse.options': \['colour'\] unknown to plot 'eta_star_scaling'; "
            r"it takes \['lazy_max', 'metric', 'rich_min'\]",
        ),
        (
            "figures.regime_diagram.options",
            {"metric": "test_loss"},
            r"'figures.regime_diagram.options': \['metric'\] unknown to plot 'regime_diagram'; it takes \['points'\]",
        ),
        # An option a plot cannot draw without, the fit windows given both or not at all, steps never evaluated.
        (
            "figures.phase_portrait_steps_mlp_mse.options.steps",
            [10, 75],
            r"'figures.phase_portrait_steps_mlp_mse.options.steps': \[75\] are not test-evaluation steps of "
            r"experiment 'mlp_mse'; it evaluates at \[0, 1, 2, 5, 10, 20, 50, 100, 200\]",
        ),
        (
            "figures.wrong",
            {"plot": "trajectories", "related": ["sparse_dln_sgd"]},
            r"'figures.wrong.options': plot 'trajectories' needs \['variables'\]",
        ),
        (
            "figures.eta_star_mlp_mse.options",
            {"lazy_max": 0.1},
            r"'figures.eta_star_mlp_mse.options': \['lazy_max', 'rich_min'\] are given together or not at all; "
            r"\['rich_min'\] missing",
        ),
        # A plot kind reads one kind of input: experiments, toy models, related experiments or datasets.
        (
            "figures.toy_phase_portrait.experiments",
            ["mlp_mse"],
            r"'figures.toy_phase_portrait.experiments': plot 'toy_phase_portrait' reads toy_models, not experiments",
        ),
        (
            "figures.wrong",
            {"plot": "regime_diagram", "experiments": ["mlp_mse"]},
            r"'figures.wrong.experiments': plot 'regime_diagram' reads toy_models, not experiments",
        ),
        (
            "figures.eta_star_mlp_mse.toy_models",
            ["toy_mse"],
            r"'figures.eta_star_mlp_mse.toy_models': plot 'eta_star_scaling' reads experiments, not toy_models",
        ),
        (
            "figures.wrong",
            {"plot": "loss_curves", "related": ["toy_catapult"]},
            r"'figures.wrong.related': plot 'loss_curves' reads experiments, not related",
        ),
        (
            "figures.wrong",
            {"plot": "trajectories", "experiments": ["mlp_mse"], "options": {"variables": ["loss"]}},
            r"'figures.wrong.experiments': plot 'trajectories' reads related, not experiments",
        ),
        (
            "figures.wrong",
            {"plot": "sample_grid", "experiments": ["mlp_mse"]},
            r"'figures.wrong.experiments': plot 'sample_grid' reads datasets, not experiments",
        ),
    ],
)
def test_bad_configs_fail_naming_the_key(default_config, schema, key, value, message):
    with pytest.raises(ConfigError, match=message):
        Plan(_mutate(default_config, key, value), schema)


def test_experiments_whose_rule_names_coincide_fail_naming_both(default_config, schema):
    """Rule names are built from experiment names with '-' as '_': mlp-mse and mlp_mse would both
    train in rules train_mlp_mse_pack<n>."""
    config = _mutate(default_config, "experiments.mlp-mse", default_config["experiments"]["mlp_mse"])
    with pytest.raises(
        ConfigError,
        match=r"config keys 'experiments.mlp_mse', 'experiments.mlp-mse': names that differ only in '-' and '_' "
        r"\(in rule names both are '_': train_mlp_mse_pack<n>\)",
    ):
        Plan(config, schema)


def test_the_schema_knows_exactly_the_probes_and_plots_the_code_has(schema):
    probes = schema["$defs"]["training"]["properties"]["probes"]["properties"]
    assert set(probes) == set(PROBES)
    figure = schema["properties"]["figures"]["additionalProperties"]["properties"]
    assert set(figure["plot"]["enum"]) == set(PLOTS) == set(PLOT_KINDS)
    related = schema["properties"]["related"]["additionalProperties"]["properties"]
    assert set(related["kind"]["enum"]) == set(KINDS)


def _options_read(function: Callable) -> set[str]:
    """The option names ``function`` reads from its argument ``options`` (``options.get("x")``,
    ``options["x"]``, ``"x" in options``), and those read by the functions it hands ``options`` on to."""
    read = set()
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(function)))):
        match node:
            case ast.Call(
                func=ast.Attribute(value=ast.Name(id="options"), attr="get"), args=[ast.Constant(value=name), *_]
            ):
                read.add(name)
            case ast.Subscript(value=ast.Name(id="options"), slice=ast.Constant(value=name)):
                read.add(name)
            case ast.Compare(
                left=ast.Constant(value=name), ops=[ast.In() | ast.NotIn()], comparators=[ast.Name(id="options")]
            ):
                read.add(name)
            case ast.Call(func=ast.Name(id=callee), args=args, keywords=keywords) if any(
                isinstance(arg, ast.Name) and arg.id == "options" for arg in [*args, *(k.value for k in keywords)]
            ):
                read |= _options_read(function.__globals__[callee])
    return read


def _options_required(function: Callable) -> set[str]:
    """The option names ``function`` indexes (``options["x"]``) without testing ``"x" in options`` first."""
    indexed, tested = set(), set()
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(function)))):
        match node:
            case ast.Subscript(value=ast.Name(id="options"), slice=ast.Constant(value=name)):
                indexed.add(name)
            case ast.Compare(
                left=ast.Constant(value=name), ops=[ast.In() | ast.NotIn()], comparators=[ast.Name(id="options")]
            ):
                tested.add(name)
    return indexed - tested


@pytest.mark.parametrize("plot", sorted(PLOTS))
def test_a_plot_kinds_declared_options_are_those_its_function_reads(plot):
    """``plan.plots.PLOT_KINDS`` declares each kind's options for the config check; they are exactly those the
    plotting function reads (a dataset plot's also those its previews are opened with, ``open_input``), and
    the required ones those it indexes unguarded."""
    read = _options_read(PLOTS[plot]) | (_options_read(open_input) if PLOT_KINDS[plot].reads == "datasets" else set())
    assert PLOT_KINDS[plot].options == read
    assert PLOT_KINDS[plot].required == _options_required(PLOTS[plot])


def test_default_config_is_valid(default_config, schema):
    plan = Plan(default_config, schema)
    assert len(plan.cell_files("mlp_mse")) == 7 * 12


def test_a_sample_figure_reads_each_datasets_pool_and_test_set(repo):
    plan = Plan.from_files(repo / "config" / "paper.yaml", repo / "config" / "schema.yaml")
    assert plan.dataset_files("mnist1m") == ["results/data/mnist1m/pool.h5", "results/data/sources/mnist/test.h5"]
    assert plan.dataset_files("cifar5m") == ["results/data/cifar5m/parts/0.h5", "results/data/sources/cifar10/test.h5"]
    assert plan.dataset_files("cifar10_train") == [
        "results/data/sources/cifar10/train.h5",
        "results/data/sources/cifar10/test.h5",
    ]
    assert plan.figure_cubes("mnist1m_samples") == plan.dataset_files("mnist1m")
    assert "dataset ``mnist1m`` (generated, source mnist)" in plan.figure_caption("mnist1m_samples")


def test_an_adaptive_experiment_plans_columns_seeded_by_theory(default_config, schema):
    plan = Plan(default_config, schema)
    assert (
        plan.experiments(adaptive=True) == ["mlp_mse_adaptive", "mlp_mse_edge", "cnn_mse"]
        and plan.packs("mlp_mse_adaptive") == []
    )
    columns = plan.columns("mlp_mse_adaptive")
    assert [c.gamma_key for c in columns] == list(plan.grids["mlp_mse"][0])
    assert columns[0].directory == "results/runs/mlp_mse_adaptive/gamma_1.000e-03"
    cells = plan.column_cells("mlp_mse_adaptive", "1.000e-01")
    assert [c["eta"] for c in cells] == sorted(plan.grids["mlp_mse"][1].values())
    own = ("experiment", "probes")  # the adaptive sweep also carries the probes
    assert cells[0]["probes"] == default_config["experiments"]["mlp_mse_adaptive"]["training"]["probes"]
    assert sorted(cells[0]["probes"]) == sorted(PROBES)
    assert {k: v for k, v in cells[0].items() if k not in own} == {
        k: v for k, v in plan.cell_params("mlp_mse", "1.000e-01", "1.000e-07").items() if k not in own
    }
    starts = [plan.bracket_start("mlp_mse_adaptive", c.gamma_key) for c in columns]
    assert starts == sorted(starts) and starts[0] < starts[-1]  # the guess rises with gamma
    assert plan.depth_steps("mlp_mse_adaptive", "1.000e-01") == 3  # 3 decades on a 1-per-decade grid


def test_cross_entropy_columns_with_small_gamma_are_trained_all_the_way_down(default_config, schema):
    config = _mutate(default_config, "experiments.mlp_mse_adaptive.loss", "cross_entropy")
    plan = Plan(config, schema)
    assert plan.depth_steps("mlp_mse_adaptive", "1.000e-01") is None
    assert plan.depth_steps("mlp_mse_adaptive", "1.000e+00") == 3


def test_optional_keys_are_completed_from_the_schemas_defaults(default_config, schema):
    """The schema is the one home of the optional keys' defaults: a config that leaves them out is
    completed from it, and the cells, the adaptive choice and the related runs read the filled values."""
    config = copy.deepcopy(default_config)
    config.pop("checkpoint_minutes")
    del config["experiments"]["mlp_mse"]["data_seed"]
    config["experiments"]["mlp_mse"].pop("eta_grid", None)
    spec = config["related"]["sparse_dln_sgd"]
    spec.pop("data_seed"), spec.pop("record_points")
    plan = Plan(config, schema)
    assert config["checkpoint_minutes"] == schema["properties"]["checkpoint_minutes"]["default"] == 10
    assert plan.cell_params("mlp_mse", *plan.cells("mlp_mse")[0])["data_seed"] == 0
    assert not plan.is_adaptive("mlp_mse") and plan.is_adaptive("mlp_mse_adaptive")
    assert (spec["data_seed"], spec["record_points"]) == (0, 200)
    assert plan.config["experiments"]["mlp_mse_adaptive"]["eta_grid"] == "adaptive"  # a given value stays


def test_the_schemas_stated_probe_defaults_are_the_probes_own(schema):
    """A probe's settings have one home, its class (gammasweep.probes.recorder); where the schema's
    description states a default, it is that class's."""
    stated = 0
    for name, probe in schema["$defs"]["training"]["properties"]["probes"]["properties"].items():
        for key, prop in probe.get("properties", {}).items():
            if found := re.search(r"default ([0-9.]+)", prop.get("description", "")):
                assert float(found.group(1)) == getattr(PROBES[name], key), f"probes.{name}.{key}"
                stated += 1
    assert stated >= 10
