"""Malformed configs: generated YAML files, `base` chains and key=value overrides through `load_config`,
and a few through the CLI. A config either loads, with every key of its declared type and a YAML dump that
loads back to the same config, or fails with one line naming the file or the key."""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import typing
from typing import Any, Optional

import yaml

from ray_distill.config import ExperimentConfig, load_config, to_yaml

from conftest import REPO
from fuzzing import INVALID_UTF8, Case, cli, cli_problem, error_problem, inserted, line_at, outcome, run_cases, \
    truncated

QUICKSTART = REPO / "experiments" / "quickstart.yaml"
HINTS = {s.name: typing.get_type_hints(s.default_factory) for s in dataclasses.fields(ExperimentConfig)}
KEYS = [f"{section}.{key}" for section, hints in HINTS.items() for key in hints]
# Values of every wrong type for some key, NaN and infinities, a megabyte, beyond 64 bits, empty.
WRONG = ([1, 2], {"a": 1}, "text", 3.5, True, None, -7, 10**30, float("nan"), float("-inf"), "x" * (1 << 20), "",
         [[1]], {"a": {"b": [None]}})


def conforms(value: Any, hint: Any) -> bool:
    """Whether a loaded value has the type its schema field declares."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        return any(conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is typing.Any:
        return True
    if origin is list:
        return isinstance(value, list) and all(conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and conforms(v, args[1]) for k, v in value.items())
    if hint is float:
        return isinstance(value, float) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def loaded_problem(config: ExperimentConfig, tmp_path, reload: bool = True) -> Optional[str]:
    """Why a config that loaded is not a valid one: a key of the wrong type, or (`reload`) a dump that loads
    back otherwise."""
    for section, hints in HINTS.items():
        for key, hint in hints.items():
            if not conforms(getattr(getattr(config, section), key), hint):
                return f"loaded {section}.{key} = {getattr(getattr(config, section), key)!r:.100}, not a {hint}"
    if not reload:
        return None
    dumped = tmp_path / "reloaded.yaml"
    dumped.write_text(to_yaml(config))
    reloaded, error = outcome(load_config, dumped)
    if error is not None or reloaded != config:
        return f"its dump does not load back the same: {error!r:.300}"
    return None


def seed_mapping() -> dict:
    """The quickstart with every key spelled out (and interpolations resolved)."""
    return yaml.safe_load(to_yaml(load_config(QUICKSTART)))


def generate(tmp_path) -> list[Case]:
    rng = random.Random(17)
    text = QUICKSTART.read_bytes()
    full = seed_mapping()
    bases = tmp_path / "bases"
    bases.mkdir()
    cases: list[Case] = []

    def add(name: str, data: bytes, names=(), expect=None, must: Optional[str] = None, directory=tmp_path) -> None:
        """`must`: "fail", "load" or None (either, as the oracle allows)."""
        path = directory / f"{name}.yaml"
        path.write_bytes(data)
        here = [tuple(str(path) if a == "FILE" else a for a in n) if isinstance(n, tuple) else
                str(path) if n == "FILE" else n for n in names]
        cases.append(Case(name, path, here, expect, {"must": must}))

    def dumped(mapping: dict) -> bytes:
        return yaml.safe_dump(mapping, allow_unicode=True).encode()

    for n in range(40):
        offset, data = truncated(rng, text)
        add(f"truncated-{n}-at-{offset}", data, [("FILE", *KEYS)])
    for n in range(25):
        offset, data = inserted(rng, text, rng.choice(INVALID_UTF8))
        add(f"invalid-utf8-{n}-at-{offset}", data, ["FILE", f"line {line_at(data, offset)}"], must="fail")
    for n in range(10):
        offset, data = inserted(rng, text, b"\x00")
        add(f"nul-byte-{n}-at-{offset}", data, ["FILE", f"line {line_at(data, offset)}"], must="fail")
    for key in KEYS:  # every key once, with a value of a wrong type (or none at all)
        section, name = key.split(".")
        mapping = copy.deepcopy(full)
        value = rng.choice(WRONG)
        mapping[section][name] = value
        add(f"wrong-type-{key}-{type(value).__name__}", dumped(mapping), [key], expect=(section, name, value))
    lines = text.splitlines(keepends=True)
    keyed = [n for n, line in enumerate(lines) if line.startswith(b"  ") and b":" in line
             and not line.strip().startswith(b"#")]
    for n in rng.sample(keyed, 10):
        add(f"duplicate-key-line-{n + 2}", b"".join(lines[:n + 1] + [lines[n]] + lines[n + 1:]),
            ["FILE", f"line {n + 2}", "duplicate"], must="fail")
    add("duplicate-section", text + b"run:\n  name: again\n", ["FILE", "duplicate key run"], must="fail")
    for key in rng.sample(KEYS, 10):
        section, name = key.split(".")
        mapping = copy.deepcopy(full)
        del mapping[section][name]
        add(f"missing-{key}", dumped(mapping), [key], expect=("default", section, name))
    for section in rng.sample(sorted(HINTS), 5):
        mapping = copy.deepcopy(full)
        mapping[section]["zz_extra"] = 1
        add(f"extra-key-{section}", dumped(mapping), [f"unknown key '{section}.zz_extra'", "FILE"], must="fail")
    add("extra-section", dumped({**full, "zz_section": {"a": 1}}), ["unknown key 'zz_section'", "FILE"], must="fail")
    empties = {"empty": b"", "blank": b"\n\n   \n", "comment": b"# nothing set\n", "bom": b"\xef\xbb\xbf"}
    for name, data in empties.items():
        add(f"empty-{name}", data, expect="defaults", must="load")
    for name, data, names in (
            ("top-level-list", b"- run\n- world\n", ["mapping"]),
            ("top-level-scalar", b"just words\n", []),
            ("utf16", "run:\n  name: a\n".encode("utf-16"), ["UTF-8"]),
            ("section-is-list", b"run: [1, 2]\n", ["run"]),
            ("section-is-null", b"world: null\n", ["world"]),
            ("mapping-for-list", b"run:\n  stages: {world: 1}\n", ["run.stages"]),
            ("list-for-mapping", b"benchmarks:\n  files: [a, b]\n", ["benchmarks.files"]),
            ("null-key", b"~: 1\n", []),
            ("deep-flow", b"teacher_engine:\n  options: {a: " + b"[" * 3000 + b"]" * 3000 + b"}\n", []),
            ("deep-block", b"teacher_engine:\n  options:\n" +
             b"".join(b"  " * (i + 2) + b"a:\n" for i in range(3000)), []),
            ("int-of-5000-digits", b"world:\n  seed: " + b"9" * 5000 + b"\n", []),
            ("billion-laughs", b'a: &a ["x","x"]\nb: &b [*a,*a]\nc: &c [*b,*b]\nd: &d [*c,*c]\n', ["'a'"]),
            ("python-tag", b"run: !!python/object/apply:os.system ['true']\n", []),
            ("bad-interpolation", b"run:\n  name: ${oops\n", ["run.name"])):
        add(name, data, ["FILE", *names], must="fail")
    add("deep-flow-900", b"teacher_engine:\n  options: {a: " + b"[" * 900 + b"]" * 900 + b"}\n", ["FILE"])
    add("interpolation-cycle", b"run:\n  name: ${run.dir}\n  dir: ${run.name}\n", ["run.name"], must="fail")
    add("unknown-stages", dumped({**full, "run": {**full["run"], "stages": [f"s{n}" for n in range(5000)]}}),
        ["run.stages", "more"], must="fail")
    add("stage-twice-5000", dumped({**full, "run": {**full["run"], "stages": ["world"] * 5000}}),
        ["run.stages", "twice"], must="fail")
    (bases / "broken.yaml").write_bytes(b"run:\n  name: \xff\n")
    (bases / "cycle.yaml").write_text("base: cycle.yaml\n")
    for name, value, names in (("missing", "nowhere.yaml", ["nowhere.yaml"]),
                               ("broken", "broken.yaml", ["broken.yaml", "line 2"]),
                               ("cycle", "cycle.yaml", ["cycle"]), ("list", [1], ["base"]),
                               ("nul", "a\x00b", ["base"]), ("directory", ".", [str(bases)])):
        add(f"base-{name}", dumped({"base": value, "run": {"name": "x"}}), names, must="fail", directory=bases)
    return cases


def override_cases() -> list[Case]:
    rng = random.Random(18)
    cases = []
    for key in rng.sample(KEYS, 40):
        value = rng.choice(["[1", "{a: [}", "[1, 2]", "{a: 1}", ".nan", "-.inf", "9" * 5000, "x" * 100_000,
                            "${nowhere}", "'unterminated", "\udcff", "a\x00b", "[" * 2000])
        cases.append(Case(f"override-{key}-{value[:6]!r}", [f"{key}={value}"], [key]))
    for item, names in (("justakey", ["justakey"]), ("=1", ["=1"]), ("nosection.key=1", ["nosection"]),
                        ("run.nokey=1", ["run.nokey"]), ("run=1", ["run"]), ("run.name.deeper=1", ["run.name"])):
        cases.append(Case(f"override-{item}", [item], names))
    return cases


def test_generated_config_files_load_or_name_the_file_or_key(tmp_path):
    defaults = load_config(None)
    cases = generate(tmp_path)

    def check(case: Case) -> Optional[str]:
        config, error = outcome(load_config, case.data)
        if error is not None:
            return "failed, though it must load" if case.extra["must"] == "load" else error_problem(error, case.names)
        if case.extra["must"] == "fail":
            return "loaded, though it must fail"
        if case.expect == "defaults" and config != defaults:
            return "an empty file did not give the defaults"
        if isinstance(case.expect, tuple) and case.expect[0] == "default":
            _, section, name = case.expect
            if getattr(getattr(config, section), name) != getattr(getattr(defaults, section), name):
                return f"a missing {section}.{name} did not take its default"
        elif isinstance(case.expect, tuple):
            section, name, value = case.expect
            got = getattr(getattr(config, section), name)
            if conforms(value, HINTS[section][name]) and got != value:
                return f"{section}.{name} loaded as {got!r:.100}, not as written"
        # A reload per case would double the time; the cases that set one key carry the check.
        return loaded_problem(config, tmp_path, reload=isinstance(case.expect, tuple))

    run_cases(cases, check)


def test_generated_overrides_load_or_name_the_override(tmp_path):
    cases = override_cases()

    def check(case: Case) -> Optional[str]:
        config, error = outcome(load_config, QUICKSTART, case.data)
        if error is not None:
            return error_problem(error, case.names)
        return loaded_problem(config, tmp_path)

    run_cases(cases, check, minimum=40)


def test_bad_configs_through_the_cli_are_one_line_without_traceback(tmp_path):
    bad_utf8 = tmp_path / "bad.yaml"
    bad_utf8.write_bytes(b"run:\n  name: quick\xffstart\n")
    wrong_container = tmp_path / "container.yaml"
    wrong_container.write_text("run:\n  stages: {world: 1}\n")
    for args, names in (
        (["config", "show", str(bad_utf8)], [str(bad_utf8), "line 2", "UTF-8"]),
        (["config", "show", str(wrong_container)], [str(wrong_container), "run.stages"]),
        (["config", "show", str(QUICKSTART), "world.seed=[1"], ["world.seed"]),
        (["config", "show", str(QUICKSTART), b"run.name=quick\xffstart"], ["run.name"]),
    ):
        assert not cli_problem(cli(*args), names), (args, cli_problem(cli(*args), names))
