"""The agent's tools as a sandbox Toolbox: `web_search` over a retriever."""

from __future__ import annotations

from ray_distill.tools.retrieval.index import Retriever, format_hits, search_async
from ray_distill.tools.sandbox import Toolbox, ToolUnavailable


def retrieval_tools(retriever: Retriever, k: int = 3) -> Toolbox:
    """`web_search(query)` for sandboxed code, answered from `retriever` on the host."""

    async def handle(name: str, args: list, kwargs: dict):
        if name != "web_search":
            raise ValueError(f"unknown tool {name!r}")
        query = kwargs.get("query", args[0] if args else None)
        if not isinstance(query, str) or not query.strip():
            raise ValueError("web_search needs a non-empty query string")
        try:
            (hits,) = await search_async(retriever, [query], k)
        except Exception as e:  # the service, not the query: the episode is retried, not trained on
            raise ToolUnavailable(f"retrieval failed: {type(e).__name__}: {e}") from e
        return format_hits(hits)

    return Toolbox(handle, ("web_search",))

