from __future__ import annotations

import json
import re
import tracemalloc
from fractions import Fraction
from pathlib import Path

import pytest

from ray_distill.data.benchmarks import load_file
from ray_distill.data.world import Layout, World, generate_questions, iter_passages, read_manifest, write_world


def _write(out: Path, **overrides) -> dict:
    args = dict(seed=3, num_passages=1200, num_fact_questions=80, num_math_questions=60,
                test_fraction=0.25, shard_size=500, progress=False)
    args.update(overrides)
    return write_world(out, **args)


def _corpus(out: Path) -> dict[str, str]:
    passages = {}
    for shard in sorted((out / "corpus").glob("part-*.jsonl")):
        for line in shard.read_text().splitlines():
            record = json.loads(line)
            assert set(record) == {"id", "contents"}
            assert record["id"] not in passages
            passages[record["id"]] = record["contents"]
    return passages


def _questions(out: Path, kind: str) -> list[dict]:
    return [q for split in ("train", "test") for q in json.loads((out / "questions" / f"{kind}_{split}.json").read_text())["examples"]]


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    _write(out)
    return out


@pytest.mark.parametrize("n", [100, 101, 999, 12_345, 10_000_000])
def test_layout_gives_exactly_the_requested_passages(n):
    layout = Layout.for_passages(n)
    assert layout.num_passages == n
    assert min(layout.countries, layout.cities, layout.orgs, layout.persons) > 0
    assert layout.cities >= layout.countries  # every country has its capital


def test_same_seed_same_bytes_other_seed_other_world(tmp_path, world_dir):
    _write(tmp_path / "again")
    _write(tmp_path / "other", seed=4)
    files = sorted(p.relative_to(world_dir) for p in world_dir.rglob("*") if p.is_file())
    assert files
    for rel in files:
        assert (tmp_path / "again" / rel).read_bytes() == (world_dir / rel).read_bytes(), rel
    assert (tmp_path / "other" / "corpus" / "part-00000.jsonl").read_bytes() != (world_dir / "corpus" / "part-00000.jsonl").read_bytes()


def test_corpus_is_sharded_with_unique_ids_and_one_title_per_entity(world_dir):
    manifest = read_manifest(world_dir)
    assert manifest["corpus"] == [f"corpus/part-{i:05d}.jsonl" for i in range(3)]  # 1200 / 500
    corpus = _corpus(world_dir)
    assert sorted(corpus, key=int) == [str(i) for i in range(1200)]
    layout = Layout(**manifest["layout"])
    titles = [c.split("\n", 1)[0] for c in corpus.values()]
    # persons have two passages under one title; every other entity one
    assert len(set(titles)) == layout.countries + layout.cities + layout.orgs + layout.persons
    words = [len(c.split()) for c in corpus.values()]
    assert 40 <= sum(words) / len(words) <= 120


def test_fact_answers_are_derivable_from_the_cited_passages(world_dir):
    corpus = _corpus(world_dir)
    questions = _questions(world_dir, "fact")
    assert len(questions) == 80
    assert len({q["question"] for q in questions}) == 80
    assert {q["level"] for q in questions} == {2, 3}
    assert len({q["type"] for q in questions}) == 8
    for q in questions:
        hops = q["hops"]
        assert q["level"] == len(hops)
        for hop in hops:
            contents = corpus[hop["passage_id"]]
            assert contents.split("\n", 1)[0] == hop["title"]
            assert hop["fact"] in contents, (q["question"], hop)
        if q["type"].startswith("comparison"):
            years = {h["title"]: int(re.search(r"in (\d{4})\.$", h["fact"]).group(1)) for h in hops}
            assert q["answer"] == min(years, key=years.get)
            assert all(title in q["question"] for title in years)
        else:
            assert hops[0]["title"] in q["question"]
            for here, there in zip(hops, hops[1:]):
                assert there["title"] in here["fact"], "each hop names the entity of the next"
            assert q["answer"] in hops[-1]["fact"]


def _recompute(q: dict) -> str:
    nums = [int(x) for x in re.findall(r"(?<![\w/])\d+(?![\w/])", q["question"])]
    kind = q["type"]
    if kind == "math_multiply_subtract":
        boxes, per_box, given = nums
        return str(boxes * per_box - given)
    if kind == "math_distance":
        v1, h1, v2, h2 = nums
        return str(v1 * h1 + v2 * h2)
    if kind == "math_percent":
        staff, pct, left = nums
        return str(staff + staff * pct // 100 - left)
    if kind == "math_average":
        a, b, c, target = nums
        return str(4 * target - a - b - c)
    if kind == "math_area":
        width, length, path = nums
        return str((width + 2 * path) * (length + 2 * path) - width * length)
    if kind == "math_fraction":
        a, b = (int(x) for x in re.findall(r"1/(\d+)", q["question"]))
        rest = 1 - Fraction(1, a) - Fraction(1, b)
        return f"\\frac{{{rest.numerator}}}{{{rest.denominator}}}"
    raise AssertionError(f"unknown math type {kind}")


def test_math_answers_follow_from_the_question_text(world_dir):
    questions = _questions(world_dir, "math")
    assert len(questions) == 60 and len({q["type"] for q in questions}) == 6
    for q in questions:
        assert q["answer"] == _recompute(q), q


def test_math_solutions_print_their_answers(world_dir):
    import contextlib
    import io

    from ray_distill.scoring import score_answer

    for q in _questions(world_dir, "math"):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(q["solution"], {})
        assert score_answer("math", printed.getvalue().strip(), q["answer"]).correct, q


def test_question_files_are_benchmarks_with_disjoint_splits(world_dir):
    train = load_file(world_dir / "questions" / "fact_train.json")
    test = load_file(world_dir / "questions" / "fact_test.json")
    assert (len(train.examples), len(test.examples)) == (60, 20)
    assert not {e.question for e in train.examples} & {e.question for e in test.examples}
    assert test.examples[0].metadata["split"] == "test"


def test_small_world_cannot_hold_more_questions_than_it_has():
    with pytest.raises(ValueError, match="too small"):
        generate_questions(World(0, 100), 5000, "fact", 0)


def _peak_bytes(out: Path, n: int) -> int:
    tracemalloc.start()
    _write(out, num_passages=n, num_fact_questions=20, num_math_questions=20, shard_size=10_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_does_not_grow_with_corpus_size(tmp_path):
    small = _peak_bytes(tmp_path / "small", 2_000)
    large = _peak_bytes(tmp_path / "large", 30_000)
    assert len(read_manifest(tmp_path / "large")["corpus"]) == 3
    assert large < 1.5 * small + 512 * 1024, (small, large)


def test_rerun_after_a_crash_replaces_partial_output(tmp_path, monkeypatch):
    import ray_distill.data.world.writer as writer

    def crashing(world):
        for n, passage in enumerate(iter_passages(world)):
            if n == 700:
                raise RuntimeError("simulated crash")
            yield passage

    monkeypatch.setattr(writer, "iter_passages", crashing)
    with pytest.raises(RuntimeError):
        _write(tmp_path)
    assert read_manifest(tmp_path) is None  # an unfinished world has no manifest
    assert list((tmp_path / "corpus").glob("*.tmp"))
    monkeypatch.undo()
    _write(tmp_path)
    assert len(_corpus(tmp_path)) == 1200
    assert not list(tmp_path.rglob("*.tmp"))
