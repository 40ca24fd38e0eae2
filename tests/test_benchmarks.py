from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_distill.data.benchmarks import (
    BENCHMARKS, EVALUATION_BENCHMARKS, find_benchmark, load_benchmark, load_file,
)
from ray_distill.errors import DataError

# file -> (examples kept, null answers skipped)
EXPECTED = {
    "hotpotqa_1000_20250402.json": (1000, 0),
    "hotpotqa_500_20250422.json": (500, 0),
    "math_1000_20250414.json": (1000, 0),
    "math_500_20250414.json": (500, 0),
    "math_medium_1000_20250430.json": (998, 2),
}


def test_every_shared_benchmark_file_loads(shared_benchmarks, caplog):
    files = sorted(p.name for p in shared_benchmarks.iterdir() if p.suffix in (".json", ".jsonl", ".parquet"))
    assert files, "no benchmark files to test"
    for name in files:
        with caplog.at_level(logging.WARNING):
            bench = load_file(shared_benchmarks / name)
        keys = [e.key for e in bench.examples]
        assert len(keys) == len(set(keys))
        assert all(isinstance(e.id, str) and e.question and isinstance(e.answer, str) for e in bench.examples)
        if name in EXPECTED:
            assert (len(bench.examples), bench.skipped_null_answers) == EXPECTED[name]
    assert "math_medium_1000_20250430.json: skipped 2 record(s) with a null answer" in caplog.text


def test_registry_finds_the_paper_files_by_name(shared_benchmarks):
    assert len(EVALUATION_BENCHMARKS) == 8
    found = {
        "hotpotqa-train": "hotpotqa_1000_20250402.json",
        "math-hard-train": "math_1000_20250414.json",
        "math-medium-train": "math_medium_1000_20250430.json",
        "hotpotqa": "hotpotqa_500_20250422.json",
        "math500": "math_500_20250414.json",
    }
    for name, file in found.items():
        assert find_benchmark(name, shared_benchmarks).name == file
    bench = load_benchmark("math500", shared_benchmarks)
    assert bench.dataset == "math500" and bench.examples[0].key == ("math500", "0")
    with pytest.raises(DataError, match="benchmark 'musique' not found .*benchmarks.files.musique"):
        find_benchmark("musique", shared_benchmarks)


def test_registry_file_overrides_and_newest_version(tmp_path):
    record = {"id": 1, "question": "q?", "answer": "a"}
    for name in ("aime_2024.jsonl", "aime_2025.jsonl", "custom.jsonl"):
        (tmp_path / name).write_text(json.dumps(record) + "\n")
    assert find_benchmark("aime", tmp_path).name == "aime_2025.jsonl"
    assert find_benchmark("aime", tmp_path, {"aime": "custom.jsonl"}).name == "custom.jsonl"
    with pytest.raises(DataError, match="configured file .* does not exist"):
        find_benchmark("aime", tmp_path, {"aime": "gone.jsonl"})
    with pytest.raises(DataError, match="unknown benchmark 'nq'"):
        find_benchmark("nq", tmp_path)
    assert set(BENCHMARKS) >= set(EVALUATION_BENCHMARKS)


def test_jsonl_and_parquet_match_json(tmp_path):
    records = [
        {"id": "a", "question": "Who?", "answer": "Ann", "level": "hard"},
        {"id": 7, "question": "How much?", "answer": 561161.7000000001},
        {"id": "c", "question": "Which?", "answer": ["Paris", "Paris, France"]},
    ]
    (tmp_path / "b.json").write_text(json.dumps({"metadata": {}, "examples": records}))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    loaded = {ext: load_file(tmp_path / f"b.{ext}", dataset="b").examples for ext in ("json", "jsonl")}
    assert loaded["json"] == loaded["jsonl"]
    simple = [r for r in records if not isinstance(r["answer"], (list, float))]
    pq.write_table(pa.Table.from_pylist(simple), tmp_path / "b.parquet")
    assert load_file(tmp_path / "b.parquet", dataset="b").examples == loaded["json"][:1]
    by_id = {e.id: e for e in loaded["json"]}
    assert by_id["7"].answer == "561161.7000000001"  # exact digits kept
    assert by_id["c"].answer == "Paris" and by_id["c"].metadata["aliases"] == ["Paris", "Paris, France"]
    assert by_id["a"].metadata == {"level": "hard"}


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("x.json", "{not json", r"x.json: line 1 is not valid JSON"),
        ("x.json", '{"metadata": {}}', r"expected a list under 'examples'"),
        ("x.json", "[1]", r"x.json: record 0: expected an object"),
        ("x.jsonl", '{"id": 1, "question": "q", "answer": "a"}\n{bad', r"x.jsonl: line 2 is not valid JSON"),
        ("x.jsonl", '\n{"id": 1, "question": "q"}', r"x.jsonl: line 2: missing field 'answer'"),
        ("x.jsonl", '{"id": 1, "question": "q", "answer": "a"}\n{"id": 1, "question": "r", "answer": "b"}',
         r"line 2: duplicate id '1' \(first at line 1\)"),
        ("x.jsonl", '{"id": null, "question": "q", "answer": "a"}', r"'id' must be a string or an integer"),
        ("x.jsonl", '{"id": 1, "question": "", "answer": "a"}', r"'question' must be a non-empty string"),
        ("x.jsonl", '{"id": 1, "question": "q", "answer": true}', r"'answer' must be a string"),
        ("x.csv", "id,question,answer", r"unsupported format '.csv'"),
        ("x.parquet", "not parquet", r"not a readable Parquet file"),
    ],
)
def test_malformed_files_name_file_and_record(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        load_file(tmp_path / name)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="benchmark file not found"):
        load_file(tmp_path / "none.json")


REFERENCE_FILES = {
    "hotpotqa-train": "hotpotqa_1000_20250402.json",
    "math-hard-train": "math_1000_20250414.json",
    "math-medium-train": "math_medium_1000_20250430.json",
    "hotpotqa": "hotpotqa_500_20250422.json",
    "math500": "math_500_20250414.json",
    "bamboogle": "bamboogle_125_20250507.json",
    "musique": "musique_500_20250504.json",
    "2wikimultihopqa": "2wikimultihopqa_500_20250511.json",
    "gsm-hard": "gsm_hard_500_20250507.json",
    "aime": "aime_90_20250504.json",
    "olymmath": "olymath_200_20250511.json",  # one m, as the reference repository names it
}


@pytest.mark.parametrize("name", sorted(REFERENCE_FILES))
def test_registry_finds_every_reference_file_by_its_name(tmp_path, name):
    for file in REFERENCE_FILES.values():
        (tmp_path / file).write_text(json.dumps([{"id": 0, "question": "q?", "answer": "a"}]))
    assert set(REFERENCE_FILES) == set(BENCHMARKS)
    assert find_benchmark(name, tmp_path).name == REFERENCE_FILES[name]
    assert load_benchmark(name, tmp_path).examples[0].question == "q?"
