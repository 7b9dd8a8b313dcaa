"""A local (or any) OpenAI-compatible server as the judge: vLLM, ollama, llama.cpp, LM Studio, ...

``POST {base_url}/chat/completions`` with the system and user messages, temperature 0 and a JSON response format:
``"json_schema"`` (vLLM, recent ollama; the reply schema is enforced), ``"json_object"`` (any JSON) or ``None``
(plain text; :func:`parse_reply` still finds the object). ``base_url`` may end in ``/v1`` or not. An optional key
(``api_key=`` or the ``api_key_env`` variable) is sent as a bearer token and redacted from every message.
Faults are classified by :func:`classify_http` (with the response headers, so a ``Retry-After`` on a 429 / 503
sets the wait); the runner retries 408 / 429 / 5xx, timeouts and refused connections with backoff, each attempt
given only the time left to its deadlines. A body far larger than ``config.max_reply_chars`` fails with cause
``reply_too_large`` before it is decoded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..validation import check_choice, check_int
from .cache import ReplyCache
from .prompt import FewShot, OraclePrompt, PromptedOracle
from .remote import Secret, classify_http, redact, resolve_api_key
from .runner import BackendError, Oracle, OracleConfig
from .verdict import REPLY_SCHEMA

__all__ = ["OpenAICompatibleOracle", "RESPONSE_FORMATS"]

RESPONSE_FORMATS = ("json_schema", "json_object", None)


class OpenAICompatibleOracle(PromptedOracle):
    """A judge behind ``/v1/chat/completions`` (see the module docstring)."""

    backend = "openai_compat"

    def __init__(self, model: str, base_url: str = "http://127.0.0.1:8000/v1", *, api_key: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", response_format: str | None = "json_schema",
                 temperature: float = 0.0, max_tokens: int = 512, fewshot: FewShot | str | os.PathLike | None = None,
                 config: OracleConfig | None = None, cache: ReplyCache | str | Path | None = None,
                 fallback: Oracle | None = None) -> None:
        super().__init__(fewshot=fewshot, config=config, cache=cache, fallback=fallback)
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model={model!r}; allowed: the model name the server serves, e.g. 'qwen2.5:7b'")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url={base_url!r}; allowed: an http(s) URL such as 'http://127.0.0.1:8000/v1'")
        check_choice("response_format", response_format, RESPONSE_FORMATS)
        check_int("max_tokens", max_tokens, 1, None)
        import httpx

        self._model = model
        base = base_url.rstrip("/")
        self.url = (base if base.endswith("/v1") else base + "/v1") + "/chat/completions"
        self.response_format, self.temperature, self.max_tokens = response_format, float(temperature), max_tokens
        self._key = Secret(api_key) if api_key is not None else resolve_api_key((api_key_env,))
        headers = {"Authorization": f"Bearer {self._key.reveal()}"} if self._key is not None else {}
        self._http = httpx.Client(headers=headers, timeout=self.config.timeout_s)

    @property
    def model(self) -> str:
        return self._model

    def _redact(self, text: str) -> str:
        return redact(text, self._key)

    def _body(self, prompt: OraclePrompt) -> dict:
        body = {"model": self._model, "temperature": self.temperature, "max_tokens": self.max_tokens,
                "messages": [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}]}
        if self.response_format == "json_schema":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "verdict", "schema": REPLY_SCHEMA, "strict": True}}
        elif self.response_format == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    def _generate(self, prompt: OraclePrompt, timeout_s: float) -> str:
        import httpx

        try:
            r = self._http.post(self.url, json=self._body(prompt), timeout=timeout_s)
        except httpx.TimeoutException as e:
            raise BackendError("timeout", self._redact(str(e)), retryable=True) from None
        except httpx.TransportError as e:
            raise BackendError("connection_error", self._redact(f"{type(e).__name__}: {e}"), retryable=True) from None
        if r.status_code >= 400:
            raise classify_http(r.status_code, r.text, self._redact(r.text[:300]), headers=r.headers)
        if len(r.content) > 4 * self.config.max_reply_chars + 65536:  # the envelope cannot hold an acceptable reply
            raise BackendError("reply_too_large", f"{len(r.content)} bytes in the HTTP body")
        try:
            content = r.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise BackendError("bad_response", f"not a chat completion: {self._redact(r.text[:200])!r}") from None
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else json.dumps(content)
