"""The plan: a validated config expanded into the cells of every experiment, their training jobs
(packs, or adaptive columns), and the files of every step (``gammasweep.plan.paths``).

A *cell* is one (experiment, gamma, eta) point; it trains ``seeds`` ensemble members and writes one
HDF5 file. Imports no torch: the Snakefile builds the plan.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gammasweep.data.sources import SOURCES
from gammasweep.plan import paths
from gammasweep.plan.config import ConfigError, grid_values, load_schema, rule_safe, validate, value_key
from gammasweep.sweep.adaptive import AdaptiveSettings, eta_guess, nearest_index
from gammasweep.sweep.models import MODELS, layer_count
from gammasweep.sweep.settings import OptimizerSettings, precision


class Plan:
    """A validated config, expanded: the cells of every experiment and the files of every step."""

    def __init__(self, config: dict, schema: dict) -> None:
        validate(config, schema)
        self.config = config
        self.grids = {
            name: (
                {value_key(v): v for v in grid_values(exp["gamma"], "")},
                {value_key(v): v for v in grid_values(exp["eta"], "")},
            )
            for name, exp in config["experiments"].items()
        }

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
        """Per cell file (in ``cell_files`` order), the params it must hold to be aggregated: its whole
        ``cell_params``, so that a stale file of another configuration (width, loss, data seed, ...) fails."""
        return [self.cell_params(experiment, g, e) for g, e in self.cells(experiment)]

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
            "experiment": experiment,
            "dataset": exp["dataset"],
            "model": exp["model"],
            "loss": exp["loss"],
            "batch_size": exp["batch_size"],
            "steps": exp["steps"],
            "seeds": list(range(exp["seeds"])),
            "data_seed": exp["data_seed"],
            "gamma": gamma,
            "eta": etas[eta_key],
            "optimizer": OptimizerSettings(**exp.get("optimizer", {})).settings(),
            "dtype": precision(gamma, training["float64_below_gamma"]),
            "input_shape": list(source.shape),
            "num_classes": source.num_classes,
            "normalization": dataset["normalization"],
            **training,
            **({"epochs": True} if dataset["kind"] == "real" else {}),  # a finite pool, reshuffled each epoch
            **({"augment": dataset["augment"]} if "augment" in dataset else {}),
        }

    def packs(self, experiment: str) -> list[Pack]:
        """The training jobs of a full-grid experiment: its cells in grid order, split where the dtype
        changes and into chunks of ``pack_size`` (``pack_groups``).
        An adaptive experiment has none: it trains one column job per gamma (``column_cells``)."""
        if self.is_adaptive(experiment):
            return []
        cells = self.cells(experiment)
        groups = pack_groups([self.cell_params(experiment, *cell) for cell in cells], self.pack_size(experiment))
        return [Pack(experiment, index, tuple(cells[i] for i in group)) for index, group in enumerate(groups)]

    def pack_size(self, experiment: str) -> int:
        """The most cells trained together in one batched model (default: the model's)."""
        exp = self.config["experiments"][experiment]
        return exp.get("pack_size", MODELS[exp["model"]["name"]].pack_size)

    # -- adaptive eta (gammasweep.sweep.adaptive) -------------------------------------------------------
    def is_adaptive(self, experiment: str) -> bool:
        return self.config["experiments"][experiment]["eta_grid"] == "adaptive"

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
        optimizer = OptimizerSettings(**exp.get("optimizer", {})).name
        scale = self.adaptive_settings(experiment).guess_scale
        guess = eta_guess(gammas[gamma_key], layer_count(exp["model"]), exp["loss"], scale, optimizer)
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
        return {
            name: {"remote": self.config["downloads"][name], "path": paths.DOWNLOAD.format(name=name)} for name in names
        }

    def source_downloads(self, source: str) -> dict[str, dict[str, Any]]:
        return self.downloads(list(SOURCES[source].files))

    def source_file(self, name: str, split: str) -> str:
        """The real ``split`` ('train' or 'test') images of dataset ``name``'s source."""
        return paths.SOURCE.format(source=self.dataset(name)["source"], split=split)

    def pool_paths(self, name: str, parts: int = 1) -> list[str]:
        """Dataset ``name``'s training-pool files: a generated dataset's pool, a real one's source
        training split, or a fetched one's first ``parts`` parts."""
        kind = self.dataset(name)["kind"]
        if kind == "generated":
            return [paths.POOL.format(dataset=name)]
        if kind == "real":
            return [self.source_file(name, "train")]
        return [paths.PART.format(dataset=name, part=k) for k in range(parts)]

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
        return [paths.QUALITY.format(dataset=name)] if self.dataset(name)["kind"] == "generated" else []

    def dataset_files(self, name: str) -> list[str]:
        """A dataset's training pool (its first file, ``pool_paths``) and its test set: the files a
        sample figure previews."""
        return [*self.pool_paths(name), self.source_file(name, "test")]

    def figure_cubes(self, figure: str) -> list[str]:
        """The files a figure reads, in order: its experiments' cubes, its toy models', its related
        experiments', then its datasets' pool and test files (``dataset_files``)."""
        fig = self.config["figures"][figure]
        return (
            [paths.CUBE.format(experiment=e) for e in fig.get("experiments", [])]
            + [paths.TOY_CUBE.format(toy=t) for t in fig.get("toy_models", [])]
            + [paths.RELATED_CUBE.format(related=r) for r in fig.get("related", [])]
            + [path for d in fig.get("datasets", []) for path in self.dataset_files(d)]
        )

    def figure_caption(self, figure: str) -> str:
        """The report's caption: the paper's figure, then what produced ours (reStructuredText)."""
        fig = self.config["figures"][figure]
        sources = [f"experiment ``{e}`` ({self.describe_experiment(e)})" for e in fig.get("experiments", [])]
        sources += [f"toy model ``{t}`` ({self.describe_toy(t)})" for t in fig.get("toy_models", [])]
        sources += [f"related experiment ``{r}`` ({self.describe_related(r)})" for r in fig.get("related", [])]
        sources += [
            f"dataset ``{d}`` ({self.dataset(d)['kind']}, source {self.dataset(d)['source']})"
            for d in fig.get("datasets", [])
        ]
        paper = f"**Paper, {fig['paper']}.** " if "paper" in fig else ""
        return (
            f"{paper}{fig.get('caption', '')}\n\n**Ours:** figure ``{figure}``, plot ``{fig['plot']}`` "
            f"from " + "; ".join(sources) + "."
        )

    def describe_experiment(self, experiment: str) -> str:
        exp = self.config["experiments"][experiment]
        gammas, etas = self.grids[experiment]
        model = ", ".join(f"{k} {v}" for k, v in exp["model"].items() if k != "name")
        return (
            f"{exp['model']['name']} ({model}) on {exp['dataset']}, {exp['loss']}, batch {exp['batch_size']}, "
            f"{exp['steps']} steps, {exp['seeds']} seeds, {len(gammas)} gamma x {len(etas)} eta, "
            f"eta grid {exp['eta_grid']}"
        )

    def describe_toy(self, toy: str) -> str:
        settings = self.config["toy_models"][toy]
        return f"{settings['loss']}, L = {settings['depth']}, T = {settings['steps']} GD steps"

    def describe_related(self, name: str) -> str:
        spec = self.config["related"][name]
        return f"{spec['kind']}, {spec['steps']} steps, {spec['seeds']} seeds, variants " + ", ".join(spec["variants"])

    def figure_files(self) -> list[str]:
        return [
            paths.FIGURE.format(figure=name, ext=ext) for name in self.config["figures"] for ext in paths.FIGURE_KINDS
        ]


@dataclass(frozen=True)
class Pack:
    """Cells of one experiment and one dtype trained together in one job (``gammasweep.sweep.train``)."""

    experiment: str
    index: int
    cells: tuple[tuple[str, str], ...]  # (gamma_key, eta_key) of each cell

    @property
    def rule(self) -> str:
        """The Snakemake rule that trains this pack."""
        return f"train_{rule_safe(self.experiment)}_pack{self.index:04d}"

    @property
    def cell_files(self) -> list[str]:
        return [cell_path(self.experiment, g, e) for g, e in self.cells]

    @property
    def log(self) -> str:
        return paths.LOG["train_pack"].format(experiment=self.experiment, pack=f"{self.index:04d}")

    @property
    def benchmark(self) -> str:
        """What the job cost (Snakemake's ``benchmark:``)."""
        return paths.BENCHMARK["train_pack"].format(experiment=self.experiment, pack=f"{self.index:04d}")

    @property
    def checkpoint(self) -> str:
        """Where the job saves its resumable state (outside the outputs: Snakemake leaves it alone)."""
        return paths.PACK_CHECKPOINT.format(experiment=self.experiment, pack=f"{self.index:04d}")


@dataclass(frozen=True)
class Column:
    """The files of one gamma column of an adaptive experiment."""

    experiment: str
    gamma_key: str

    @property
    def directory(self) -> str:
        """The trained cells and ``column.json`` (output of ``train_column``)."""
        return paths.COLUMN.format(experiment=self.experiment, gamma=self.gamma_key)


def shared_params(cell: dict[str, Any]) -> dict[str, Any]:
    """A cell's params but gamma and eta: what the cells trained together in one batched model share."""
    return {k: v for k, v in cell.items() if k not in ("gamma", "eta")}


def pack_groups(cells: Sequence[dict[str, Any]], size: int) -> list[list[int]]:
    """Indices of ``cells`` (params, ``Plan.cell_params``) in groups trained together: the same
    ``shared_params``, in order, at most ``size`` each."""
    groups: dict[str, list[int]] = {}
    for i, cell in enumerate(cells):
        groups.setdefault(json.dumps(shared_params(cell), sort_keys=True), []).append(i)
    return [group[k : k + size] for group in groups.values() for k in range(0, len(group), size)]


def cell_path(experiment: str, gamma_key: str, eta_key: str) -> str:
    return paths.CELL.format(experiment=experiment, gamma=gamma_key, eta=eta_key)
