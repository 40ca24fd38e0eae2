"""Load an experiment config: schema defaults <- YAML file <- key=value overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, InterpolationResolutionError, OmegaConfBaseException, ValidationError

from ray_distill.config.schema import ExperimentConfig
from ray_distill.errors import ConfigError


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Return the validated config; every problem is a ConfigError naming its key."""
    merged = OmegaConf.structured(ExperimentConfig)
    if path is not None:
        for layer_path, layer in _with_bases(Path(path)):
            merged = _merge(merged, layer, f"config file {layer_path}")
    if overrides:
        merged = _merge(merged, _parse_overrides(overrides), "command-line overrides")
    try:
        config = OmegaConf.to_object(merged)
    except InterpolationResolutionError as e:
        raise ConfigError(f"{e.full_key}: cannot resolve interpolation: {_first_line(e)}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{getattr(e, 'full_key', '?')}: {_first_line(e)}") from None
    problems = [f"{key}: {message}" for key, message in _problems(config, "")]
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return config


def to_yaml(config: ExperimentConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def section_dict(config: ExperimentConfig, section: str) -> dict[str, Any]:
    return dataclasses.asdict(getattr(config, section))


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded


def _with_bases(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]]:
    """The file's layers, bases first: a top-level `base: other.yaml` (relative to the file) is merged
    under it, so a sweep config can build on a single-run config."""
    if path.resolve() in seen:
        raise ConfigError(f"config file {path}: `base` files form a cycle: {' -> '.join(map(str, seen + (path,)))}")
    layer = _read_yaml(path)
    base = layer.pop("base", None)
    if base is None:
        return [(path, layer)]
    if not isinstance(base, str):
        raise ConfigError(f"config file {path}: base must be a file path, got {base!r}")
    return _with_bases(path.parent / base, seen + (path.resolve(),)) + [(path, layer)]


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {e}") from None


def _merge(base: DictConfig, layer: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)
    except ConfigKeyError as e:
        raise ConfigError(f"{source}: unknown key '{e.full_key}'") from None
    except ValidationError as e:
        raise ConfigError(f"{source}: {e.full_key}: {_first_line(e)}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {getattr(e, 'full_key', '?')}: {_first_line(e)}") from None


def _first_line(e: OmegaConfBaseException) -> str:
    # OmegaConf appends full_key/reference_type lines that we already show.
    return (getattr(e, "msg", None) or str(e)).splitlines()[0]


def _problems(node: Any, prefix: str) -> Iterator[tuple[str, str]]:
    if prefix == "":
        # Imported here: the stages import the config package.
        from ray_distill.stages import STAGES

        for stage in node.run.stages:
            if stage not in STAGES:
                yield "run.stages", f"unknown stage {stage!r}; known: {', '.join(STAGES)}"
    if hasattr(node, "problems"):
        for key, message in node.problems():
            yield prefix + key, message
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            yield from _problems(value, f"{prefix}{f.name}.")
