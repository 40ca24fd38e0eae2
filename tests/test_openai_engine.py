"""The OpenAI-compatible engine against real HTTP servers on loopback: a real
OpenAI-compatible server (`transformers serve`) and a scripted peer for the
failure paths (rate limits, server errors, refusals)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ray_distill.engines import GenerationRequest, SamplingParams
from ray_distill.engines.openai import EngineRequestError, OpenAIEngine

CHAT = [{"role": "user", "content": "Name a colour."}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_tiny_model(tiny_model):
    port = _free_port()
    cli = Path(sys.executable).with_name("transformers")
    proc = subprocess.Popen([str(cli), "serve", str(tiny_model), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("transformers serve did not come up")
        yield f"{base}/v1", str(tiny_model)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_a_real_openai_compatible_server_matches_the_local_engine(served_tiny_model):
    from ray_distill.engines.hf import HFEngine

    base_url, model = served_tiny_model
    engine = OpenAIEngine(model, base_url=base_url, api_key_env=None)
    request = GenerationRequest(CHAT, SamplingParams(max_new_tokens=8))
    remote = asyncio.run(engine.generate(request))
    local = HFEngine(model).generate_batch([request])[0]
    assert remote.texts == local.texts
    assert remote.samples[0].finish_reason in ("length", "eos") and remote.prompt_tokens > 0
    # this server ignores `n`: the engine asks again until it has every sample
    several = asyncio.run(engine.generate(GenerationRequest(CHAT, SamplingParams(n=3, max_new_tokens=4))))
    assert len(several.samples) == 3


class _Script(BaseHTTPRequestHandler):
    """Answers POSTs from a queue of (status, headers, body); records requests."""

    replies: list = []
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, dict(self.headers), body))
        status, headers, payload = type(self).replies.pop(0)
        data = json.dumps(payload).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


OK = (200, {}, {"choices": [{"index": 0, "message": {"content": "blue"}, "finish_reason": "stop", "stop_reason": "\n"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1}})


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Script)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Script.replies, _Script.seen = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _Script
    server.shutdown()


def test_rate_limits_and_server_errors_are_retried_with_backoff(scripted, monkeypatch):
    base_url, script = scripted
    monkeypatch.setenv("RAY_DISTILL_TEST_KEY", "sk-test")
    script.replies = [(429, {"Retry-After": "0"}, {"error": "slow down"}), (503, {}, {"error": "busy"}), OK]
    engine = OpenAIEngine("teacher", base_url=base_url, api_key_env="RAY_DISTILL_TEST_KEY", backoff_seconds=0.01)
    request = GenerationRequest(CHAT + [{"role": "assistant", "content": "Thought: it is"}],
                                SamplingParams(max_new_tokens=3, stop=("\n",), seed=7), continue_final_message=True)
    completion = asyncio.run(engine.generate(request))
    assert completion.texts == ["blue"] and completion.samples[0].finish_reason == "stop"
    assert engine.retries == 2 and len(script.seen) == 3
    path, headers, body = script.seen[-1]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test"
    assert body["stop"] == ["\n"] and body["seed"] == 7 and body["max_tokens"] == 3 and body["model"] == "teacher"
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


def test_refusals_fail_at_once_and_persistent_errors_give_up(scripted):
    base_url, script = scripted
    engine = OpenAIEngine("teacher", base_url=base_url, api_key_env=None, max_retries=2, backoff_seconds=0.01)
    script.replies = [(400, {}, {"error": "bad request"})]
    with pytest.raises(EngineRequestError, match="refused the request: HTTP 400"):
        asyncio.run(engine.generate(GenerationRequest(CHAT)))
    script.replies = [(500, {}, {"error": "boom"})] * 3
    with pytest.raises(EngineRequestError, match="giving up after 3 attempts: HTTP 500"):
        asyncio.run(engine.generate(GenerationRequest(CHAT)))
    assert "Authorization" not in script.seen[-1][1]


def test_an_unreachable_server_is_an_error_not_a_hang():
    engine = OpenAIEngine("teacher", base_url=f"http://127.0.0.1:{_free_port()}/v1", api_key_env=None,
                          max_retries=1, backoff_seconds=0.01, timeout_seconds=5)
    start = time.monotonic()
    with pytest.raises(EngineRequestError, match="giving up after 2 attempts: ConnectError"):
        asyncio.run(engine.generate(GenerationRequest(CHAT)))
    assert time.monotonic() - start < 10
