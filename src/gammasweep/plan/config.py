"""Config loading and validation, and the grids.

A config (``config/config.yaml``, schema ``config/schema.yaml``) declares datasets, experiments
(a model x dataset x loss with a gamma grid and an eta grid) and figures. Validation runs before
any job: the schema first, then the cross-references and what the schema cannot say, each error
naming the config key that holds the bad value.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from gammasweep.data.generator_config import GeneratorConfig
from gammasweep.data.sources import SOURCES
from gammasweep.plan.plots import INPUT_KEYS, PLOT_KINDS
from gammasweep.results.curves import eval_steps
from gammasweep.sweep.models import MODELS


class ConfigError(ValueError):
    """A config that cannot run; the message names the offending key."""


VALUE_KEY = r"\d\.\d{3}e[+-]\d{2}"  # a value_key: the gamma and eta wildcards' constraint (workflow/rules/common.smk)


def value_key(value: float) -> str:
    """The canonical text of a grid value in paths and wildcards, e.g. 0.0316 -> '3.162e-02'."""
    return f"{value:.3e}"


def rule_safe(name: str) -> str:
    """A config name as part of a rule name, which must be a Python identifier: '-' becomes '_'."""
    return name.replace("-", "_")


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
    if outside := [v for v, text in zip(values, keys) if not re.fullmatch(VALUE_KEY, text)]:
        raise ConfigError(
            f"config key '{key}': {outside} outside 1e-99 .. 9.999e+99: a grid value's key in paths and "
            "wildcards has two exponent digits (e.g. 3.162e-02)"
        )
    if len(set(keys)) != len(keys):
        raise ConfigError(f"config key '{key}': values closer than 4 significant digits: {values}")
    return values


def load_schema(path: str | Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def fill_defaults(config: dict, schema: dict) -> None:
    """Set every key the config leaves out that has a ``default`` in the schema, in place: the schema is
    the one home of those values. (Settings with a typed home keep it there: the optimizer's, adaptive
    eta's, a schedule's, the generator's, each probe's; a model's pack size is in its catalogue.)"""
    base = jsonschema.Draft202012Validator

    def properties(validator, properties, instance, subschema):  # jsonschema's keyword-function signature
        if validator.is_type(instance, "object"):
            for name, prop in properties.items():
                if isinstance(prop, dict) and "default" in prop and name not in instance:
                    instance[name] = copy.deepcopy(prop["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, subschema)

    for _ in jsonschema.validators.extend(base, {"properties": properties})(schema).iter_errors(config):
        pass  # validate() has reported every error already


def non_finite_numbers(value: Any, key: str = "") -> Iterator[tuple[str, float]]:
    """(config key, value) of every NaN or infinite number in ``value`` (nested dicts and lists); the
    schema's number types admit them (YAML's .nan, .inf), no setting means them."""
    if isinstance(value, float) and not math.isfinite(value):
        yield key or "<top>", value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from non_finite_numbers(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from non_finite_numbers(item, f"{key}.{index}")


def validate(config: dict, schema: dict) -> None:
    """Check ``config`` against the schema and the cross-references; raise ConfigError naming the key.
    Every number must be finite. A valid config is completed in place with the schema's defaults
    (``fill_defaults``)."""
    if bad := list(non_finite_numbers(config)):
        raise ConfigError(
            "invalid config:\n  "
            + "\n  ".join(f"config key '{key}': {value} is not a finite number" for key, value in bad)
        )
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"config key '{'.'.join(map(str, e.absolute_path)) or '<top>'}': {e.message}" for e in errors[:10]]
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    fill_defaults(config, schema)
    rule_names: dict[str, list[str]] = {}
    for name in config["experiments"]:
        rule_names.setdefault(rule_safe(name), []).append(name)
    for safe, names in rule_names.items():
        if len(names) > 1:
            raise ConfigError(
                "config keys " + ", ".join(f"'experiments.{n}'" for n in names) + ": names that differ only in "
                f"'-' and '_' (in rule names both are '_': train_{safe}_pack<n>); rename all but one"
            )
    for name, exp in config["experiments"].items():
        where = f"experiments.{name}"
        if exp["dataset"] not in config["datasets"]:
            raise ConfigError(
                f"config key '{where}.dataset': unknown dataset {exp['dataset']!r}; "
                f"declared: {sorted(config['datasets'])}"
            )
        if exp["model"]["name"] not in MODELS:
            raise ConfigError(f"config key '{where}.model.name': unknown model; known: {sorted(MODELS)}")
        pool = pool_size(config["datasets"][exp["dataset"]])
        if pool is not None and exp["steps"] * exp["batch_size"] > pool:
            raise ConfigError(
                f"config key '{where}': steps x batch_size = {exp['steps'] * exp['batch_size']} "
                f"exceeds the {pool} images of dataset {exp['dataset']!r} (online: no sample reused)"
            )
        grid_values(exp["gamma"], f"{where}.gamma")
        grid_values(exp["eta"], f"{where}.eta")
        training = {**config["training"], **exp.get("training", {})}
        for probe, settings in training.get("probes", {}).items():
            # a probe batch is the first test images, or (the curvature probes) the first of the pass
            limit = min(training["test_examples"], exp["steps"] * exp["batch_size"])
            if settings.get("examples", 0) > limit:
                raise ConfigError(
                    f"config key '{where}.training.probes.{probe}.examples': more than the {limit} images a probe "
                    f"batch is taken from (test_examples {training['test_examples']}, or the training pass of "
                    f"steps x batch_size = {exp['steps'] * exp['batch_size']})"
                )
        if "adaptive" in exp and exp["eta_grid"] != "adaptive":
            raise ConfigError(
                f"config key '{where}.adaptive': only used with `eta_grid: adaptive`; set it or remove the block"
            )
        if exp.get("adaptive", {}).get("bracket_steps", 0) > exp["steps"]:
            raise ConfigError(
                f"config key '{where}.adaptive.bracket_steps': longer than the {exp['steps']} steps of a run"
            )
    for name, ds in config["datasets"].items():
        if ds["kind"] == "generated":
            try:
                generator_config(ds["source"], ds["generator"])
            except ValueError as err:
                raise ConfigError(f"config key 'datasets.{name}.generator': {err}") from None
            steps = ds["sampling"].get("sampling_steps")
            ddim = steps not in (None, ds["generator"]["timesteps"])
            if ddim and ds["sampling"].get("variance", "posterior") != "posterior":
                raise ConfigError(
                    f"config key 'datasets.{name}.sampling.variance': the ancestral step's noise; DDIM "
                    f"(sampling_steps {steps}) adds none: set sampling_steps null or leave variance out"
                )
        channels = SOURCES[ds["source"]].shape[-1]
        for stat in ("mean", "std"):
            if len(ds["normalization"][stat]) != channels:
                raise ConfigError(
                    f"config key 'datasets.{name}.normalization.{stat}': needs {channels} "
                    f"value(s), one per channel of {ds['source']}"
                )
        needed = [*SOURCES[ds["source"]].files, *ds.get("parts", [])]
        missing = [file for file in needed if file not in config.get("downloads", {})]
        if missing:
            raise ConfigError(
                f"config key 'downloads': dataset {name!r} (source {ds['source']}) needs the "
                f"downloads {missing}; declare their url (and pins) there, see config/paper.yaml"
            )
    for name, toy in config.get("toy_models", {}).items():
        grid_values(toy["gamma"], f"toy_models.{name}.gamma")
        grid_values(toy["eta"], f"toy_models.{name}.eta")
    for name, fig in config["figures"].items():
        kind = PLOT_KINDS[fig["plot"]]
        for key in INPUT_KEYS:
            if key in fig and key != kind.reads:
                raise ConfigError(
                    f"config key 'figures.{name}.{key}': plot {fig['plot']!r} reads {kind.reads}, not {key}"
                )
            declared = config.get(key, {})
            for unknown in [entry for entry in fig.get(key, []) if entry not in declared]:
                raise ConfigError(
                    f"config key 'figures.{name}.{key}': unknown {key.removesuffix('s')} {unknown!r}; "
                    f"declared: {sorted(declared)}"
                )
        given = set(fig.get("options", {}))
        if unknown := sorted(given - kind.options):
            raise ConfigError(
                f"config key 'figures.{name}.options': {unknown} unknown to plot {fig['plot']!r}; "
                f"it takes {sorted(kind.options)}"
            )
        if missing := sorted(kind.required - given):
            raise ConfigError(f"config key 'figures.{name}.options': plot {fig['plot']!r} needs {missing}")
        if "steps" in given and fig["options"].get("metric", "test_loss") != "train_loss":
            for experiment in fig.get("experiments", []):
                evaluated = eval_steps(config["experiments"][experiment]["steps"])
                if missing := sorted(set(fig["options"]["steps"]) - set(evaluated.tolist())):
                    raise ConfigError(
                        f"config key 'figures.{name}.options.steps': {missing} are not test-evaluation steps of "
                        f"experiment {experiment!r}; it evaluates at {evaluated.tolist()}"
                    )
        for group in kind.together:
            if given & group and not group <= given:
                raise ConfigError(
                    f"config key 'figures.{name}.options': {sorted(group)} are given together or not at all; "
                    f"{sorted(group - given)} missing"
                )


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
    if "betas" in generator:
        settings["betas"] = (generator["betas"]["start"], generator["betas"]["end"])
    return GeneratorConfig(image_size=height, channels=channels, **settings)
