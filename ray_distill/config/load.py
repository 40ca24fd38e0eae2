"""Load an experiment config: schema defaults <- YAML file <- key=value overrides."""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import typing
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, InterpolationResolutionError, OmegaConfBaseException

from ray_distill.config.schema import ExperimentConfig
from ray_distill.errors import ConfigError, brief, first_line, is_text, line_of
from ray_distill.fileio import text_of
from ray_distill.registry import STAGES

SHOWN_PROBLEMS = 5  # per message; the rest are counted
MAX_DEPTH = 32  # lists and mappings inside a value (engine options)


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Return the validated config; every problem is a ConfigError naming its key."""
    merged = _schema()
    if path is not None:
        for layer_path, layer in _with_bases(Path(path)):
            merged = _merge(merged, layer, f"config file {layer_path}")
    if overrides:
        merged = _merge(merged, _parse_overrides(overrides), "command-line overrides")
    try:
        config = OmegaConf.to_object(merged)
    except InterpolationResolutionError as e:
        raise ConfigError(f"{e.full_key}: cannot resolve interpolation: {_message(e)}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{getattr(e, 'full_key', '?')}: {_message(e)}") from None
    # Cut to a line each: a message may quote a value the user made a megabyte long.
    problems = [first_line(f"{key}: {message}") for key, message in _problems(config, "")]
    if problems:
        more = f" (and {len(problems) - SHOWN_PROBLEMS} more)" if len(problems) > SHOWN_PROBLEMS else ""
        raise ConfigError("invalid config: " + "; ".join(problems[:SHOWN_PROBLEMS]) + more)
    return config


@functools.lru_cache(maxsize=1)
def _schema() -> DictConfig:
    # Half the time of a load; a merge copies it, never changes it.
    return OmegaConf.structured(ExperimentConfig)


def relocate(value: Any, old: str, new: str) -> Any:
    """`value` (a config, or any part of one) with every path that is `old` or lies under it moved to `new`:
    the run directory and what interpolations such as ${run.dir}/world made of it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: relocate(getattr(value, f.name), old, new)
                                             for f in dataclasses.fields(value) if f.init})
    if isinstance(value, str):
        base = old.rstrip("/")
        if value == old or value == base:
            return new
        return new.rstrip("/") + value[len(base):] if base not in ("", ".") and value.startswith(base + "/") else value
    if isinstance(value, list):
        return [relocate(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: relocate(v, old, new) for k, v in value.items()}
    return value


def to_yaml(config: ExperimentConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def section_dict(config: ExperimentConfig, section: str) -> dict[str, Any]:
    return dataclasses.asdict(getattr(config, section))


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    where = f"config file {path}"
    text = text_of(path.read_bytes(), where)
    try:
        loaded = OmegaConf.load(io.StringIO(text))
    except OmegaConfBaseException as e:
        raise ConfigError(f"{where}: {_key(e)}{_message(e)}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {_yaml_problem(e, text)}") from None
    except ValueError as e:  # a scalar YAML parsed but Python refuses, e.g. an integer of 5000 digits
        raise ConfigError(f"{where} is not valid YAML: {first_line(e)}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{where} must hold a mapping at the top level")
    return loaded


def _yaml_problem(e: yaml.YAMLError, text: str) -> str:
    """The problem and where it is, on one line (PyYAML spreads them over several)."""
    if isinstance(e, yaml.reader.ReaderError):
        return f"{e.reason} (line {line_of(text, e.position)})"
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or first_line(e)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def _with_bases(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]]:
    """The file's layers, bases first: a top-level `base: other.yaml` (relative to the file) is merged
    under it, so a sweep config can build on a single-run config."""
    if path.resolve() in seen:
        raise ConfigError(f"config file {path}: `base` files form a cycle: {' -> '.join(map(str, seen + (path,)))}")
    layer = _read_yaml(path)
    base = layer.pop("base", None)
    if base is None:
        return [(path, layer)]
    if not isinstance(base, str) or not is_text(base):
        raise ConfigError(f"config file {path}: base must be a file path, got {brief(base)}")
    return _with_bases(path.parent / base, seen + (path.resolve(),)) + [(path, layer)]


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:  # one at a time, so an error names the override
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {brief(item)} is not of the form key=value")
        where = f"override {key if len(key) < 100 else brief(key)}"
        if not is_text(item):
            raise ConfigError(f"{where}: must be text without NUL characters or invalid UTF-8")
        try:
            OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as e:
            raise ConfigError(f"{where}: {_message(e)}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: the value is not valid YAML: {_yaml_problem(e, item)}") from None
        except ValueError as e:
            raise ConfigError(f"{where}: the value is not valid YAML: {first_line(e)}") from None
    return OmegaConf.from_dotlist(list(overrides))


def _merge(base: DictConfig, layer: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)
    except ConfigKeyError as e:
        raise ConfigError(f"{source}: unknown key '{e.full_key}'") from None
    except (OmegaConfBaseException, TypeError) as e:  # TypeError: a mapping given for a list, or the reverse
        raise ConfigError(f"{source}: {_key(e) or _failing_key(base, layer) + ': '}{_message(e)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: {_failing_key(base, layer)}: nested too deeply") from None


def _failing_key(base: DictConfig, layer: DictConfig) -> str:
    """The first `section.key` of `layer` that does not merge into `base`: OmegaConf does not always say."""
    for section, value in OmegaConf.to_container(layer, resolve=False).items():
        parts = [(f"{section}.{k}", {section: {k: v}}) for k, v in value.items()] if isinstance(value, dict) \
            else [(str(section), {section: value})]
        for key, part in parts:
            try:
                OmegaConf.merge(base, part)
            except (OmegaConfBaseException, TypeError, RecursionError):
                return key
    return "?"


def _key(e: Exception) -> str:
    key = getattr(e, "full_key", None)
    return f"{key}: " if key else ""


def _message(e: Exception) -> str:
    # OmegaConf appends full_key/reference_type lines that we already show.
    return first_line(getattr(e, "msg", None) or e)


def _problems(node: Any, prefix: str) -> Iterator[tuple[str, str]]:
    if prefix == "":
        for stage in node.run.stages:
            if stage not in STAGES:
                yield "run.stages", f"unknown stage {brief(stage)}; known: {', '.join(STAGES)}"
    hints = typing.get_type_hints(type(node))
    fields = [(f.name, getattr(node, f.name)) for f in dataclasses.fields(node)]
    bad = [(prefix + key, message) for name, value in fields if not dataclasses.is_dataclass(value)
           for key, message in _value_problems(value, hints[name], name)]
    yield from bad
    if hasattr(node, "problems"):
        yield from ((prefix + key, message) for key, message in node.problems() if prefix + key not in dict(bad))
    for name, value in fields:
        if dataclasses.is_dataclass(value):
            yield from _problems(value, f"{prefix}{name}.")


def _value_problems(value: Any, hint: Any, key: str, depth: int = 0) -> Iterator[tuple[str, str]]:
    """What OmegaConf lets through: a list or mapping inside a list of strings (or the like), NaN or infinity
    (a range check passes NaN), an integer beyond 64 bits (numpy, Ray and the filesystem refuse it later,
    with a traceback), NUL or invalid UTF-8 in text."""
    if typing.get_origin(hint) is typing.Union:  # Optional[X]
        if value is not None:
            yield from _value_problems(value, typing.get_args(hint)[0], key, depth)
    elif isinstance(value, (list, dict)):
        if typing.get_origin(hint) not in (list, dict) and hint is not Any:
            yield key, f"must be a {getattr(hint, '__name__', hint)}, got {brief(value)}"
        elif depth > MAX_DEPTH:
            yield key, "is nested too deeply"
        else:
            element = typing.get_args(hint)[-1] if typing.get_args(hint) else Any
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                yield from _value_problems(v, element, f"{key}.{k}" if isinstance(value, dict) else f"{key}[{k}]",
                                           depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        yield key, f"must be a finite number, got {value}"
    elif isinstance(value, int) and not -2**63 <= value < 2**63:
        yield key, f"must fit in 64 bits, got {brief(value)}"
    elif isinstance(value, str) and not is_text(value):
        yield key, "must be text without NUL characters or invalid UTF-8"
