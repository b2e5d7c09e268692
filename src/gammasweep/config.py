"""Config loading, validation and the expansion of experiments into cells and file paths.

A config (``config/config.yaml``, schema ``config/schema.yaml``) declares datasets, experiments
(a model x dataset x loss with a gamma grid and an eta grid) and figures. A *cell* is one
(experiment, gamma, eta) point; it trains ``seeds`` ensemble members and writes one HDF5 file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from gammasweep.adaptive import AdaptiveSettings, eta_guess, nearest_index
from gammasweep.diffusion import GeneratorConfig
from gammasweep.models import MODELS, PACK_SIZES, layer_count
from gammasweep.optimizers import Optimizer
from gammasweep.sources import SOURCES
from gammasweep.parameterization import dtype_for_gamma

RUNS, CUBES, FIGURES, DATA, LOGS = "results/runs", "results/cubes", "results/figures", "results/data", "results/logs"
CHECKPOINTS, DOWNLOADS, BRACKETS = "results/checkpoints", "results/downloads", "results/brackets"


class ConfigError(ValueError):
    """A config that cannot run; the message names the offending key."""


def value_key(value: float) -> str:
    """The canonical text of a grid value in paths and wildcards, e.g. 0.0316 -> '3.162e-02'."""
    return f"{value:.3e}"


def grid_values(spec: dict | list, key: str) -> list[float]:
    """Expand a grid spec: {min, max, per_decade} -> 10^(i / per_decade) from min to max; a list as given."""
    if isinstance(spec, list):
        values = sorted(float(v) for v in spec)
    else:
        k = spec["per_decade"]
        lo, hi = math.log10(spec["min"]) * k, math.log10(spec["max"]) * k
        if abs(lo - round(lo)) > 1e-6 or abs(hi - round(hi)) > 1e-6:
            raise ConfigError(f"config key '{key}': min and max must be powers of 10^(1/{k}), got {spec}")
        if hi < lo:
            raise ConfigError(f"config key '{key}': max {spec['max']} is below min {spec['min']}")
        values = [10.0 ** (i / k) for i in range(round(lo), round(hi) + 1)]
    keys = [value_key(v) for v in values]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"config key '{key}': values closer than 4 significant digits: {values}")
    return values


def load_schema(path: str | Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def validate(config: dict, schema: dict) -> None:
    """Check ``config`` against the schema and the cross-references; raise ConfigError naming the key."""
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"config key '{'.'.join(map(str, e.absolute_path)) or '<top>'}': {e.message}" for e in errors[:10]]
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    for name, exp in config["experiments"].items():
        where = f"experiments.{name}"
        if exp["dataset"] not in config["datasets"]:
            raise ConfigError(f"config key '{where}.dataset': unknown dataset {exp['dataset']!r}; "
                              f"declared: {sorted(config['datasets'])}")
        if exp["model"]["name"] not in MODELS:
            raise ConfigError(f"config key '{where}.model.name': unknown model; known: {sorted(MODELS)}")
        pool = pool_size(config["datasets"][exp["dataset"]])
        if pool is not None and exp["steps"] * exp["batch_size"] > pool:
            raise ConfigError(f"config key '{where}': steps x batch_size = {exp['steps'] * exp['batch_size']} "
                              f"exceeds the {pool} images of dataset {exp['dataset']!r} (online: no sample reused)")
        grid_values(exp["gamma"], f"{where}.gamma")
        grid_values(exp["eta"], f"{where}.eta")
        training = {**config["training"], **exp.get("training", {})}
        for probe, settings in training.get("probes", {}).items():
            if settings.get("examples", 0) > training["test_examples"]:
                raise ConfigError(f"config key '{where}.training.probes.{probe}.examples': more than the "
                                  f"{training['test_examples']} test_examples the probe batch is taken from")
        if "adaptive" in exp and exp.get("eta_grid") != "adaptive":
            raise ConfigError(f"config key '{where}.adaptive': only used with `eta_grid: adaptive`; set it or remove the block")
        if exp.get("adaptive", {}).get("bracket_steps", 0) > exp["steps"]:
            raise ConfigError(f"config key '{where}.adaptive.bracket_steps': longer than the {exp['steps']} steps of a run")
    for name, ds in config["datasets"].items():
        if ds["kind"] == "generated":
            try:
                generator_config(ds["source"], ds["generator"])
            except ValueError as err:
                raise ConfigError(f"config key 'datasets.{name}.generator': {err}") from None
        channels = SOURCES[ds["source"]].shape[-1]
        for stat in ("mean", "std"):
            if len(ds["normalization"][stat]) != channels:
                raise ConfigError(f"config key 'datasets.{name}.normalization.{stat}': needs {channels} "
                                  f"value(s), one per channel of {ds['source']}")
        needed = [*SOURCES[ds["source"]].files, *ds.get("parts", [])]
        missing = [file for file in needed if file not in config.get("downloads", {})]
        if missing:
            raise ConfigError(f"config key 'downloads': dataset {name!r} (source {ds['source']}) needs the "
                              f"downloads {missing}; declare their url (and pins) there, see config/paper.yaml")
    for name, toy in config.get("toy_models", {}).items():
        grid_values(toy["gamma"], f"toy_models.{name}.gamma")
        grid_values(toy["eta"], f"toy_models.{name}.eta")
    for name, fig in config["figures"].items():
        for key in ("experiments", "toy_models", "related", "datasets"):
            declared = config.get(key, {})
            for unknown in [entry for entry in fig.get(key, []) if entry not in declared]:
                raise ConfigError(f"config key 'figures.{name}.{key}': unknown {key.removesuffix('s')} {unknown!r}; "
                                  f"declared: {sorted(declared)}")


def pool_size(dataset: dict) -> int | None:
    """Images in a dataset's training pool: the sampled images, or every part's; None for a real
    dataset (its source's training split, trained for several epochs)."""
    if dataset["kind"] == "real":
        return None
    if dataset["kind"] == "generated":
        return dataset["sampling"]["images"]
    return dataset["images_per_part"] * len(dataset["parts"])


def generator_config(source: str, generator: dict) -> GeneratorConfig:
    """A generated dataset's diffusion-model settings, checked against its source's image shape."""
    height, _, channels = SOURCES[source].shape
    settings = {**generator, "dim_mults": tuple(generator["dim_mults"])}
    return GeneratorConfig(image_size=height, channels=channels, **settings)


class Plan:
    """A validated config, expanded: the cells of every experiment and the files of every step."""

    def __init__(self, config: dict, schema: dict) -> None:
        validate(config, schema)
        self.config = config
        self.grids = {name: ({value_key(v): v for v in grid_values(exp["gamma"], "")},
                             {value_key(v): v for v in grid_values(exp["eta"], "")})
                      for name, exp in config["experiments"].items()}

    @classmethod
    def from_files(cls, config_path: str | Path, schema_path: str | Path) -> Plan:
        with open(config_path) as f:
            return cls(yaml.safe_load(f), load_schema(schema_path))

    # -- cells ---------------------------------------------------------------------------------
    def cells(self, experiment: str) -> list[tuple[str, str]]:
        """(gamma_key, eta_key) of every cell of an experiment."""
        gammas, etas = self.grids[experiment]
        return [(g, e) for g in gammas for e in etas]

    def cell_files(self, experiment: str) -> list[str]:
        return [cell_path(experiment, g, e) for g, e in self.cells(experiment)]

    def cell_identities(self, experiment: str) -> list[dict[str, Any]]:
        """Per cell file (in ``cell_files`` order), the experiment, gamma and eta it must hold."""
        gammas, etas = self.grids[experiment]
        return [{"experiment": experiment, "gamma": gammas[g], "eta": etas[e]} for g, e in self.cells(experiment)]

    def cell_params(self, experiment: str, gamma_key: str, eta_key: str) -> dict[str, Any]:
        """Everything that determines a cell's result, resolved and JSON-serializable."""
        exp = self.config["experiments"][experiment]
        gammas, etas = self.grids[experiment]
        if gamma_key not in gammas or eta_key not in etas:
            raise ConfigError(f"no cell gamma={gamma_key}, eta={eta_key} in experiment {experiment!r}")
        training = {**self.config["training"], **exp.get("training", {})}
        dataset = self.config["datasets"][exp["dataset"]]
        source = SOURCES[dataset["source"]]
        gamma = gammas[gamma_key]
        return {
            "experiment": experiment, "dataset": exp["dataset"], "model": exp["model"], "loss": exp["loss"],
            "batch_size": exp["batch_size"], "steps": exp["steps"], "seeds": list(range(exp["seeds"])),
            "data_seed": exp.get("data_seed", 0), "gamma": gamma, "eta": etas[eta_key],
            "optimizer": Optimizer(**exp.get("optimizer", {})).settings(),
            "dtype": str(dtype_for_gamma(gamma, training["float64_below_gamma"])).removeprefix("torch."),
            "input_shape": list(source.shape), "num_classes": source.num_classes,
            "normalization": dataset["normalization"], **training,
            **({"epochs": True} if dataset["kind"] == "real" else {}),  # a finite pool, reshuffled each epoch
            **({"augment": dataset["augment"]} if "augment" in dataset else {}),
        }

    def packs(self, experiment: str) -> list[Pack]:
        """The training jobs of a full-grid experiment: its cells in grid order, split where the dtype
        changes and into chunks of ``pack_size`` (default: the model's, ``gammasweep.models.PACK_SIZES``).
        An adaptive experiment has none: it trains one column job per gamma (``column_cells``)."""
        exp = self.config["experiments"][experiment]
        if self.is_adaptive(experiment):
            return []
        size = exp.get("pack_size", PACK_SIZES[exp["model"]["name"]])
        by_dtype: dict[str, list[tuple[str, str]]] = {}
        for cell in self.cells(experiment):
            by_dtype.setdefault(self.cell_params(experiment, *cell)["dtype"], []).append(cell)
        chunks = [cells[i:i + size] for cells in by_dtype.values() for i in range(0, len(cells), size)]
        return [Pack(experiment, index, tuple(cells)) for index, cells in enumerate(chunks)]

    # -- adaptive eta (gammasweep.adaptive) -------------------------------------------------------
    def is_adaptive(self, experiment: str) -> bool:
        return self.config["experiments"][experiment].get("eta_grid", "full") == "adaptive"

    def experiments(self, adaptive: bool) -> list[str]:
        """The experiments with (True) or without (False) adaptive eta."""
        return [name for name in self.config["experiments"] if self.is_adaptive(name) == adaptive]

    def adaptive_settings(self, experiment: str) -> AdaptiveSettings:
        exp = self.config["experiments"][experiment]
        return AdaptiveSettings(**{"bracket_steps": max(exp["steps"] // 10, 1), **exp.get("adaptive", {})})

    def column_cells(self, experiment: str, gamma_key: str) -> list[dict[str, Any]]:
        """The cells of one gamma column, eta ascending."""
        return [self.cell_params(experiment, gamma_key, eta_key) for eta_key in self.grids[experiment][1]]

    def column_files(self, experiment: str, gamma_key: str) -> list[str]:
        """The cell files of one gamma column, eta ascending (those trained are written)."""
        return [cell_path(experiment, gamma_key, eta_key) for eta_key in self.grids[experiment][1]]

    def bracket_start(self, experiment: str, gamma_key: str) -> int:
        """Grid index of the first guess of eta_max(gamma) (``adaptive.eta_guess``)."""
        exp = self.config["experiments"][experiment]
        gammas, etas = self.grids[experiment]
        guess = eta_guess(gammas[gamma_key], layer_count(exp["model"]), exp["loss"],
                          self.adaptive_settings(experiment).guess_scale)
        return nearest_index(list(etas.values()), guess)

    def depth_steps(self, experiment: str, gamma_key: str) -> int | None:
        """Grid steps trained below eta_max; None (all) for cross-entropy with gamma < 1, as the paper."""
        exp = self.config["experiments"][experiment]
        if exp["loss"] == "cross_entropy" and self.grids[experiment][0][gamma_key] < 1:
            return None
        return self.adaptive_settings(experiment).depth_steps(list(self.grids[experiment][1].values()))

    def columns(self, experiment: str) -> list[Column]:
        return [Column(experiment, g) for g in self.grids[experiment][0]]

    # -- datasets and figures --------------------------------------------------------------------
    def dataset(self, name: str) -> dict:
        return self.config["datasets"][name]

    def experiment_dataset(self, experiment: str) -> str:
        return self.config["experiments"][experiment]["dataset"]

    def downloads(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """Per download name: ``remote`` (the config entry: url and pins) and ``path`` (where it is kept)."""
        return {name: {"remote": self.config["downloads"][name], "path": f"{DOWNLOADS}/{name}"} for name in names}

    def source_downloads(self, source: str) -> dict[str, dict[str, Any]]:
        return self.downloads(list(SOURCES[source].files))

    def source_file(self, name: str, split: str) -> str:
        """The real ``split`` ('train' or 'test') images of dataset ``name``'s source."""
        return f"{DATA}/sources/{self.dataset(name)['source']}/{split}.h5"

    def pool_paths(self, name: str, parts: int = 1) -> list[str]:
        """Dataset ``name``'s training-pool files: a generated dataset's pool, a real one's source
        training split, or a fetched one's first ``parts`` parts."""
        kind = self.dataset(name)["kind"]
        if kind == "generated":
            return [f"{DATA}/{name}/pool.h5"]
        if kind == "real":
            return [self.source_file(name, "train")]
        return [f"{DATA}/{name}/parts/{k}.h5" for k in range(parts)]

    def pool_files(self, experiment: str) -> list[str]:
        """What an experiment's stream reads (``pool_paths``): of a fetched dataset as many parts as
        its steps x batch_size needs (only those are fetched)."""
        exp = self.config["experiments"][experiment]
        dataset = self.dataset(exp["dataset"])
        fetched = dataset["kind"] == "fetched"
        parts = math.ceil(exp["steps"] * exp["batch_size"] / dataset["images_per_part"]) if fetched else 1
        return self.pool_paths(exp["dataset"], parts)

    def quality_files(self, experiment: str) -> list[str]:
        """The quality-gate report a training job waits for (generated datasets only)."""
        name = self.experiment_dataset(experiment)
        return [f"{DATA}/{name}/quality.json"] if self.dataset(name)["kind"] == "generated" else []

    def dataset_files(self, name: str) -> list[str]:
        """A dataset's training pool (its first file, ``pool_paths``) and its test set: the files a
        sample figure previews."""
        return [*self.pool_paths(name), self.source_file(name, "test")]

    def figure_cubes(self, figure: str) -> list[str]:
        """The files a figure reads, in order: its experiments' cubes, its toy models', its related
        experiments', then its datasets' pool and test files (``dataset_files``)."""
        fig = self.config["figures"][figure]
        return ([cube_path(e) for e in fig.get("experiments", [])] + [toy_cube_path(t) for t in fig.get("toy_models", [])]
                + [related_cube_path(r) for r in fig.get("related", [])]
                + [path for d in fig.get("datasets", []) for path in self.dataset_files(d)])

    def figure_caption(self, figure: str) -> str:
        """The report's caption: the paper's figure, then what produced ours (reStructuredText)."""
        fig = self.config["figures"][figure]
        sources = [f"experiment ``{e}`` ({self.describe_experiment(e)})" for e in fig.get("experiments", [])]
        sources += [f"toy model ``{t}`` ({self.describe_toy(t)})" for t in fig.get("toy_models", [])]
        sources += [f"related experiment ``{r}`` ({self.describe_related(r)})" for r in fig.get("related", [])]
        sources += [f"dataset ``{d}`` ({self.dataset(d)['kind']}, source {self.dataset(d)['source']})"
                    for d in fig.get("datasets", [])]
        paper = f"**Paper, {fig['paper']}.** " if "paper" in fig else ""
        return (f"{paper}{fig.get('caption', '')}\n\n**Ours:** figure ``{figure}``, plot ``{fig['plot']}`` "
                f"from " + "; ".join(sources) + ".")

    def describe_experiment(self, experiment: str) -> str:
        exp = self.config["experiments"][experiment]
        gammas, etas = self.grids[experiment]
        model = ", ".join(f"{k} {v}" for k, v in exp["model"].items() if k != "name")
        return (f"{exp['model']['name']} ({model}) on {exp['dataset']}, {exp['loss']}, batch {exp['batch_size']}, "
                f"{exp['steps']} steps, {exp['seeds']} seeds, {len(gammas)} gamma x {len(etas)} eta, "
                f"eta grid {exp.get('eta_grid', 'full')}")

    def describe_toy(self, toy: str) -> str:
        settings = self.config["toy_models"][toy]
        return f"{settings['loss']}, L = {settings['depth']}, T = {settings['steps']} GD steps"

    def describe_related(self, name: str) -> str:
        spec = self.config["related"][name]
        return (f"{spec['kind']}, {spec['steps']} steps, {spec['seeds']} seeds, variants "
                + ", ".join(spec["variants"]))

    def figure_files(self) -> list[str]:
        return [f"{FIGURES}/{name}.{ext}" for name in self.config["figures"] for ext in ("pdf", "png", "csv")]

    def to_json(self) -> str:
        return json.dumps(self.config, sort_keys=True)


@dataclass(frozen=True)
class Pack:
    """Cells of one experiment and one dtype trained together in one job (``gammasweep.train``)."""

    experiment: str
    index: int
    cells: tuple[tuple[str, str], ...]  # (gamma_key, eta_key) of each cell

    @property
    def rule(self) -> str:
        """The Snakemake rule that trains this pack."""
        return f"train_{self.experiment.replace('-', '_')}_pack{self.index:04d}"

    @property
    def cell_files(self) -> list[str]:
        return [cell_path(self.experiment, g, e) for g, e in self.cells]

    @property
    def log(self) -> str:
        return f"{LOGS}/train/{self.experiment}/pack{self.index:04d}.log"

    @property
    def checkpoint(self) -> str:
        """Where the job saves its resumable state (outside the outputs: Snakemake leaves it alone)."""
        return f"{CHECKPOINTS}/{self.experiment}/pack{self.index:04d}.pt"


@dataclass(frozen=True)
class Column:
    """The files of one gamma column of an adaptive experiment."""

    experiment: str
    gamma_key: str

    @property
    def bracket(self) -> str:
        """The bracketing record (JSON), output of the Snakemake checkpoint ``bracket_eta``."""
        return f"{BRACKETS}/{self.experiment}/gamma_{self.gamma_key}.json"

    @property
    def directory(self) -> str:
        """The trained cells and ``column.json`` (output of ``train_column``)."""
        return f"{RUNS}/{self.experiment}/gamma_{self.gamma_key}"

    @property
    def checkpoint(self) -> str:
        return f"{CHECKPOINTS}/{self.experiment}/gamma_{self.gamma_key}.pt"


def cell_path(experiment: str, gamma_key: str, eta_key: str) -> str:
    return f"{RUNS}/{experiment}/gamma_{gamma_key}/eta_{eta_key}.h5"


def cube_path(experiment: str) -> str:
    return f"{CUBES}/{experiment}.nc"


def toy_cube_path(toy: str) -> str:
    return f"{CUBES}/toy/{toy}.nc"


def related_cube_path(name: str) -> str:
    return f"{CUBES}/related/{name}.nc"
