"""Malformed and oversized requests to the Search-R1 retrieval API, mixed with well-formed ones from 64
concurrent clients: against the HTTP app on loopback over a stand-in retriever, and (slow) against
`ray-distill serve-retrieval` itself on a tiny index. Every malformed request gets a 4xx whose JSON body
is one clear line, every well-formed one the right answer, and the server keeps serving."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import httpx
import pytest

from ray_distill.tools.retrieval.http import MAX_BODY_BYTES, MAX_QUERIES, MAX_QUERY_CHARS, MAX_TOPK, make_app
from ray_distill.tools.retrieval.index import Hit

from conftest import serving_retrieval
from fuzzing import INVALID_UTF8, Case, cli, cli_problem, inserted, truncated

CLIENTS = 64
QUERIES = ["a city beside a lake", "who founded the company", "the tallest mountain", "café ∑ ünï",
           "population of the capital", "", "   ", "when was the bridge built", "x" * 2000, "river"]


class StandIn:
    """A retriever whose answer to a query is a function of the query alone (no model, no index)."""

    def search(self, queries, k: int = 3) -> list[list[Hit]]:
        return [[Hit(f"{hashlib.sha256(q.encode()).hexdigest()[:8]}-{i}", f"Title {i}\ntext for {q[:40]}", 1 - i / 10)
                 for i in range(k)] for q in queries]


def as_json(found: list[list[Hit]], return_scores: bool) -> list:
    if return_scores:
        return [[{"document": {"id": h.id, "contents": h.contents}, "score": h.score} for h in hits] for hits in found]
    return [[{"id": h.id, "contents": h.contents} for h in hits] for hits in found]


def requests(seed: int, count: int, malformed_share: float = 2 / 3) -> list[Case]:
    """`count` requests, as Case(name, (method, path, body, headers), expected status, well-formed body)."""
    rng = random.Random(seed)
    cases: list[Case] = []

    def valid() -> dict:
        body: dict = {"queries": [rng.choice(QUERIES) for _ in range(rng.randint(0, 4))]}
        if rng.random() < 0.6:
            body["topk"] = rng.randint(1, 8)
        if rng.random() < 0.5:
            body["return_scores"] = rng.random() < 0.5
        return body

    def add(name: str, body: bytes, status: int, answer: Optional[dict] = None, method: str = "POST",
            path: str = "/retrieve", headers: Optional[dict] = None) -> None:
        cases.append(Case(f"{len(cases)}-{name}", (method, path, body, headers or {"content-type": "application/json"}),
                          expect=status, extra={"answer": answer}))

    def wrong(name: str, body) -> None:
        add(name, json.dumps(body).encode(), 400)

    malformed: list[Callable[[], None]] = [
        lambda: add("truncated", truncated(rng, json.dumps(valid()).encode())[1], 400),
        lambda: add("invalid-utf8", inserted(rng, json.dumps(valid()).encode(), rng.choice(INVALID_UTF8))[1], 400),
        lambda: add("nul", inserted(rng, json.dumps(valid()).encode(), b"\x00")[1], 400),
        lambda: wrong("body-type", rng.choice([[], "queries", 5, None, True, [{"queries": ["x"]}]])),
        lambda: wrong("queries-type", {"queries": rng.choice(["a query", 5, {"q": 1}, None, [1], [None], [["a"]],
                                                             ["a", 2]])}),
        lambda: wrong("topk-type", {"queries": ["x"], "topk": rng.choice(["3", 2.5, True, 0, -1, MAX_TOPK + 1, 10**30,
                                                                            [3], {}])}),
        lambda: add("topk-nan", b'{"queries": ["x"], "topk": NaN}', 400),
        lambda: wrong("return-scores-type", {"queries": ["x"], "return_scores": rng.choice(["yes", 1, None, []])}),
        lambda: wrong("missing-queries", rng.choice([{}, {"topk": 3}, {"return_scores": True}])),
        lambda: wrong("extra-field", {**valid(), rng.choice(["k", "query", "Queries", "x" * 10_000]): 1}),
        lambda: wrong("too-many-queries", {"queries": ["q"] * (MAX_QUERIES + 1)}),
        lambda: wrong("query-too-long", {"queries": ["ok", "y" * (MAX_QUERY_CHARS + 1)]}),
        lambda: add("lone-surrogate", b'{"queries": ["a \\ud800 b"]}', 400),
        lambda: add("deep", b'{"queries": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
        lambda: add("empty-body", b"", 400),
        lambda: add("form-body", b"queries=a+city", 400, headers={"content-type": "application/x-www-form-urlencoded"}),
        lambda: add("wrong-method", json.dumps(valid()).encode(), 405, method=rng.choice(["GET", "PUT", "DELETE"])),
        lambda: add("wrong-path", json.dumps(valid()).encode(), 404, path=rng.choice(["/", "/retrieve/x", "/search"])),
    ]
    oversized = lambda: add("oversized", b'{"queries": ["' + b"z" * MAX_BODY_BYTES + b'"]}', 413)  # noqa: E731

    def well_formed() -> None:
        body = valid()
        kind = rng.choice(["plain", "plain", "text/plain", "no-type", "form-type", "twice", "topk-null"])
        headers = {"text/plain": {"content-type": "text/plain"}, "no-type": {},
                   "form-type": {"content-type": "application/x-www-form-urlencoded"}}.get(kind)
        if kind == "twice":  # a key given twice: the last one counts, as everywhere in JSON
            add(kind, b'{"queries": ["ignored"], ' + json.dumps(body).encode()[1:], 200, body)
        elif kind == "topk-null":
            body = {"queries": body["queries"], "topk": None}
            add(kind, json.dumps(body).encode(), 200, body)
        else:
            add(kind, json.dumps(body).encode(), 200, body, headers=headers if kind != "plain" else None)

    for n in range(count):
        if n % 97 == 13:
            oversized()
        elif rng.random() < malformed_share:
            rng.choice(malformed)()
        else:
            well_formed()
    return cases


async def storm(base_url: str, cases: list[Case], answer: Callable[[dict], list],
                seen: Callable[[list], list] = lambda result: result) -> list[str]:
    """Send `cases` from CLIENTS concurrent clients (each its own connection, its share in turn); returns
    what went wrong. A well-formed request's `seen(result)` must be `answer(body)`."""
    problems: list[str] = []

    async def client(share: list[Case]) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:
            for case in share:
                method, path, body, headers = case.data
                try:
                    response = await http.request(method, path, content=body, headers=headers)
                except httpx.HTTPError as e:
                    problems.append(f"{case.name}: {type(e).__name__}: {e}")
                    continue
                problem = response_problem(case, response, answer, seen)
                if problem:
                    problems.append(f"{case.name}: {problem}")

    await asyncio.gather(*(client(cases[n::CLIENTS]) for n in range(CLIENTS)))
    return problems


def response_problem(case: Case, response: httpx.Response, answer: Callable[[dict], list],
                     seen: Callable[[list], list]) -> Optional[str]:
    if response.status_code != case.expect:
        return f"status {response.status_code}, not {case.expect}: {response.text[:300]!r}"
    try:
        payload = response.json()
    except ValueError:
        return f"a body that is not JSON: {response.text[:300]!r}"
    if case.expect != 200:
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, str) or not error or "\n" in error or len(error) > 1000 or "Traceback" in error:
            return f"not a clear one-line error: {response.text[:300]!r}"
        return None
    want = answer(case.extra["answer"])
    if not isinstance(payload, dict) or set(payload) != {"result"} or seen(payload["result"]) != want:
        return f"answered {str(payload)[:300]}, not {str(want)[:300]}"
    return None


def raw_http_problems(port: int) -> list[str]:
    """Requests that are not HTTP: each must get a 4xx or a closed connection, never a hang."""
    problems = []
    for name, data in (("garbage", b"GARBAGE\r\n\r\n"), ("bad-version", b"POST /retrieve HTTP/9.9\r\n\r\n"),
                       ("bad-length", b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}"),
                       ("huge-header", b"POST /retrieve HTTP/1.1\r\nHost: x\r\nX: " + b"h" * 100_000 + b"\r\n\r\n"),
                       ("bad-chunks",
                        b"POST /retrieve HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
                       ("nul-in-path", b"POST /re\x00trieve HTTP/1.1\r\nHost: x\r\n\r\n"),
                       ("short-body", b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{}")):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(data)
            if name == "short-body":
                conn.shutdown(socket.SHUT_WR)  # the client gives up half-way
            try:
                reply = conn.recv(200)
            except (ConnectionResetError, socket.timeout) as e:
                if isinstance(e, socket.timeout):
                    problems.append(f"{name}: no answer within 30 s")
                continue
            status = reply.split(b" ")[1:2]
            if reply and not (status and status[0][:1] == b"4"):
                problems.append(f"{name}: answered {reply[:80]!r}")
    return problems


@contextmanager
def serving(retriever) -> Iterator[int]:
    """The HTTP app on a loopback port, served from its own thread and event loop."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(make_app(retriever, default_topk=3))
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield site._server.sockets[0].getsockname()[1]
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def expected_from(retriever, default_topk: int) -> Callable[[dict], list]:
    def answer(body: dict) -> list:
        found = retriever.search(body["queries"], body.get("topk") or default_topk) if body["queries"] else []
        return as_json(found, body.get("return_scores", False))

    return answer


def test_the_http_api_survives_a_storm_of_malformed_requests_from_64_clients():
    cases = requests(seed=43, count=390)
    assert sum(c.expect != 200 for c in cases) >= 200
    with serving(StandIn()) as port:
        problems = raw_http_problems(port)
        started = time.monotonic()
        problems += asyncio.run(asyncio.wait_for(storm(f"http://127.0.0.1:{port}", cases,
                                                       expected_from(StandIn(), 3)), 120))
        assert time.monotonic() - started < 60
        problems += raw_http_problems(port)
        alive = httpx.post(f"http://127.0.0.1:{port}/retrieve", json={"queries": ["still there?"]}, timeout=30)
    assert not problems, f"{len(problems)} of {len(cases)} requests went wrong:\n" + "\n".join(problems[:25])
    assert alive.status_code == 200 and len(alive.json()["result"][0]) == 3


def test_serve_retrieval_refuses_what_it_cannot_serve_in_one_line(tmp_path):
    for args, names in (([f"run.dir={tmp_path}"], ["no index at", str(tmp_path / "index")]),
                        ([f"run.dir={tmp_path}", "retrieval.port=70000"], ["retrieval.port"]),
                        ([f"run.dir={tmp_path}", "retrieval.topk=[3]"], ["retrieval.topk"])):
        proc = cli("serve-retrieval", "experiments/quickstart.yaml", *args)
        assert not cli_problem(proc, names), (args, cli_problem(proc, names))


def tiny_index(directory: Path, passages: int = 200) -> list[Path]:
    """Two Flat shards of random unit vectors as the minilm-l6 embedder's (384 dimensions), laid out as
    the index stage leaves them."""
    import numpy as np

    from ray_distill.tools.retrieval import IndexKind, build_index, write_passages, write_shard

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((passages, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    shards = [directory / f"shard-{n:05d}" for n in range(2)]
    for n, (shard, rows) in enumerate(zip(shards, np.array_split(np.arange(passages), 2))):
        write_passages(shard, [f"p{i}" for i in rows], [f"Passage {i}\nabout topic {i % 17}" for i in rows])
        write_shard(shard, build_index(vectors[rows], IndexKind("flat")), "minilm-l6", IndexKind("flat"), shard=n)
    (directory / "split.json").write_text(json.dumps({"shards": 2, "passages": passages}))
    return shards


@pytest.mark.slow
@pytest.mark.ray  # the server starts its own
def test_serve_retrieval_stays_up_under_malformed_requests_from_64_clients(tmp_path):
    from ray_distill.tools.retrieval import Encoder, ShardedRetriever

    shards = tiny_index(tmp_path / "index")
    with serving_retrieval(tmp_path) as (port, _, server):
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.2)
        local = ShardedRetriever.load(shards, Encoder("minilm-l6", device="cpu"))

        def ids(result: list) -> list:
            # Scores are left out: a query's vector can differ in its last bits with the batch it was embedded in.
            return [[(h.get("document") or h)["id"] for h in hits] for hits in result]

        cases = requests(seed=47, count=200, malformed_share=0.5)
        problems = raw_http_problems(port)
        problems += asyncio.run(asyncio.wait_for(storm(f"http://127.0.0.1:{port}", cases,
                                                       lambda body: ids(expected_from(local, 3)(body)), ids), 300))
        assert server.poll() is None, "the server died"
        alive = httpx.post(f"http://127.0.0.1:{port}/retrieve", json={"queries": ["topic 3"], "topk": 2}, timeout=60)
    assert not problems, f"{len(problems)} of {len(cases)} requests went wrong:\n" + "\n".join(problems[:25])
    assert [h["id"] for h in alive.json()["result"][0]] == [h.id for h in local.search(["topic 3"], 2)[0]]
