"""The retrieval API of Search-R1 over HTTP, so existing clients work unchanged.

    POST /retrieve {"queries": [str], "topk": int (optional), "return_scores": bool (default false)}
    -> {"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}   with scores
    -> {"result": [[{"id", "contents"}, ...], ...]}                          without

The body is read as UTF-8 JSON whatever its Content-Type says (so `curl -d` works). A malformed request
gets a 400 with {"error": message}, and so does one past a limit: more than MAX_QUERIES queries, a query
longer than MAX_QUERY_CHARS characters (far more than an encoder reads, and tokenizing 10 MB holds the
encoder for seconds), topk outside 1..MAX_TOPK; a body over MAX_BODY_BYTES gets a 413, another path or
method a 404 or 405, all with {"error": message}. The server keeps running.
"""

from __future__ import annotations

import json
import logging

import httpx
from aiohttp import web

from ray_distill.errors import brief, first_line, is_text
from ray_distill.tools.retrieval.index import Hit, Retriever, search_async

log = logging.getLogger(__name__)

MAX_TOPK = 100
MAX_QUERIES = 4096
MAX_QUERY_CHARS = 10_000
MAX_BODY_BYTES = 16 << 20


class BadRequest(ValueError):
    pass


def parse_body(data: bytes):
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # not UTF-8, not JSON, or nested past Python's stack
        raise BadRequest(f"the body is not JSON: {first_line(e)}") from None


def parse_request(body) -> tuple[list[str], int | None, bool]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with 'queries'")
    unknown = set(body) - {"queries", "topk", "return_scores"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(brief(k) for k in sorted(unknown))}")
    queries = body.get("queries")
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise BadRequest("'queries' must be a list of strings")
    if len(queries) > MAX_QUERIES:
        raise BadRequest(f"at most {MAX_QUERIES} queries per request, got {len(queries)}")
    for n, query in enumerate(queries):
        if len(query) > MAX_QUERY_CHARS:
            raise BadRequest(f"query {n} has {len(query)} characters; at most {MAX_QUERY_CHARS}")
        if not is_text(query):
            raise BadRequest(f"query {n} holds a NUL character or a lone surrogate")
    topk = body.get("topk")
    if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= MAX_TOPK):
        raise BadRequest(f"'topk' must be an integer from 1 to {MAX_TOPK}")
    return_scores = body.get("return_scores", False)
    if not isinstance(return_scores, bool):
        raise BadRequest("'return_scores' must be true or false")
    return queries, topk, return_scores


@web.middleware
async def _json_errors(request: web.Request, handler):
    """Every refusal as {"error": ...} (aiohttp words a wrong path, method or size in plain text), and a
    failed search as a 500 whose traceback goes to the log, not to the client."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return web.json_response({"error": e.text or e.reason}, status=e.status)
    except Exception:
        log.exception("retrieval request failed")
        return web.json_response({"error": "the search failed; the server's log has the cause"}, status=500)


def make_app(retriever: Retriever, default_topk: int = 3) -> web.Application:
    async def retrieve(request: web.Request) -> web.Response:
        try:
            queries, topk, return_scores = parse_request(parse_body(await request.read()))
        except BadRequest as e:
            return web.json_response({"error": str(e)}, status=400)
        found = await search_async(retriever, queries, topk or default_topk)
        if return_scores:
            result = [[{"document": {"id": h.id, "contents": h.contents}, "score": h.score} for h in hits] for hits in found]
        else:
            result = [[{"id": h.id, "contents": h.contents} for h in hits] for hits in found]
        return web.json_response({"result": result})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_json_errors])
    app.add_routes([web.post("/retrieve", retrieve), web.get("/health", health)])
    return app


class HttpRetriever:
    """A `Retriever` over any Search-R1-compatible endpoint (this package's server, or the reference's)."""

    def __init__(self, url: str, timeout: float = 30.0):
        self.url = url
        self.timeout = timeout

    def search(self, queries, k: int = 3):
        return self._hits(httpx.post(self.url, json=self._body(queries, k), timeout=self.timeout))

    async def asearch(self, queries, k: int = 3):
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            return self._hits(await client.post(self.url, json=self._body(queries, k)))

    @staticmethod
    def _body(queries, k: int) -> dict:
        return {"queries": list(queries), "topk": k, "return_scores": True}

    def _hits(self, response):
        if response.status_code != 200:
            raise RuntimeError(f"retrieval at {self.url} answered {response.status_code}: {response.text[:300]}")
        return [[Hit(str(d["document"]["id"]), d["document"]["contents"], float(d["score"])) for d in hits]
                for hits in response.json()["result"]]
