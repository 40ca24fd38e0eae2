"""`ray-distill view` in a real browser: headless Chromium clicks through the pages the command serves
for a run directory written by the real stores (`viewer_run.make_run`), and what it shows is checked
against the stored records. With $RAY_DISTILL_SCREENSHOTS set to a folder, each page is saved there
(the README's pictures: `RAY_DISTILL_SCREENSHOTS=docs/view make test PYTEST_ARGS="-m browser"`)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from browser import chromium
from viewer_run import FILTER, TRAIN, make_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("view"), trajectories=40)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site(run_dir):
    """The real command, serving on loopback until the tests end."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ray_distill.cli", "view", str(run_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        printed = []
        for line in proc.stdout:  # the address comes once the stores are indexed and the server listens
            printed.append(line)
            if line.startswith("open http://"):
                break
        assert printed and printed[-1].strip() == f"open http://127.0.0.1:{port}/", "".join(printed)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def driver():
    with chromium() as d:
        yield d


def shot(driver, name: str) -> None:
    folder = os.environ.get("RAY_DISTILL_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        # the whole page, not just the window
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1400, min(max(900, height + 40), 2600))
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))
        driver.set_window_size(1400, 1000)


def navigate(driver, click, url_part: str) -> None:
    """Click, then wait for the page it leads to (a click returns before the navigation ends)."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    click()
    WebDriverWait(driver, 20).until(expected_conditions.url_contains(url_part))
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")


def by_testid(driver, testid: str, **data: str):
    selector = f'[data-testid="{testid}"]' + "".join(f'[data-{k.replace("_", "-")}="{v}"]' for k, v in data.items())
    return driver.find_elements("css selector", selector)


def test_from_the_overview_to_a_dropped_trajectory_and_its_sag_candidates(site, driver, run_dir):
    stored = pq.read_table(run_dir / FILTER).to_pylist()
    driver.get(site + "/")
    assert {row.get_attribute("data-stage"): row.get_attribute("data-state") for row in by_testid(driver, "stage-row")}
    shot(driver, "overview")

    (link,) = by_testid(driver, "store-link", store=FILTER)
    navigate(driver, link.click, "/trajectories")
    dropped = [r for r in stored if not r["keep"]]
    reason = max(sorted({r["drop_reason"] for r in dropped}), key=lambda x: sum(r["drop_reason"] == x for r in dropped))
    from selenium.webdriver.support.ui import Select

    Select(by_testid(driver, "filter-drop_reason")[0]).select_by_value(reason)
    navigate(driver, by_testid(driver, "filter-apply")[0].click, f"drop_reason={reason}")
    rows = by_testid(driver, "trajectory-row")
    expected = sorted((r["dataset"], r["example_id"]) for r in stored if r["drop_reason"] == reason)
    assert sorted((r.get_attribute("data-dataset"), r.get_attribute("data-example-id")) for r in rows) == expected
    assert {r.get_attribute("data-keep") for r in rows} == {"false"}
    shot(driver, "trajectories")

    # a dropped trajectory with a SAG step
    with_sag = {(r["dataset"], r["example_id"]) for r in stored if any(s["candidates"] for s in r["steps"])}
    target = next(r for r in rows if (r.get_attribute("data-dataset"), r.get_attribute("data-example-id")) in with_sag)
    key = (target.get_attribute("data-dataset"), target.get_attribute("data-example-id"))
    navigate(driver, target.find_element("css selector", '[data-testid="trajectory-link"]').click, "/trajectory?")
    record = next(r for r in stored if (r["dataset"], r["example_id"]) == key)
    assert driver.find_element("css selector", '[data-testid="question"] pre').text == record["question"]
    (verdict,) = by_testid(driver, "verdict")
    assert (verdict.get_attribute("data-keep"), verdict.get_attribute("data-drop-reason")) == ("false", reason)

    step = next(s for s in record["steps"] if s["candidates"])
    (sag,) = by_testid(driver, "sag")
    candidates = sag.find_elements("css selector", '[data-testid="candidate"]')
    assert not any(c.is_displayed() for c in candidates)  # folded until opened
    sag.find_element("css selector", '[data-testid="sag-summary"]').click()
    assert all(c.is_displayed() for c in candidates) and len(candidates) == len(step["candidates"])
    for shown, stored_candidate in zip(candidates, step["candidates"]):
        vote = shown.find_element("css selector", '[data-testid="candidate-vote"]').get_attribute("textContent")
        assert vote == (stored_candidate["vote"] or "invalid")
        if stored_candidate["stdout"]:
            assert shown.find_element("css selector", '[data-testid="candidate-stdout"] pre').text == \
                stored_candidate["stdout"].strip()
    chosen = [c for c in candidates if "chosen" in c.get_attribute("class").split()]
    assert [int(c.get_attribute("data-number")) for c in chosen] == [step["chosen"]]
    counts = {v.get_attribute("data-vote"): int(v.get_attribute("data-count")) for v in by_testid(driver, "vote-count")}
    votes = [c["vote"] for c in step["candidates"] if c["vote"] is not None]
    assert counts == {vote: votes.count(vote) for vote in votes}
    shot(driver, "trajectory")

    navigate(driver, by_testid(driver, "compare-link")[0].click, "/compare")
    columns = by_testid(driver, "compare-column")
    assert {c.get_attribute("data-role") for c in columns} == {"teacher", "student"}
    shot(driver, "compare")


def test_the_training_view_highlights_exactly_the_trained_tokens(site, driver, run_dir):
    from transformers import AutoTokenizer

    from ray_distill.models import resolve_model

    sequences = pq.read_table(run_dir / TRAIN / "sft" / "sequences.parquet").to_pylist()
    driver.get(site + "/")
    navigate(driver, by_testid(driver, "train-link")[0].click, "/training")
    shown = by_testid(driver, "sequence")[0]
    row = sequences[int(shown.get_attribute("data-seq"))]
    tokens = shown.find_elements("css selector", '[data-testid="token"]')
    assert [int(t.get_attribute("data-id")) for t in tokens] == row["input_ids"]
    trained = [t.get_attribute("data-trained") == "1" for t in tokens]
    assert trained == [label != -100 for label in row["labels"]]
    # what the eye sees: one colour for the trained tokens, another for the masked ones
    colours = {flag: {t.value_of_css_property("background-color") for t, f in zip(tokens, trained) if f == flag}
               for flag in (True, False)}
    assert len(colours[True]) == len(colours[False]) == 1 and colours[True] != colours[False]
    # and the highlighted text is the text the loss trains on
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny-random"))
    highlighted = "".join(t.get_attribute("textContent") for t, f in zip(tokens, trained) if f)
    assert highlighted == "".join(tokenizer.decode([i]) for i, label in zip(row["input_ids"], row["labels"]) if label != -100)
    # the packing: one block per example, starting where the position ids restart
    starts = [int(e.get_attribute("data-start")) for e in by_testid(driver, "packed-example")]
    assert starts == [i for i, position in enumerate(row["position_ids"]) if position == 0]
    assert [e.get_attribute("data-key") for e in by_testid(driver, "packed-example")] == row["keys"]
    assert len(re.findall("<circle", driver.find_element("css selector", '[data-testid="loss-curve"]')
                          .get_attribute("outerHTML"))) == int(by_testid(driver, "loss-curve")[0].get_attribute("data-points"))
    shot(driver, "training")

    driver.get(site + "/sweep")
    assert by_testid(driver, "trial-row")
    shot(driver, "sweep")
