"""Malformed `run.storage`: generated URIs (paths, file://, memory://, S3 on a loopback server, schemes that
cannot work) and corrupt storage indexes, through `RunStorage` push and pull, and a few through the CLI. A
URI either stores the run and gives it back file for file, or fails with one line naming run.storage;
nothing is ever written outside the storage and the run directory, and a failed pull leaves no file that
differs from its stored version under its own name."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Optional

import pytest

from ray_distill.stages.storage import INDEX, RunStorage

from conftest import REPO
from test_storage import make_run
from fuzzing import INVALID_UTF8, Case, cli, cli_problem, error_problem, inserted, outcome, run_cases, truncated

# Schemes a URI may be given here: none of them reaches past this machine (gs://, an s3:// without a
# loopback endpoint, S3:// or a real http:// host would try the network).
SAFE_SCHEMES = ("memory", "file", "nosuch", "s4", "zip", "ftp://127.0.0.1:1", "hdfs", "http://127.0.0.1:1")


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def uri_cases(tmp_path: Path, s3: str) -> list[Case]:
    rng = random.Random(37)
    cases: list[Case] = []
    tails = ["/a b", "/ünï", "/" + "x" * 300, "/\x00", "/\udcff", "/..", "/./x", "//double", "/trailing/", "/%20x",
             "/%zz", "?x=1", "#frag", "/" + "y" * 60, "/a;b", "/a'b\"c", "/\n", "/ ", "/\t", "/a\\b"]
    for n in range(95):
        uri = f"memory://fuzz-{n}/runs/x"
        offset = rng.randrange(len(uri))
        cases.append(Case(f"memory-truncated-{n}-at-{offset}", uri[:offset]))
    for n, tail in enumerate(tails):
        cases.append(Case(f"memory-tail-{n}", f"memory://fuzz-tail-{n}/run{tail}"))
        cases.append(Case(f"path-tail-{n}", f"{tmp_path}/stored/path-{n}{tail}"))
        cases.append(Case(f"file-tail-{n}", f"file://{tmp_path}/stored/file-{n}{tail}"))
    query = f"endpoint_override={s3}&scheme=http&region=us-east-1&allow_bucket_creation=true"
    for n, tail in enumerate(tails[:12]):
        cases.append(Case(f"s3-tail-{n}", f"s3://fuzz/s3-{n}{tail}?{query}"))
    for name, uri in (("s3-good", f"s3://fuzz/good?{query}"), ("s3-no-bucket", f"s3:///x?{query}"),
                      ("s3-bad-bucket", f"s3://Bad_Bucket!/x?{query}"),
                      ("s3-unknown-param", f"s3://fuzz/u?{query}&bogus=1"),
                      ("s3-param-twice", f"s3://fuzz/t?{query}&region=eu-west-1"),
                      ("s3-long-key", f"s3://fuzz/{'k' * 1100}?{query}"), ("s3-nothing", "s3://"),
                      ("file-nothing", "file://"), ("file-root", "file:///"), ("memory-nothing", "memory://"),
                      ("no-scheme", "://x"), ("existing-file", str(REPO / "README.md")),
                      ("inside-a-file", f"{REPO / 'README.md'}/stored"), ("huge", "memory://h/" + "z" * 100_000),
                      ("relative", "relative/stored"), ("dot", "."), ("spaces", "  ")):
        cases.append(Case(name, uri))
    for n, scheme in enumerate(SAFE_SCHEMES):
        cases.append(Case(f"scheme-{n}", f"{scheme}://fuzz-scheme/x" if "://" not in scheme else f"{scheme}/x"))
    for n in range(20):
        uri = f"memory://fuzz-junk-{n}/run"
        offset, junk = rng.randrange(9, len(uri)), rng.choice(["\x00", "\udcff", "%", " ", "?", "#", "\n", "é"])
        cases.append(Case(f"memory-junk-{n}", uri[:offset] + junk + uri[offset:]))
    return cases


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # fsspec's FTP __del__, on refusal
def test_generated_storage_uris_store_the_run_or_name_run_storage(tmp_path, s3_endpoint, monkeypatch):
    made = tmp_path / "made"
    make_run(made, payload=5000)
    expected = tree(made)
    cwd = tmp_path / "cwd"  # where relative paths land
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    root = set(os.listdir("/"))

    def round_trip(case: Case) -> int:
        storage = RunStorage(case.data, made)
        if not storage.root.strip("/"):  # checked before it is done: it may be the local disk's root
            raise AssertionError(f"would store the run at the root of {type(storage.fs).__name__}")
        storage.push([made / "world", made / "manifest.json"])
        return RunStorage(case.data, tmp_path / "fresh" / case.name).pull()

    def check(case: Case) -> Optional[str]:
        fetched, error = outcome(round_trip, case)
        if set(os.listdir("/")) != root:
            return f"wrote to the filesystem's root: {sorted(set(os.listdir('/')) - root)}"
        if error is not None:
            return error_problem(error, ["run.storage"])
        got = tree(tmp_path / "fresh" / case.name)
        return None if got == expected and fetched == len(expected) else f"pulled {sorted(got)}, not {sorted(expected)}"

    run_cases(uri_cases(tmp_path, s3_endpoint), check, minimum=200)


def index_cases(rng: random.Random, index: bytes) -> list[Case]:
    """Stored indexes: (name, bytes, what an error names, or None when the pull must succeed, with the
    files it must fetch)."""
    entries = json.loads(index)
    cases = []
    for n in range(20):
        offset, data = truncated(rng, index)
        cases.append(Case(f"truncated-{n}-at-{offset}", data, [INDEX]))
    for n in range(10):
        offset, data = inserted(rng, index, rng.choice(INVALID_UTF8))
        cases.append(Case(f"invalid-utf8-{n}-at-{offset}", data, [INDEX]))
    for n in range(5):
        offset, data = inserted(rng, index, b"\x00")
        cases.append(Case(f"nul-{n}-at-{offset}", data, [INDEX]))
    for name, data in (("empty", b""), ("list", b"[]"), ("string", b'"x"'), ("null", b"null"), ("number", b"5"),
                       ("deep", b"[" * 100_000 + b"]" * 100_000)):
        cases.append(Case(f"document-{name}", data, [INDEX]))
    some = sorted(entries)[0]
    for n, key in enumerate(["../escaped", "/etc/escaped", "world/../../escaped", "", ".", "world//x", "a\x00b",
                             "world/./x", "world/", "k" * 100_000]):
        cases.append(Case(f"path-{n}", json.dumps({**entries, key: entries[some]}).encode(), [INDEX]))
    for n, version in enumerate([[1], "x", [1.5, 2], [-1, 2], [True, 1], [1, 2**70], None, {}, [1, 2, 3],
                                 [float("nan"), 1]]):
        cases.append(Case(f"version-{n}", json.dumps({**entries, some: version}).encode(), [INDEX, some]))
    size, mtime = entries[some]
    cases.append(Case("size-differs", json.dumps({**entries, some: [size + 7, mtime]}).encode(), [some]))
    cases.append(Case("names-a-missing-file", json.dumps({**entries, "world/gone.txt": [3, mtime]}).encode(),
                      ["world/gone.txt"]))
    cases.append(Case("same-key-twice", b"{" + f'"{some}": [1, 1], '.encode() + index[1:],
                      expect=dict(entries)))
    cases.append(Case("fewer-entries", json.dumps({some: entries[some]}).encode(), expect={some: entries[some]}))
    cases.append(Case("no-entries", b"{}", expect={}))
    cases.append(Case("bom", b"\xef\xbb\xbf" + index, expect=dict(entries)))
    return cases


def test_corrupt_storage_indexes_pull_exactly_or_name_the_index(tmp_path):
    made = tmp_path / "made"
    make_run(made, payload=5000)
    stored = tmp_path / "stored"
    RunStorage(str(stored), made).push([made])
    index = (stored / INDEX).read_bytes()
    outside = {p for p in tmp_path.rglob("*")}
    cases = index_cases(random.Random(41), index)

    def check(case: Case) -> Optional[str]:
        (stored / INDEX).write_bytes(case.data)
        fresh = tmp_path / "fresh" / case.name
        fetched, error = outcome(lambda: RunStorage(str(stored), fresh).pull())
        escaped = {p for p in tmp_path.rglob("*") if not p.is_relative_to(tmp_path / "fresh")} - outside
        if escaped:
            return f"wrote outside the run directory: {sorted(escaped)[:3]}"
        got = tree(fresh) if fresh.exists() else {}
        if any(got[k][0] != (made / k).read_bytes() for k in got):
            return "left a file that differs from its stored version under its own name"
        if error is not None:
            return error_problem(error, ["run.storage", *case.names]) if case.expect is None else \
                f"failed, though the index is usable: {error!r:.300}"
        if case.expect is None:
            return "pulled, though the index is broken"
        want = {k: ((made / k).read_bytes(), case.expect[k][1]) for k in case.expect}
        return None if got == want else f"pulled {sorted(got)}, not {sorted(want)}"

    run_cases(cases, check, minimum=60)


def test_bad_storage_through_the_cli_is_one_line_without_traceback(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / INDEX).write_bytes(b'{"../outside": [1, 2]}')
    for storage, names in (("nosuch://bucket/run", ["run.storage", "nosuch://"]), ("memory://", ["run.storage"]),
                           (str(broken), ["run.storage", INDEX, "../outside"])):
        proc = cli("world", "experiments/quickstart.yaml", f"run.dir={tmp_path / 'run'}", f"run.storage={storage}")
        assert not cli_problem(proc, names), (storage, cli_problem(proc, names))
    assert not (tmp_path / "outside").exists()
