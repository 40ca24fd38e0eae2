"""Malformed data files: benchmark files (JSON, JSONL, Parquet) through `load_file`, corpora (JSONL, JSONL.gz,
Parquet) through the index stage's split (which reads them with `read_corpus`), and a few of each through
the CLI. A file either loads exactly the records the oracle finds in it, or fails with one line naming the
file and the record; a failed split leaves no `split.json`, the mark of a finished one."""

from __future__ import annotations

import copy
import gzip
import io
import json
import random
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from ray_distill.config import load_config
from ray_distill.data.benchmarks import load_file
from ray_distill.stages.base import StageContext
from ray_distill.stages.index import _split
from ray_distill.stages.paths import SPLIT

from conftest import REPO, SHARED_BENCHMARKS
from fuzzing import INVALID_UTF8, Case, cli, cli_problem, error_problem, inserted, line_at, outcome, run_cases, \
    truncated

QUICKSTART = REPO / "experiments" / "quickstart.yaml"
BIG = "x" * (2 << 20)

QUESTIONS = [
    {"id": 0, "question": "What is 17 * 23?", "answer": "391", "level": 2},
    {"id": "b1", "question": "Who wrote it?", "answer": ["Ann", "Ann Lee"]},
    {"id": 2, "question": "How much?", "answer": 561161.7000000001},
    {"id": 3, "question": "How many?", "answer": 42, "type": "count"},
    {"id": "e", "question": "Which one?\nThe first.", "answer": "the first"},
    {"id": 5, "question": "Null answer?", "answer": None},
    {"id": 6, "question": "Unicode? café ∑ 🙂", "answer": "ünï"},
    {"id": 7, "question": "Last?", "answer": "yes", "meta": {"nested": [1, {"a": None}]}},
]
PASSAGES = [{"id": n if n % 3 else f"p{n}", "contents": f"Title {n} ∑\nText of passage {n}, café."}
            for n in range(12)]

# Per field: values a record may not hold there, and values it may (each case changes one record).
BAD = {"id": [None, 1.5, True, [1], {"a": 1}, float("nan")],
       "question": [None, 7, "", "  \n ", ["q"], {"q": 1}, True],
       "answer": [True, {"a": 1}, [1, 2], [], [None], float("nan"), float("inf"), ["a", 1]],
       "contents": [None, 5, ["a"], {"a": 1}, True, 1.5]}
GOOD = {"id": ["", "an id with spaces", 10**18, -3, "ünï"],
        "question": ["q\x00with a NUL", BIG, "?"],
        "answer": [7, -2.5, ["x", "y"], "", BIG],
        "contents": ["", "no title line", "a\x00b", BIG]}


def benchmark_examples(records: list) -> list[tuple[str, str, str]]:
    """What a valid benchmark file holds, by the format's definition: null answers skipped, a list of
    aliases answered by its first, numbers by their repr."""
    return [(str(r["id"]), r["question"], a[0] if isinstance(a, list) else a if isinstance(a, str) else repr(a))
            for r in records for a in [r["answer"]] if a is not None]


def corpus_passages(records: list) -> list[dict]:
    return [{"id": str(r["id"]), "contents": r["contents"]} for r in records]


def jsonl(records: list) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def stdlib_jsonl(data: bytes) -> tuple[Optional[list], Optional[int]]:
    """(records, None) or (None, first bad line): the standard library's reading of a JSONL file."""
    records = []
    for n, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            records.append(json.loads(raw.decode("utf-8")))
        except ValueError:
            return None, n
    return records, None


def stdlib_json(data: bytes) -> tuple[Any, Optional[int]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, line_at(data, e.start)
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, e.lineno


def record_variants(rng: random.Random, seed: list,
                    fields: tuple[str, ...]) -> list[tuple[str, list, Optional[int], list]]:
    """(name, records, index of the record an error must name or None if they load, further names)."""
    out = []

    def at() -> int:
        return rng.randrange(len(seed))

    def changed(i: int, **values) -> list:
        records = copy.deepcopy(seed)
        records[i] = {**records[i], **values}
        return records

    for key in fields:
        for n, value in enumerate(BAD[key]):
            i = at()
            out.append((f"bad-{key}-{n}-at-{i}", changed(i, **{key: value}), i, [repr(key)]))
        for n, value in enumerate(GOOD[key]):
            i = at()
            out.append((f"good-{key}-{n}-at-{i}", changed(i, **{key: value}), None, []))
        i = at()
        records = copy.deepcopy(seed)
        del records[i][key]
        out.append((f"missing-{key}-at-{i}", records, i, [f"missing field {key!r}"]))
    for n, extra in enumerate([{"extra": 1}, {"zz": {"deep": [[[None]]]}}, {"big": BIG}, {"nan": float("nan")}]):
        i = at()
        out.append((f"extra-key-{n}-at-{i}", changed(i, **extra), None, []))
    for n, thing in enumerate([[1], "a string", None, 5]):
        i = at()
        records = copy.deepcopy(seed)
        records[i] = thing
        out.append((f"not-an-object-{n}-at-{i}", records, i, ["expected an object"]))
    for n in range(4):
        i, j = sorted(rng.sample(range(len(seed)), 2))
        twin = seed[i]["id"] if n % 2 else str(seed[i]["id"])  # 3 and "3" are the same id
        out.append((f"duplicate-id-{n}-{i}-{j}", changed(j, id=twin), j, ["duplicate id"]))
    return out


class Benchmarks:
    """Cases for `load_file`: data, the file's suffix, and what must come of it."""

    def __init__(self, tmp_path: Path):
        self.dir = tmp_path / "benchmarks"
        self.dir.mkdir()
        self.cases: list[Case] = []

    def add(self, name: str, suffix: str, data: bytes, names: Optional[list] = None, expect=None) -> None:
        """`names` given: the load must fail naming them (and the file); else it must give `expect`."""
        path = self.dir / f"{name}{suffix}"
        path.write_bytes(data)
        self.cases.append(Case(f"{name}{suffix}", path, None if names is None else [str(path), *names], expect))

    def from_bytes(self, name: str, suffix: str, data: bytes) -> None:
        """A case whose outcome the standard library's reading decides."""
        if suffix == ".jsonl":
            records, bad = stdlib_jsonl(data)
        else:
            payload, bad = stdlib_json(data)
            records = payload["examples"] if isinstance(payload, dict) else payload
        self.add(name, suffix, data, None if bad is None else [f"line {bad}"],
                 None if bad is not None else benchmark_examples(records))


def benchmark_cases(tmp_path: Path) -> list[Case]:
    rng = random.Random(23)
    b = Benchmarks(tmp_path)
    fields = ("id", "question", "answer")
    for name, records, i, names in record_variants(rng, QUESTIONS, fields) + record_variants(rng, QUESTIONS, fields):
        if any(c.name == f"{name}.jsonl" for c in b.cases):  # the same change drawn twice
            continue
        expect = benchmark_examples(records) if i is None else None
        b.add(name, ".jsonl", jsonl(records), None if i is None else [f"line {i + 1}", *names], expect)
        b.add(name, ".json", json.dumps({"metadata": {}, "examples": records}, ensure_ascii=False).encode(),
              None if i is None else [f"record {i}", *names], expect)
    deep = {"id": 9, "question": "deep?", "answer": "a", "meta": json.loads("[" * 500 + "]" * 500)}
    b.add("deep-500", ".jsonl", jsonl(QUESTIONS + [deep]), expect=benchmark_examples(QUESTIONS + [deep]))
    too_deep = jsonl(QUESTIONS) + b'{"id": 9, "question": "q", "answer": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    b.add("deep-100000", ".jsonl", too_deep, [f"line {len(QUESTIONS) + 1}", "nested too deeply"])
    b.add("deep-100000", ".json", b"[" * 100_000 + b"]" * 100_000, ["nested too deeply"])
    b.add("int-of-5000-digits", ".jsonl", b'{"id": ' + b"9" * 5000 + b', "question": "q", "answer": "a"}\n', ["line 1"])

    text = jsonl(QUESTIONS)
    real = SHARED_BENCHMARKS / "math_500_20250414.json"
    whole = real.read_bytes() if real.is_file() else \
        json.dumps({"metadata": {}, "examples": QUESTIONS}, indent=2).encode()
    spoilers = {"truncated": lambda data: truncated(rng, data),
                "invalid-utf8": lambda data: inserted(rng, data, rng.choice(INVALID_UTF8)),
                "nul-byte": lambda data: inserted(rng, data, b"\x00")}
    for kind, suffix, data, count in (("truncated", ".jsonl", text, 20), ("invalid-utf8", ".jsonl", text, 12),
                                      ("nul-byte", ".jsonl", text, 8), ("truncated", ".json", whole, 12),
                                      ("invalid-utf8", ".json", whole, 8)):
        for n in range(count):
            offset, spoiled = spoilers[kind](data)
            b.from_bytes(f"{kind}-{n}-at-{offset}", suffix, spoiled)
    b.add("crlf", ".jsonl", text.replace(b"\n", b"\r\n"), expect=benchmark_examples(QUESTIONS))
    b.add("bom", ".jsonl", b"\xef\xbb\xbf" + text, expect=benchmark_examples(QUESTIONS))
    b.add("bom", ".json", b"\xef\xbb\xbf" + json.dumps(QUESTIONS).encode(), expect=benchmark_examples(QUESTIONS))
    for suffix, data, names in ((".json", b"", ["line 1"]), (".jsonl", b"", None), (".jsonl", b"\n \n\t\n", None),
                                (".parquet", b"", ["Parquet"]), (".json", b"[]", None), (".json", b"{}", ["examples"]),
                                (".json", b'"text"', ["list of records"]), (".json", b"null", ["list of records"])):
        b.add(f"empty-{len(b.cases)}", suffix, data, names, None if names else [])

    table = pa.Table.from_pylist([{"id": str(r["id"]), "question": r["question"], "answer": str(r["answer"])}
                                  for r in QUESTIONS if not isinstance(r["answer"], list)])
    rows = table.to_pylist()
    whole = parquet(table)
    for n in range(6):
        offset, data = truncated(rng, whole)
        b.add(f"truncated-{n}-at-{offset}", ".parquet", data, ["Parquet"])
    b.add("junk-before", ".parquet", b"junk" + whole, ["Parquet"])
    b.add("junk-after", ".parquet", whole + b"junk", ["Parquet"])
    b.add("good", ".parquet", whole, expect=benchmark_examples(rows))
    for name, column, values, names in (
            ("id-float", "id", [0.5 + n for n in range(len(rows))], ["record 0", "'id'"]),
            ("id-bool", "id", [n % 2 == 0 for n in range(len(rows))], ["record 0", "'id'"]),
            ("question-int", "question", list(range(len(rows))), ["record 0", "'question'"]),
            ("question-null", "question", [None] + [r["question"] for r in rows[1:]], ["record 0", "'question'"]),
            ("answer-nan", "answer", [float("nan")] + [float(n) for n in range(1, len(rows))],
             ["record 0", "'answer'"]),
            ("answer-struct", "answer", [{"a": n} for n in range(len(rows))], ["record 0", "'answer'"]),
            ("answer-bool", "answer", [True] * len(rows), ["record 0", "'answer'"]),
            ("id-twice", "id", ["a", "b", "a"] + [f"c{n}" for n in range(len(rows) - 3)],
             ["record 2", "duplicate id"]),
            ("answers-as-aliases", "answer", [["x", "y"]] * len(rows), None),
            ("id-int64", "id", list(range(len(rows))), None)):
        changed = table.set_column(table.schema.get_field_index(column), column, pa.array(values))
        b.add(f"column-{name}", ".parquet", parquet(changed), names,
              None if names else benchmark_examples(changed.to_pylist()))
    b.add("column-missing-answer", ".parquet", parquet(table.drop_columns(["answer"])), ["record 0", "'answer'"])
    b.add("column-extra", ".parquet", parquet(table.append_column("extra", pa.array([1.0] * len(rows)))),
          expect=benchmark_examples(rows))
    b.add("no-rows", ".parquet", parquet(table.slice(0, 0)), expect=[])
    return b.cases


def test_generated_benchmark_files_load_or_name_the_file_and_record(tmp_path):
    def check(case: Case) -> Optional[str]:
        bench, error = outcome(load_file, case.data)
        if error is not None:
            return error_problem(error, case.names) if case.names is not None else \
                f"failed, though it holds valid records: {error!r:.300}"
        if case.names is not None:
            return "loaded, though it must fail"
        got = [(e.id, e.question, e.answer) for e in bench.examples]
        return None if got == case.expect else f"loaded {got!r:.300}, not {case.expect!r:.300}"

    run_cases(benchmark_cases(tmp_path), check)


def corpus_cases(tmp_path: Path) -> list[Case]:
    rng = random.Random(29)
    directory = tmp_path / "corpora"
    directory.mkdir()
    cases: list[Case] = []

    def add(name: str, files: dict[str, bytes], names: Optional[list] = None, expect=None) -> None:
        paths = []
        for suffix, data in files.items():
            paths.append(directory / f"{name}{suffix}")
            paths[-1].write_bytes(data)
        cases.append(Case(name, paths, None if names is None else [str(paths[-1]), *names], expect))

    def from_bytes(name: str, data: bytes, compress: bool = False) -> None:
        records, bad = stdlib_jsonl(data)
        add(name, {".jsonl.gz" if compress else ".jsonl": gzipped(data) if compress else data},
            None if bad is None else [f"line {bad}"], None if bad is not None else corpus_passages(records))

    fields = ("id", "contents")
    for name, records, i, names in record_variants(rng, PASSAGES, fields) + record_variants(rng, PASSAGES, fields):
        if any(c.name == f"{name}.jsonl" for c in cases):  # the same change drawn twice
            continue
        for suffix, data in ((".jsonl", jsonl(records)), (".jsonl.gz", gzipped(jsonl(records)))):
            add(f"{name}{suffix}", {suffix: data}, None if i is None else [f"line {i + 1}", *names],
                corpus_passages(records) if i is None else None)
    text = jsonl(PASSAGES)
    for n in range(15):
        offset, data = truncated(rng, text)
        from_bytes(f"truncated-{n}-at-{offset}", data)
    for n in range(10):
        offset, data = inserted(rng, text, rng.choice(INVALID_UTF8))
        from_bytes(f"invalid-utf8-{n}-at-{offset}", data, compress=n % 2 == 1)
    for n in range(5):
        offset, data = inserted(rng, text, b"\x00")
        from_bytes(f"nul-byte-{n}-at-{offset}", data)
    packed = gzipped(text)
    for n in range(10):
        offset, data = truncated(rng, packed)
        add(f"gz-truncated-{n}-at-{offset}", {".jsonl.gz": data}, [])
    for n in range(5):
        offset, data = inserted(rng, packed, b"\x00junk\xff" * 4, start=10)
        add(f"gz-corrupt-{n}-at-{offset}", {".jsonl.gz": data}, [])
    add("gz-not-gzip", {".jsonl.gz": text}, ["gzip"])
    for name, suffix, data in (("empty", ".jsonl", b""), ("blank", ".jsonl", b"\n\n  \n"),
                               ("empty-gz", ".jsonl.gz", gzipped(b""))):
        add(name, {suffix: data}, ["no passages"])
    add("crlf", {".jsonl": text.replace(b"\n", b"\r\n")}, expect=corpus_passages(PASSAGES))
    later = [{"id": "p99", "contents": "b"}, PASSAGES[4]]
    add("duplicate-across-files", {"-a.jsonl": text, "-b.jsonl": jsonl(later)}, ["line 2", "duplicate id"])
    add("two-files", {"-a.jsonl": text, "-b.parquet": parquet(pa.Table.from_pylist(later[:1]))},
        expect=corpus_passages(PASSAGES + later[:1]))

    table = pa.Table.from_pylist(corpus_passages(PASSAGES))
    whole = parquet(table)
    for n in range(5):
        offset, data = truncated(rng, whole)
        add(f"parquet-truncated-{n}-at-{offset}", {".parquet": data}, ["Parquet"])
    add("parquet-good", {".parquet": whole}, expect=corpus_passages(PASSAGES))
    count = len(PASSAGES)
    for name, column, values, names in (
            ("id-float", "id", [0.5 + n for n in range(count)], ["record 0", "'id'"]),
            ("id-int64", "id", list(range(count)), None),
            ("id-twice", "id", ["a", "b", "a"] + [f"c{n}" for n in range(count - 3)], ["record 2", "duplicate id"]),
            ("contents-int", "contents", list(range(count)), ["record 0", "'contents'"]),
            ("contents-null", "contents", [None] * count, ["record 0", "'contents'"]),
            ("contents-binary", "contents", [b"\xff\xfe"] * count, ["record 0", "'contents'"])):
        changed = table.set_column(table.schema.get_field_index(column), column, pa.array(values))
        add(f"parquet-{name}", {".parquet": parquet(changed)}, names,
            None if names else corpus_passages(changed.to_pylist()))
    add("parquet-missing-contents", {".parquet": parquet(table.drop_columns(["contents"]))}, ["contents"])
    add("parquet-extra-column", {".parquet": parquet(table.append_column("x", pa.array([1] * count)))},
        expect=corpus_passages(PASSAGES))
    add("parquet-no-rows", {".parquet": parquet(table.slice(0, 0))}, ["no passages"])
    return cases


def shard_passages(out: Path) -> list[dict]:
    split = json.loads((out / SPLIT).read_text())
    return [row for n in range(split["shards"])
            for row in pq.read_table(out / f"shard-{n:05d}" / "passages.parquet").to_pylist()]


def test_generated_corpora_split_or_name_the_file_and_record(tmp_path):
    ctx = StageContext(load_config(None, ["index.passages_per_shard=5"]), tmp_path / "run", progress=False)
    cases = corpus_cases(tmp_path)

    def check(case: Case) -> Optional[str]:
        out = tmp_path / "index" / case.name
        out.mkdir(parents=True)
        done, error = outcome(_split, ctx, out, [str(p) for p in case.data])
        if error is not None:
            if (out / SPLIT).exists():
                return "failed, yet left a split.json that says the split is finished"
            if list(out.rglob("*.tmp")):
                return f"failed, yet left a half-written shard: {sorted(out.rglob('*.tmp'))[0].relative_to(out)}"
            return error_problem(error, case.names) if case.names is not None else \
                f"failed, though it holds valid passages: {error!r:.300}"
        if case.names is not None:
            return "split, though it must fail"
        got = shard_passages(out)
        if got != case.expect or done["passages"] != len(case.expect):
            return f"split into {got!r:.300}, not {case.expect!r:.300}"
        return None

    run_cases(cases, check)


def test_bad_data_files_through_the_cli_are_one_line_without_traceback(tmp_path):
    benchmarks = tmp_path / "benchmarks"
    benchmarks.mkdir()
    corpus = tmp_path / "corpus"
    corpus.mkdir()

    def cot(file: str, data: bytes, names: list) -> None:
        for old in benchmarks.iterdir():
            old.unlink()
        (benchmarks / file).write_bytes(data)
        names = [str(benchmarks / file), *names]
        assert not cli_problem(proc := cli("cot", str(QUICKSTART), "questions.train=[math500]",
                                           f"benchmarks.data_dir={benchmarks}", f"run.dir={tmp_path / 'run'}", "-q"),
                               names), cli_problem(proc, names)

    def index(file: str, data: bytes, names: list) -> None:
        (corpus / file).write_bytes(data)
        names = [str(corpus / file), *names]
        assert not cli_problem(proc := cli("index", str(QUICKSTART), f"index.corpus=[{corpus / file}]",
                                           f"run.dir={tmp_path / 'run'}", "-q"), names), cli_problem(proc, names)

    questions = jsonl(QUESTIONS)
    cot("math_500.jsonl", questions + jsonl(QUESTIONS[:1]), [f"line {len(QUESTIONS) + 1}", "duplicate id"])
    cot("math_500.json", json.dumps(QUESTIONS).encode()[:-7], ["line 1"])
    cot("math_500.jsonl", questions.replace(b"caf\xc3\xa9", b"caf\xe9"), ["line 7", "UTF-8"])
    passages = jsonl(PASSAGES)
    index("truncated.jsonl.gz", gzipped(passages)[:-9], [])
    index("contents.jsonl", passages + b'{"id": "new", "contents": 5}\n', [f"line {len(PASSAGES) + 1}", "'contents'"])
    index("columns.parquet", parquet(pa.Table.from_pylist(corpus_passages(PASSAGES)).drop_columns(["contents"])),
          ["contents"])
    assert not (tmp_path / "run" / "index" / SPLIT).exists()
