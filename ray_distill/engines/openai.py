"""An engine over any OpenAI-compatible server (vLLM serve, SGLang, TGI,
`transformers serve`, hosted APIs), so a hosted model can be the teacher.

Bounded concurrency, retries with exponential backoff (and Retry-After) on
429, 5xx and connection failures, a timeout per request, and the API key
read from the environment only - never from a config file. Continuing an
assistant message (FTP) uses the `continue_final_message` extension that
vLLM and SGLang accept; other servers may refuse such requests.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import replace
from typing import Optional

import httpx

from ray_distill.engines.protocol import Completion, GenerationRequest, Sample, finish_reason

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class EngineRequestError(RuntimeError):
    """The server refused or failed a request after all retries."""


class OpenAIEngine:
    def __init__(self, model: str, *, base_url: str, api_key_env: Optional[str] = "OPENAI_API_KEY",
                 max_concurrency: int = 16, timeout_seconds: float = 300.0, max_retries: int = 5,
                 backoff_seconds: float = 1.0):
        self.model = model
        self.base_url = base_url.rstrip("/")
        self._api_key = os.environ.get(api_key_env) if api_key_env else None
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self.max_concurrency = max_concurrency
        self._client: Optional[httpx.AsyncClient] = None
        self._gate: Optional[asyncio.Semaphore] = None
        self._loop = None
        self.retries = 0  # retried attempts, for stats and tests

    def _ready(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:  # one client per event loop
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=self.timeout_seconds)
            self._gate = asyncio.Semaphore(self.max_concurrency)
            self._loop = loop
        return self._client, self._gate

    def payload(self, request: GenerationRequest) -> dict:
        p = request.params
        body = {
            "model": self.model,
            "messages": list(request.messages),
            "n": p.n,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_new_tokens,
        }
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None:
            body["seed"] = p.seed
        if request.continue_final_message:
            body.update(continue_final_message=True, add_generation_prompt=False)
        return body

    async def generate(self, request: GenerationRequest) -> Completion:
        """Some servers ignore `n` and answer with one choice: ask again for the
        missing samples (with shifted seeds) until there are n."""
        start = time.perf_counter()
        samples: list[Sample] = []
        prompt_tokens = 0
        while len(samples) < request.params.n:
            missing = request.params.n - len(samples)
            seed = request.params.seed
            params = replace(request.params, n=missing, seed=None if seed is None else seed + len(samples))
            part = await self._post(replace(request, params=params))
            samples += part.samples[:missing]
            prompt_tokens = part.prompt_tokens
        return Completion(samples, prompt_tokens, seconds=time.perf_counter() - start)

    async def _post(self, request: GenerationRequest) -> Completion:
        client, gate = self._ready()
        body = self.payload(request)
        start = time.perf_counter()
        async with gate:
            for attempt in range(self.max_retries + 1):
                try:
                    response = await client.post("/chat/completions", json=body)
                except (httpx.TransportError, httpx.TimeoutException) as e:
                    error = f"{type(e).__name__}: {e}"
                    wait = None
                else:
                    if response.status_code == 200:
                        return self._completion(response.json(), start)
                    error = f"HTTP {response.status_code}: {response.text[:500]}"
                    if response.status_code not in RETRY_STATUS:
                        raise EngineRequestError(f"{self.base_url} refused the request: {error}")
                    wait = _retry_after(response)
                if attempt == self.max_retries:
                    break
                self.retries += 1
                await asyncio.sleep(wait if wait is not None else self.backoff_seconds * 2**attempt * (0.5 + random.random()))
        raise EngineRequestError(f"{self.base_url}: giving up after {self.max_retries + 1} attempts: {error}")

    @staticmethod
    def _completion(data: dict, start: float) -> Completion:
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        usage = data.get("usage") or {}
        # The API reports only the total; with n > 1 each sample gets an even share.
        tokens = usage.get("completion_tokens", 0) // max(len(choices), 1)
        samples = [
            Sample(c["message"].get("content") or "", finish_reason(c.get("finish_reason"), c.get("stop_reason")), tokens)
            for c in choices
        ]
        return Completion(samples, prompt_tokens=usage.get("prompt_tokens", 0), seconds=time.perf_counter() - start)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _retry_after(response: httpx.Response) -> Optional[float]:
    value = response.headers.get("retry-after")
    try:
        return min(float(value), 60.0) if value is not None else None
    except ValueError:
        return None
