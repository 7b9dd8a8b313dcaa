"""A scripted HTTP server on 127.0.0.1 for the oracle tests: the real client libraries talk to it.

Each POST gets the next :class:`Step` of the script (the last one repeats): a status, a body, extra headers and an
optional delay (a hung server). A script entry may also be a function ``f(k, request) -> Step`` of the request's
index and its record (``{"path", "headers", "json", "t"}``), for a judge that answers from the prompt. Every
request is recorded with its arrival time ``t`` (``time.monotonic()``). The server is bounded: it answers at most
``max_requests`` requests and shuts down after ``max_seconds``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Step:
    status: int = 200
    body: Any = None  # dict (sent as JSON), str or bytes (sent as is)
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class ScriptedServer:
    """``with ScriptedServer([Step(...), ...]) as srv: ... srv.url ... srv.count ... srv.requests``."""

    def __init__(self, script: list[Step | Callable[[int, dict], Step]], *, max_requests: int = 64,
                 max_seconds: float = 60.0) -> None:
        self.script, self.max_requests, self.max_seconds = list(script), max_requests, max_seconds
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                with server._lock:
                    k = len(server.requests)
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = raw.decode("utf-8", "replace")
                    request = {"path": self.path, "headers": dict(self.headers), "json": body, "t": time.monotonic()}
                    server.requests.append(request)
                if k >= server.max_requests:
                    step = Step(500, {"error": {"code": 500, "message": "test server request limit"}})
                else:
                    step = server.script[min(k, len(server.script) - 1)]
                    step = step(k, request) if callable(step) else step
                if step.delay_s:
                    time.sleep(step.delay_s)
                payload = step.body if isinstance(step.body, bytes) else (
                    step.body.encode() if isinstance(step.body, str) else json.dumps(step.body).encode())
                try:
                    self.send_response(step.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in step.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # do not wait for a handler still sleeping (timeout tests)
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def __enter__(self) -> ScriptedServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.max_seconds, self._httpd.shutdown)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()


def gemini_reply(text: str) -> dict:
    """A generateContent response whose model text is ``text`` (the JSON shape of the Gemini REST API)."""
    return {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP",
                            "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
            "modelVersion": "test-model"}


def gemini_error(code: int, status: str, message: str, details: list | None = None) -> dict:
    """A Google API error body."""
    return {"error": {"code": code, "message": message, "status": status, "details": details or []}}


def daily_quota_error() -> dict:
    """A 429 body for an exhausted per-day quota (as the Gemini API sends it)."""
    return gemini_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                         "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "quotaValue": "250"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "39s"}])


def minute_quota_error() -> dict:
    """A 429 body for a per-minute rate limit (retryable)."""
    return gemini_error(429, "RESOURCE_EXHAUSTED", "Rate limit.", [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0s"}])


def user_prompt(request: dict) -> str:
    """The user message of a recorded judge request, Gemini (``contents``) or OpenAI-style (``messages``)."""
    body = request["json"]
    if "contents" in body:
        return body["contents"][0]["parts"][0]["text"]
    return next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")


def solution_steps(request: dict) -> list[str]:
    """The numbered steps of the response a judge request asks about (the ``### Your task`` block), unnumbered."""
    block = user_prompt(request).rsplit("### Your task", 1)[1].split("<solution>\n", 1)[1]
    block = block.rsplit("\n</solution>", 1)[0]
    return [re.sub(r"^\[\d+\] ", "", line) for line in block.splitlines()]


def chat_reply(text: str) -> dict:
    """An OpenAI-style chat completion whose message content is ``text``."""
    return {"id": "x", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


# One wrong answer used across the oracle tests: step 1 ("48 - 24 = 25") is the first error.
QUESTION = ("Ava has 48 stickers. She gives half of them to Ben and then buys 5 more. "
            "How many stickers does Ava have now?")
REFERENCE = "48 / 2 = <<48/2=24>>24\n24 + 5 = <<24+5=29>>29\n#### 29"
RESPONSE = ("Ava gives away 48 / 2 = <<48/2=24>>24 stickers.\nShe keeps 48 - 24 = 25 stickers.\n"
            "After buying more she has 25 + 5 = 30 stickers.\n#### 30")
GOOD_REPLY = json.dumps({"step": 1, "quote": "48 - 24 = 25", "reason": "48 - 24 is 24, not 25"})
