"""`ray-distill view`: the pure logic of each page, then the pages through aiohttp's in-process test server
on a run directory written by the real stores (`viewer_run.make_run`), and the response times on a
100,000-trajectory store."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode

import pyarrow.parquet as pq
import pytest
from aiohttp.test_utils import TestClient, TestServer
from viewer_run import (BASE, COT, DISTILLED, EXPECTED_REASON, FACT, FILTER, GENERATE, KINDS, TRAIN, item, make_big_store,
                        make_run, trajectory_row, write_store)

from ray_distill.cli.main import main
from ray_distill.errors import UserError
from ray_distill.view import markdown, run as discovery, training
from ray_distill.view.app import make_app
from ray_distill.view.query import Filters, LightIndex, find_records, page
from ray_distill.view.trajectory import record_view, votes

MATH_SET = item(1).dataset


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("view"), trajectories=40)


class Elements(HTMLParser):
    """The attributes of every element with a data-testid, by testid, and the text inside each."""

    def __init__(self, html: str):
        super().__init__()
        self.found: dict[str, list[dict]] = {}
        self._open: list[dict] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "data-testid" in attrs:
            attrs["text"] = ""
            self.found.setdefault(attrs["data-testid"], []).append(attrs)
            self._open.append(attrs)
        elif tag not in ("br", "img", "input", "link", "meta", "circle", "line"):
            self._open.append({})

    def handle_endtag(self, tag):
        if self._open and tag not in ("br", "img", "input", "link", "meta", "circle", "line"):
            self._open.pop()

    def handle_data(self, data):
        for element in self._open:
            if "text" in element:
                element["text"] += data

    def __getitem__(self, testid: str) -> list[dict]:
        return self.found.get(testid, [])


class Answers(dict):
    """path -> (status, body, wall seconds, CPU seconds of this process); `startup`: the server's start in
    seconds (it indexes the run's stores)."""

    startup: float


def get_pages(run: Path, paths: list[str]) -> Answers:
    """Each GET, in order, on one in-process server."""
    async def fetch():
        out = Answers()
        started = time.perf_counter()
        async with TestClient(TestServer(make_app(run))) as client:
            out.startup = time.perf_counter() - started
            for path in paths:
                wall, cpu = time.perf_counter(), time.process_time()
                response = await client.get(path)
                body = await response.read()
                out[path] = (response.status, body.decode(errors="replace"), time.perf_counter() - wall,
                             time.process_time() - cpu)
        return out

    return asyncio.run(fetch())


def get(run: Path, path: str) -> Elements:
    status, body, _, _ = get_pages(run, [path])[path]
    assert status == 200, body
    return Elements(body)


def link(path: str, **params) -> str:
    return f"{path}?{urlencode(params)}"


# --- pure logic ------------------------------------------------------------------------------------

def test_discovery_finds_every_store_training_run_and_stage(run_dir):
    assert {s.id for s in discovery.stores(run_dir)} == {COT, GENERATE, FILTER, BASE, DISTILLED}
    assert [t.id for t in discovery.training_runs(run_dir)] == [TRAIN]
    assert discovery.find_training_run(run_dir, TRAIN).source_store(run_dir).id == FILTER
    states = {s["name"]: s["done"] for s in discovery.stage_states(run_dir)}
    assert states["generate"] and not states["world"]
    assert discovery.find_store(run_dir, "../../etc") is None


def test_a_directory_that_is_no_run_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such run directory"):
        discovery.check_run_dir(tmp_path / "missing")
    with pytest.raises(UserError, match="not a run directory"):
        discovery.check_run_dir(tmp_path)


def test_the_command_names_a_bad_target_in_one_line(tmp_path, capsys):
    assert main(["view", str(tmp_path / "nothing")]) == 2
    assert "no such run directory or config" in capsys.readouterr().err


def test_a_config_with_run_storage_views_the_run_fetched_from_it(run_dir, tmp_path):
    """A run made on a cluster that is gone: the config names where it was stored, and the viewer fetches
    it into run.dir first, as `ray-distill run` would."""
    from ray_distill.cli.view import run_directory
    from ray_distill.stages.storage import RunStorage

    stored = tmp_path / "bucket"
    RunStorage(str(stored), run_dir).push([run_dir / name for name in ("manifest.json", "generate", "filter")])
    config = tmp_path / "config.yaml"
    fresh = tmp_path / "fresh"
    config.write_text(f"run:\n  dir: {fresh}\n  storage: {stored}\n")
    assert run_directory(str(config)) == fresh
    assert (fresh / FILTER).read_bytes() == (run_dir / FILTER).read_bytes()
    rows = get(fresh, link("/trajectories", store=GENERATE))["trajectory-row"]
    assert len(rows) == 40


def test_only_requests_addressed_to_loopback_are_answered(run_dir):
    """DNS rebinding: a page elsewhere names its own host, resolved to 127.0.0.1; the viewer refuses it."""
    async def fetch():
        async with TestClient(TestServer(make_app(run_dir))) as client:
            ours = (await client.get("/", headers={"Host": "localhost:8765"})).status
            theirs = (await client.get("/", headers={"Host": "attacker.example:8765"})).status
            return ours, theirs

    assert asyncio.run(fetch()) == (200, 421)


def test_an_empty_store_and_wild_numbers_give_pages_not_errors(run_dir, tmp_path):
    empty = tmp_path / "run"
    shutil.copytree(run_dir, empty)
    for part in (empty / GENERATE / "parts").iterdir():
        part.unlink()  # a generate stage that has just started
    answers = get_pages(empty, [link("/trajectories", store=GENERATE, dataset=FACT, text="capital"),
                                link("/trajectory", store=GENERATE, dataset=FACT, example_id="q00000",
                                     sample=10 ** 20)])
    assert [status for status, *_ in answers.values()] == [200, 404]


def test_a_training_run_whose_tokenizer_is_not_here_shows_token_ids(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / TRAIN / "model", ignore_errors=True)
    (copy / TRAIN / "settings.json").write_text('{"student": "no-such-org/no-such-model"}')
    tokens = get(copy, link("/training", run=TRAIN))["token"]
    assert tokens and all(t["text"] == f"[{t['data-id']}]" for t in tokens)


def test_filters_select_the_records_they_name(run_dir):
    files, index = [run_dir / FILTER], LightIndex()
    expected = {r: [n for n in range(40) if EXPECTED_REASON[KINDS[n % 5]] == r] for r in ("incorrect", "no_answer")}
    for reason, numbers in expected.items():
        found = page(index, files, Filters(drop_reason=reason), 1)
        assert sorted(r["example_id"] for r in found.rows) == [f"q{n:05d}" for n in numbers]
    assert page(index, files, Filters(correct="no"), 1).total == 8
    kept = page(index, files, Filters(kept="yes"), 1)
    assert kept.total == 16 and {r["drop_reason"] for r in kept.rows} == {None}
    assert page(index, files, Filters(drop_reason="(none)"), 1).total == 16
    errors = page(index, files, Filters(error_type="NameError"), 1)
    assert sorted(r["example_id"] for r in errors.rows) == [f"q{n:05d}" for n in range(40) if n % 5 == 3]
    apples = page(index, files, Filters(text="APPLES", dataset="world-math-train"), 1)
    assert apples.total == 20 and all("apples" in r["question"] for r in apples.rows)
    assert page(index, files, Filters(answered_by="(none)"), 1).total == 8
    assert page(index, files, Filters(text="apples", dataset=FACT), 1).total == 0
    assert page(index, files, Filters(), 1).options["drop_reason"] == ["(none)", "incorrect", "no_answer", "parse_error"]


def test_pages_cover_the_store_once(run_dir):
    files, index = discovery.find_store(run_dir, GENERATE).files(), LightIndex()
    pages = [page(index, files, Filters(), n, per_page=7) for n in range(1, 7)]
    assert [p.pages for p in pages] == [6] * 6 and [len(p.rows) for p in pages] == [7] * 5 + [5]
    keys = [(r["dataset"], r["example_id"]) for p in pages for r in p.rows]
    assert len(set(keys)) == 40
    assert page(index, files, Filters(), 99, per_page=7).page == 6  # past the end: the last page


def test_a_record_is_read_whole_from_its_part(run_dir):
    files = discovery.find_store(run_dir, GENERATE).files()
    [record] = find_records(LightIndex(), files, FACT, "q00000", 0)
    assert record == {**trajectory_row(0, "kept"), "seed": None, "created_at": record["created_at"]}


def test_a_sag_step_shows_each_vote_group_and_the_chosen_one(run_dir):
    [record] = find_records(LightIndex(), [run_dir / FILTER], FACT, "q00000")
    view = record_view(record)
    sag = view["steps"][-1]
    assert sag["votes"] == [{"vote": "answer: velmora", "count": 2}, {"vote": "output: Kallo", "count": 1}]
    assert sag["chosen_vote"] == "answer: velmora" and [c["chosen"] for c in sag["candidates"]] == [True] + [False] * 3
    assert 'class="hl"' in sag["code_html"] and "final_answer" in sag["code_html"]
    assert votes([]) == []


def test_markdown_tables_become_html_tables():
    html = markdown.to_html("## Average\n\n| a | b |\n|---|---|\n| 1 | <x> |\n\ntext")
    assert "<h3>Average</h3>" in html and "<td>&lt;x&gt;</td>" in html and "<th>a</th>" in html and "<p>text</p>" in html


def test_packed_examples_split_at_position_restarts_and_keep_the_labels(run_dir):
    row = training.sequence(run_dir / TRAIN, 0)
    decode = training.decoder(training.tokenizer_dir(run_dir / TRAIN, {"student": "tiny-random"}))
    examples = training.packed_examples(row, decode)
    assert [e.key for e in examples] == row["keys"]
    assert [t["label"] for e in examples for t in e.tokens] == row["labels"]
    assert sum(e.trained for e in examples) == row["trained_tokens"]
    assert "".join(t["text"] for t in examples[0].tokens).startswith("<|im_start|>system")
    assert training.loss_svg([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]).count("<circle") == 2
    assert training.loss_svg([]) is None


# --- the pages -------------------------------------------------------------------------------------

def test_the_overview_shows_stages_stores_report_and_links(run_dir):
    page_ = get(run_dir, "/")
    states = {r["data-stage"]: r["data-state"] for r in page_["stage-row"]}
    assert states["generate"] == "done" and states["world"] == "not-run" and len(states) == 9
    records = {r["data-store"]: int(c["text"]) for r, c in zip(page_["store-row"], page_["store-records"])}
    assert records == {COT: 6, GENERATE: 40, FILTER: 40, BASE: 8, DISTILLED: 8}
    assert {a["data-store"] for a in page_["store-link"]} == set(records)
    assert [a["data-run"] for a in page_["train-link"]] == [TRAIN] and page_["sweep-link"]
    assert "tiny-random (0.3M)" in page_["report-table-0"][0]["text"] and page_["accuracy-plot"]
    status, body, _, _ = get_pages(run_dir, ["/report/accuracy.png"])["/report/accuracy.png"]
    assert status == 200 and body[1:4] == "PNG"
    assert get_pages(run_dir, ["/report/..%2Fmanifest.json"])["/report/..%2Fmanifest.json"][0] == 404


def test_the_list_filters_by_drop_reason_and_links_each_row(run_dir):
    page_ = get(run_dir, link("/trajectories", store=FILTER, drop_reason="parse_error"))
    rows = page_["trajectory-row"]
    assert {r["data-drop-reason"] for r in rows} == {"parse_error"} and len(rows) == 8
    assert page_["total"][0]["data-total"] == "8" and page_["total"][0]["data-records"] == "40"
    assert page_["trajectory-link"][0]["href"].startswith("/trajectory?store=filter%2Fftp%2Ftrajectories.parquet")
    paged = get(run_dir, link("/trajectories", store=GENERATE, page=1))
    assert paged["page-number"][0]["data-pages"] == "1" and not paged["page-next"]


def test_a_dropped_trajectory_page_shows_what_the_record_holds(run_dir):
    page_ = get(run_dir, link("/trajectory", store=FILTER, dataset=MATH_SET, example_id="q00001", sample=0))
    assert page_["verdict"][0]["data-keep"] == "false" and page_["verdict"][0]["data-drop-reason"] == "incorrect"
    assert page_["ftp-prefix"][0]["text"].strip().endswith("I should look up the country first.")
    steps = page_["step"]
    assert [s["data-index"] for s in steps] == ["0", "1"]
    [call] = page_["tool-call"]
    assert call["data-name"] == "web_search" and "Velmora is the capital" in page_["tool-result"][0]["text"]
    assert "capital of Estrin" in page_["tool-arguments"][0]["text"]
    [sag] = page_["sag"]
    assert sag["data-chosen"] == "0" and sag["data-chosen-vote"] == "answer: kallo" and sag["data-candidates"] == "4"
    assert {(v["data-vote"], v["data-count"]) for v in page_["vote-count"]} == {("answer: kallo", "2"),
                                                                               ("output: Kallo", "1")}
    assert [c["data-vote"] for c in page_["candidate"]] == ["answer: kallo", "", "output: Kallo", "answer: kallo"]
    assert "NameError" in page_["candidate-error"][0]["text"]
    assert "web_search" in page_["step-code"][0]["text"] and page_["compare-link"]


def test_an_execution_error_and_a_cot_record_show(run_dir):
    page_ = get(run_dir, link("/trajectory", store=GENERATE, dataset=MATH_SET, example_id="q00003", sample=0))
    assert [s["data-error-type"] for s in page_["step"]] == ["", "NameError", ""]
    assert "capitol" in page_["step-error"][0]["text"]
    cot = get(run_dir, link("/trajectory", store=COT, dataset=FACT, example_id="q00000", sample=0))
    assert "the answer is Velmora" in cot["cot-response"][0]["text"] and not cot["step"]
    assert get_pages(run_dir, ["/trajectory?store=nope&dataset=a&example_id=b"])[
        "/trajectory?store=nope&dataset=a&example_id=b"][0] == 404


def test_compare_puts_teacher_and_students_side_by_side(run_dir):
    page_ = get(run_dir, link("/compare", dataset=FACT, example_id="q00002"))
    columns = {c["data-store"]: c for c in page_["compare-column"]}
    assert set(columns) == {FILTER, BASE, DISTILLED}
    assert columns[FILTER]["data-role"] == "teacher" and columns[BASE]["data-role"] == "student"
    # the third question of the evaluations: base answered it wrong, distilled right
    assert columns[BASE]["data-correct"] == "false" and columns[DISTILLED]["data-correct"] == "true"
    assert columns[FILTER]["data-f1"] == "1.0"


def test_the_training_view_highlights_exactly_the_trained_tokens(run_dir):
    row = pq.read_table(run_dir / TRAIN / "sft" / "sequences.parquet").to_pylist()[0]
    page_ = get(run_dir, link("/training", run=TRAIN, seq=0))
    tokens = page_["token"]
    assert [int(t["data-id"]) for t in tokens] == row["input_ids"]
    assert [t["data-trained"] == "1" for t in tokens] == [label != -100 for label in row["labels"]]
    assert all(("trained" in t["class"]) == (t["data-trained"] == "1") for t in tokens)
    assert [e["data-key"] for e in page_["packed-example"]] == row["keys"]
    first = page_["example-key-link"][0]["href"]
    dataset, example_id, sample = row["keys"][0].split("/")
    assert first == link("/trajectory", store=FILTER, dataset=dataset, example_id=example_id, sample=sample)
    assert page_["loss-curve"][0]["data-points"] == "8"
    assert '"examples"' in page_["sft-summary"][0]["text"] and "sdpa" in page_["compute-json"][0]["text"]


def test_the_sweep_links_each_trial_to_its_evaluation(run_dir):
    page_ = get(run_dir, "/sweep")
    assert {(r["data-method"]) for r in page_["trial-row"]} == {"agent prompt", "+FTP"}
    assert {a["data-store"] for a in page_["trial-evaluation-link"]} == {BASE, DISTILLED}
    evaluation = get(run_dir, link("/trajectories", store=DISTILLED))
    assert {r["data-dataset"] for r in evaluation["results-row"]} == {FACT, MATH_SET}


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size, p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*"))}


def test_browsing_leaves_the_run_directory_as_it_was(run_dir):
    before = _snapshot(run_dir)
    dir_times = os.stat(run_dir).st_mtime_ns
    paths = ["/", link("/trajectories", store=FILTER, kept="no"), link("/trajectories", store=GENERATE, text="capital"),
             link("/trajectory", store=GENERATE, dataset=FACT, example_id="q00000", sample=0),
             link("/compare", dataset=FACT, example_id="q00000"), link("/training", run=TRAIN, seq=0), "/sweep",
             "/report/accuracy.png", "/static/style.css", "/pygments.css"]
    assert [answer[0] for answer in get_pages(run_dir, paths).values()] == [200] * len(paths)
    assert _snapshot(run_dir) == before and os.stat(run_dir).st_mtime_ns == dir_times


def test_a_growing_store_shows_its_new_parts(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    app = make_app(run)

    async def browse():
        async with TestClient(TestServer(app)) as client:
            first = Elements(await (await client.get(link("/trajectories", store=GENERATE))).text())
            write_store(run / GENERATE, [trajectory_row(n, "kept") for n in range(40, 45)], {}, parts=1)
            second = Elements(await (await client.get(link("/trajectories", store=GENERATE))).text())
            record = await client.get(link("/trajectory", store=GENERATE, dataset=FACT, example_id="q00044", sample=0))
            return first, second, record.status

    first, second, status = asyncio.run(browse())
    assert first["total"][0]["data-total"] == "40" and second["total"][0]["data-total"] == "45" and status == 200


# --- 100,000 trajectories --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("big") / "run"
    make_big_store(run / GENERATE, per_part=64, row_group=64)  # as the store writes it (rollout.flush_every)
    (run / "manifest.json").write_text('{"stages": {}}')
    return run


@pytest.mark.slow
def test_every_page_answers_within_a_second_on_100000_trajectories(big_run):
    paths = {
        "overview": "/",
        "list, first request": link("/trajectories", store=GENERATE),
        "list, page 1 again (cached index)": link("/trajectories", store=GENERATE, page=1),
        "list, last page": link("/trajectories", store=GENERATE, page=2000),
        "list, drop filter + text search": link("/trajectories", store=GENERATE, answered_by="(none)", text="country"),
        "list, error type": link("/trajectories", store=GENERATE, error_type="NameError", page=10),
        "trajectory": link("/trajectory", store=GENERATE, dataset=MATH_SET, example_id="big-099999", sample=0),
        "compare": link("/compare", dataset=FACT, example_id="big-050000"),
    }
    answers = get_pages(big_run, list(paths.values()))
    times = {name: answers[path][2:] for name, path in paths.items()}
    print(f"\n  startup (indexes the store's {len(list((big_run / GENERATE / 'parts').iterdir()))} parts): "
          f"{answers.startup:.1f} s\n" + "\n".join(f"  {name}: {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU"
                                                       for name, (wall, cpu) in times.items()))
    assert {name: answers[path][0] for name, path in paths.items()} == {name: 200 for name in paths}
    assert Elements(answers[paths["list, page 1 again (cached index)"]][1])["total"][0]["data-total"] == "100000"
    assert Elements(answers[paths["trajectory"]][1])["record"][0]["data-example-id"] == "big-099999"
    slow = {name: wall for name, (wall, _) in times.items() if wall >= 1.0}
    assert not slow, f"pages that took over 1 s on 100,000 trajectories: {slow}"
