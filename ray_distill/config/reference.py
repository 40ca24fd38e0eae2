"""Markdown reference of every config key, generated from the schemas.

`ray-distill config reference` prints it; docs/CONFIG.md is its committed
output, and a test keeps the two identical.
"""

from __future__ import annotations

import dataclasses
import typing

from ray_distill.config.schema import ExperimentConfig


def _type_name(tp) -> str:
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(args[0])} or null"
    if typing.get_origin(tp) is not None:
        inner = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{typing.get_origin(tp).__name__}[{inner}]"
    return getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return "null" if f.default is None else f"`{f.default}`"
    return f"`{f.default_factory()}`"


def reference() -> str:
    lines = [
        "# Config reference",
        "",
        "Generated from `ray_distill/config/schema.py` by `ray-distill config reference`.",
        "Set keys in a YAML file under `experiments/` or on the command line as `section.key=value`.",
        "",
    ]
    for section in dataclasses.fields(ExperimentConfig):
        cls = section.default_factory
        hints = typing.get_type_hints(cls)
        lines += [f"## `{section.name}`", "", cls.__doc__.strip(), "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            lines.append(
                f"| `{section.name}.{f.name}` | {_type_name(hints[f.name])} | {_default(f)} | {f.metadata['help']} |"
            )
        lines.append("")
    return "\n".join(lines)
