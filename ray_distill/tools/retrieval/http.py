"""The retrieval API of Search-R1 over HTTP, so existing clients work unchanged.

    POST /retrieve {"queries": [str], "topk": int (optional), "return_scores": bool (default false)}
    -> {"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}   with scores
    -> {"result": [[{"id", "contents"}, ...], ...]}                          without

A malformed request gets a 400 with {"error": message}; the server keeps running.
"""

from __future__ import annotations

from aiohttp import web

from ray_distill.tools.retrieval.index import Retriever, search_async

MAX_TOPK = 100


class BadRequest(ValueError):
    pass


def parse_request(body) -> tuple[list[str], int | None, bool]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with 'queries'")
    unknown = set(body) - {"queries", "topk", "return_scores"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    queries = body.get("queries")
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise BadRequest("'queries' must be a list of strings")
    topk = body.get("topk")
    if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= MAX_TOPK):
        raise BadRequest(f"'topk' must be an integer from 1 to {MAX_TOPK}")
    return_scores = body.get("return_scores", False)
    if not isinstance(return_scores, bool):
        raise BadRequest("'return_scores' must be true or false")
    return queries, topk, return_scores


def make_app(retriever: Retriever, default_topk: int = 3, max_queries: int = 4096) -> web.Application:
    async def retrieve(request: web.Request) -> web.Response:
        try:
            queries, topk, return_scores = parse_request(await request.json())
            if len(queries) > max_queries:
                raise BadRequest(f"at most {max_queries} queries per request, got {len(queries)}")
        except ValueError as e:  # BadRequest, or a body that is not JSON
            return web.json_response({"error": str(e) if isinstance(e, BadRequest) else f"the body is not JSON: {e}"},
                                     status=400)
        found = await search_async(retriever, queries, topk or default_topk)
        if return_scores:
            result = [[{"document": {"id": h.id, "contents": h.contents}, "score": h.score} for h in hits] for hits in found]
        else:
            result = [[{"id": h.id, "contents": h.contents} for h in hits] for hits in found]
        return web.json_response({"result": result})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=64 << 20)
    app.add_routes([web.post("/retrieve", retrieve), web.get("/health", health)])
    return app


class HttpRetriever:
    """A `Retriever` over any Search-R1-compatible endpoint (this package's server, or the reference's)."""

    def __init__(self, url: str, timeout: float = 30.0):
        self.url = url
        self.timeout = timeout

    def search(self, queries, k: int = 3):
        import httpx

        return self._hits(httpx.post(self.url, json=self._body(queries, k), timeout=self.timeout))

    async def asearch(self, queries, k: int = 3):
        import httpx

        async with httpx.AsyncClient(timeout=self.timeout) as client:
            return self._hits(await client.post(self.url, json=self._body(queries, k)))

    @staticmethod
    def _body(queries, k: int) -> dict:
        return {"queries": list(queries), "topk": k, "return_scores": True}

    def _hits(self, response):
        from ray_distill.tools.retrieval.index import Hit

        if response.status_code != 200:
            raise RuntimeError(f"retrieval at {self.url} answered {response.status_code}: {response.text[:300]}")
        return [[Hit(str(d["document"]["id"]), d["document"]["contents"], float(d["score"])) for d in hits]
                for hits in response.json()["result"]]
